"""ONNX builds (from ``edge-runtime convert --targets onnx``) through onnxruntime-genai or onnxruntime, without torch.

Two layouts load here:

* a GenAI folder (``genai_config.json``, ``model.onnx`` + ``.data``, tokenizer files; what the converter's
  ``int4``/``int8``/``fp32`` presets write): run by ``onnxruntime-genai`` (``backends/onnx_genai.py``) when it
  is installed; otherwise by plain onnxruntime below, feeding the ``attention_mask`` input, unless the graph
  keeps a sliding-window cache only GenAI manages (Gemma 3), which then raises ``BackendUnavailableError``;
* our explicit-KV layout (``portable-fp32`` and ``int8-dynamic`` presets, and builds made before GenAI
  folders): ``model.onnx`` taking ``input_ids`` (1, T) and ``past_key_values.{i}.key|value``
  (1, kv_heads, P, head_dim), returning ``logits`` and ``present.{i}.key|value``; ``tokenizer.json`` and
  ``edge_model.json`` beside it.

On the plain onnxruntime path the cache lives here as numpy arrays: a request that shares a prefix with the
previous one keeps that part (a slice, no copy). Execution providers come from ``backends/onnx_providers.py``.

Two tiers, as in the llama.cpp backend: ``OnnxDecoderSession`` owns the onnxruntime session and runs one
forward step; ``OnnxBackend`` adds the tokenizer, the cache and the decode loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_runtime.backends.base import Capabilities
from edge_runtime.backends.cached_decoder import CachedDecoderBackend
from edge_runtime.backends.json_tokenizer import JsonTokenizer
from edge_runtime.backends.onnx_genai import genai_available, read_metadata
from edge_runtime.backends.onnx_providers import choose_ort_providers
from edge_runtime.build_folder import is_genai_folder, onnx_layout, resolve_build
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, BackendUnavailableError, ModelFileError

PREFILL_CHUNK_TOKENS = 256
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def resolve_onnx_build(path: Path) -> tuple[Path, Path]:
    """(build folder, .onnx file) for a folder or a .onnx path; ``ModelFileError`` if either is missing."""
    path = Path(path)
    return resolve_build(path, onnx_layout(path if path.is_dir() else path.parent))


class OnnxDecoderSession:
    """Owns one onnxruntime session of a KV-cache decoder graph."""

    def __init__(self, model_path: Path, n_threads: int) -> None:
        try:
            import onnxruntime as ort
            from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
        except ImportError as exc:
            raise BackendUnavailableError("onnxruntime is not installed (pip install 'edge-runtime[onnx]')") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        providers = choose_ort_providers(ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except (ort_state.Fail, ort_state.InvalidProtobuf, ort_state.InvalidGraph, ort_state.NoSuchFile,
                RuntimeError) as exc:
            raise ModelFileError(model_path, f"onnxruntime cannot load it ({str(exc).splitlines()[0]})") from exc
        self._errors = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException)
        self._describe_inputs(model_path)

    def _describe_inputs(self, model_path: Path) -> None:
        inputs = self.session.get_inputs()
        names = {item.name for item in inputs}
        self.past_names = [item.name for item in inputs if item.name.startswith("past_key_values.")]
        if not self.past_names or "input_ids" not in names:
            raise ModelFileError(model_path, "not a KV-cache decoder (needs input_ids and past_key_values.*)")
        first = next(item for item in inputs if item.name == self.past_names[0])
        if any("sliding" in str(dim) for item in inputs if item.name in self.past_names for dim in item.shape):
            raise BackendUnavailableError(f"{model_path.parent}: its sliding-window KV cache is managed by onnxruntime-"
                                          "genai, which is not installed (pip install 'edge-runtime[onnx]')")
        self.kv_heads = int(first.shape[1])
        self.head_dim = first.shape[3] if isinstance(first.shape[3], int) else None  # GenAI: symbolic
        self.cache_dtype = _ORT_TYPES.get(first.type, np.float32)
        self.takes_attention_mask = "attention_mask" in names  # GenAI graphs: (1, P+T) ones
        # presents in the order of the pasts they replace (GenAI graphs list keys, then values)
        self.output_names = ["logits", *(f"present{name[len('past_key_values'):]}" for name in self.past_names)]

    def empty_past(self, head_dim: int | None = None) -> list[np.ndarray]:
        dim = self.head_dim or head_dim
        return [np.zeros((1, self.kv_heads, 0, dim), dtype=self.cache_dtype) for _ in self.past_names]

    def forward(self, token_ids: Sequence[int], past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits (T, vocab) as float32 and the new cache, P+T long."""
        feeds = {"input_ids": np.asarray([token_ids], dtype=np.int64), **dict(zip(self.past_names, past))}
        if self.takes_attention_mask:
            feeds["attention_mask"] = np.ones((1, past[0].shape[2] + len(token_ids)), dtype=np.int64)
        try:
            logits, *presents = self.session.run(self.output_names, feeds)
        except self._errors as exc:
            raise BackendError(f"onnxruntime failed on {len(token_ids)} tokens: {exc}") from exc
        return logits[0].astype(np.float32, copy=False), presents

    def close(self) -> None:
        self.session = None


class OnnxBackend(CachedDecoderBackend):
    """One ONNX build with a single-sequence numpy KV cache."""

    format = "onnx"
    prefill_chunk_tokens = PREFILL_CHUNK_TOKENS
    capabilities = Capabilities()  # no grammar, no prefix store, no speculation, one request at a time

    def __init__(self, session: OnnxDecoderSession, tokenizer: JsonTokenizer, metadata: dict,
                 settings: LoadSettings) -> None:
        super().__init__(tokenizer, metadata, min(settings.n_ctx, int(metadata["config"]["context_length"])),
                         settings.seed)
        self.session, self.settings = session, settings
        self.past = session.empty_past(metadata["config"].get("head_dim"))

    @property
    def execution_provider(self) -> str:
        return self.session.session.get_providers()[0]

    @classmethod
    def load(cls, path: Path, settings: LoadSettings):
        """An ``OnnxGenaiBackend`` for a GenAI folder when onnxruntime-genai is installed, else this class."""
        folder, model = resolve_onnx_build(path)
        if is_genai_folder(folder) and genai_available():
            from edge_runtime.backends.onnx_genai import OnnxGenaiBackend

            return OnnxGenaiBackend.load(folder, settings)
        metadata = read_metadata(folder)
        tokenizer = JsonTokenizer(folder / "tokenizer.json", metadata)
        session = OnnxDecoderSession(model, settings.n_threads or os.cpu_count() or 1)
        return cls(session, tokenizer, metadata, settings)

    def _rewind_to(self, keep: int) -> None:
        self.past = [array[:, :, :keep] for array in self.past]
        del self.cached_tokens[keep:]

    def _forward(self, tokens: list[int]) -> np.ndarray:
        logits, self.past = self.session.forward(tokens, self.past)
        return logits

    def close(self) -> None:
        self.session.close()
        self.past, self.cached_tokens = [], []
