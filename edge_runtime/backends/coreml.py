"""Core ML builds (from ``edge-runtime convert --targets coreml``) through coremltools, on macOS only.

A build folder holds ``model.mlpackage`` (a stateful ML program: inputs ``inputIds`` and ``causalMask``,
output ``logits``, states ``keyCache``/``valueCache``), ``tokenizer.json`` and ``edge_model.json``. The KV
cache lives inside the Core ML state; this backend only tracks how many positions of it are valid, so
rewinding to a shared prefix costs nothing (the mask hides positions past the end).

Core ML prediction exists only on macOS: ``load`` raises ``BackendUnavailableError`` elsewhere, before
coremltools (imported lazily) is touched.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

from edge_runtime.backends.base import Capabilities
from edge_runtime.backends.cached_decoder import CachedDecoderBackend
from edge_runtime.backends.json_tokenizer import JsonTokenizer, read_edge_metadata
from edge_runtime.build_folder import COREML_LAYOUT, resolve_build
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, BackendUnavailableError, ModelFileError

PREFILL_CHUNK_TOKENS = 128
MASK_VALUE = np.float16(-3.0e4)


def causal_mask(past_length: int, length: int) -> np.ndarray:
    """(1, 1, T, P+T) additive float16 mask: position P+i sees positions 0..P+i."""
    keys = np.arange(past_length + length)[None, :]
    queries = np.arange(length)[:, None] + past_length
    return np.where(keys <= queries, np.float16(0), MASK_VALUE).astype(np.float16)[None, None]


class CoreMLBackend(CachedDecoderBackend):
    """One Core ML build and its state (the KV cache); rewinding only shortens ``cached_tokens``."""

    format = "coreml"
    prefill_chunk_tokens = PREFILL_CHUNK_TOKENS
    capabilities = Capabilities()  # no grammar, no prefix store, no speculation, one request at a time

    def __init__(self, model, tokenizer: JsonTokenizer, metadata: dict, settings: LoadSettings) -> None:
        super().__init__(tokenizer, metadata, min(settings.n_ctx, int(metadata.get("max_context", 512))),
                         settings.seed)
        self.model = model
        self.state = model.make_state()

    @classmethod
    def load(cls, path: Path, settings: LoadSettings) -> CoreMLBackend:
        if sys.platform != "darwin":
            raise BackendUnavailableError(f"Core ML prediction needs macOS 15 or later; this is {platform.system()}")
        folder, package = resolve_build(path, COREML_LAYOUT)
        metadata = read_edge_metadata(folder)
        try:
            import coremltools as ct
        except ImportError as exc:
            raise BackendUnavailableError("coremltools is not installed (pip install coremltools)") from exc
        try:
            model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit.ALL)
        except Exception as exc:  # Core ML raises plain exceptions for unreadable packages
            raise ModelFileError(package, f"Core ML cannot load it ({exc})") from exc
        return cls(model, JsonTokenizer(folder / "tokenizer.json", metadata), metadata, settings)

    def _forward(self, tokens: list[int]) -> np.ndarray:
        past = len(self.cached_tokens)
        inputs = {"inputIds": np.asarray([tokens], dtype=np.int32), "causalMask": causal_mask(past, len(tokens))}
        try:
            return self.model.predict(inputs, state=self.state)["logits"][0].astype(np.float32)
        except Exception as exc:  # Core ML raises plain exceptions
            raise BackendError(f"Core ML prediction failed on {len(tokens)} tokens: {exc}") from exc

    def close(self) -> None:
        self.model = self.state = None
