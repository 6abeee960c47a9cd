"""A source model, whatever it came from: config, weights (loaded on demand), tokenizer and checksum.

``load_source(path, work_dir)`` accepts a Hugging Face folder (config.json + safetensors + tokenizer.json) or
a ``.gguf`` file; every target reads the same ``SourceModel``. Weights are float32 torch tensors named as in
``converters.model`` and are loaded only when a target needs them (a GGUF-to-GGUF re-quantization does not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.errors import SourceError
from converters.model_config import ModelConfig
from edge_runtime.checksums import sha256_of  # noqa: F401  (re-exported: hf_source, gguf_source, pipeline)


@dataclass(frozen=True)
class TokenizerInfo:
    """What a runtime needs beside tokenizer.json: special ids and the chat template."""

    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    add_bos: bool
    chat_template: str | None = None


@dataclass
class SourceModel:
    kind: str  # "hf" | "gguf"
    path: Path
    config: ModelConfig
    tokenizer_json: Path
    tokenizer_info: TokenizerInfo
    sha256: str
    load_weights: Callable[[], dict[str, Any]] = field(repr=False)
    _weights: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def gguf_path(self) -> Path | None:
        return self.path if self.kind == "gguf" else None

    def weights(self) -> dict[str, Any]:
        """float32 torch tensors by ``converters.model`` name; loaded once."""
        if self._weights is None:
            self._weights = self.load_weights()
        return self._weights

    def reference_model(self):
        """The torch decoder with the source weights: the reference every build is gated against."""
        from converters.model import Decoder

        return Decoder.from_weights(self.config, dict(self.weights()))

    def edge_metadata(self) -> dict:
        """The ``edge_model.json`` written next to ONNX and Core ML builds, read by their backends."""
        info = self.tokenizer_info
        return {"config": self.config.to_dict(), "bos_token_id": info.bos_token_id,
                "eos_token_ids": list(info.eos_token_ids), "add_bos": info.add_bos,
                "chat_template": info.chat_template}


def load_source(path: Path, work_dir: Path) -> SourceModel:
    """Reads a HF folder or a GGUF file; ``work_dir`` receives files a GGUF source must generate."""
    path = Path(path)
    if path.is_dir():
        from converters.hf_source import load_hf_folder

        return load_hf_folder(path)
    if path.is_file() and path.suffix == ".gguf":
        from converters.gguf_source import load_gguf_file

        return load_gguf_file(path, work_dir)
    raise SourceError(f"{path}: not a Hugging Face folder or a .gguf file")
