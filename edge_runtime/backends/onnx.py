"""ONNX decoder builds (from ``edge-runtime convert --targets onnx``) through onnxruntime, without torch.

A build folder holds ``model.onnx`` (+ ``model.onnx.data``), ``tokenizer.json`` and ``edge_model.json``. The
graph takes ``input_ids`` (1, T) and ``past_key_values.{i}.key|value`` (1, kv_heads, P, head_dim) and returns
``logits`` (1, T, vocab) and ``present.{i}.key|value`` (1, kv_heads, P+T, head_dim). The cache lives here as
numpy arrays: a request that shares a prefix with the previous one keeps that part (a slice, no copy).

Two tiers, as in the llama.cpp backend: ``OnnxDecoderSession`` owns the onnxruntime session and runs one
forward step; ``OnnxBackend`` adds the tokenizer, the cache and the decode loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_runtime.backends.cached_decoder import CachedDecoderBackend
from edge_runtime.backends.json_tokenizer import JsonTokenizer, read_edge_metadata
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, BackendUnavailableError, ModelFileError

PREFILL_CHUNK_TOKENS = 256
MODEL_FILE = "model.onnx"
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def resolve_build(path: Path) -> tuple[Path, Path]:
    """(build folder, .onnx file) for a folder or a .onnx path; ``ModelFileError`` if either is missing."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file or folder")
    model = path / MODEL_FILE if path.is_dir() else path
    if not model.is_file():
        raise ModelFileError(model, "no ONNX model in the build folder")
    if model.stat().st_size == 0:
        raise ModelFileError(model, "file is empty")
    for name in ("tokenizer.json", "edge_model.json"):
        if not (model.parent / name).is_file():
            raise ModelFileError(model.parent / name, "missing from the ONNX build folder")
    return model.parent, model


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
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except (ort_state.Fail, ort_state.InvalidProtobuf, ort_state.InvalidGraph, ort_state.NoSuchFile,
                RuntimeError) as exc:
            raise ModelFileError(model_path, f"onnxruntime cannot load it ({str(exc).splitlines()[0]})") from exc
        self._errors = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException)
        self._describe_inputs(model_path)

    def _describe_inputs(self, model_path: Path) -> None:
        inputs = self.session.get_inputs()
        self.past_names = [item.name for item in inputs if item.name.startswith("past_key_values.")]
        if not self.past_names or "input_ids" not in {item.name for item in inputs}:
            raise ModelFileError(model_path, "not a KV-cache decoder (needs input_ids and past_key_values.*)")
        first = next(item for item in inputs if item.name == self.past_names[0])
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.cache_dtype = _ORT_TYPES.get(first.type, np.float32)
        self.output_names = [item.name for item in self.session.get_outputs()]

    def empty_past(self) -> list[np.ndarray]:
        return [np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.cache_dtype) for _ in self.past_names]

    def forward(self, token_ids: Sequence[int], past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits (T, vocab) as float32 and the new cache, P+T long."""
        feeds = {"input_ids": np.asarray([token_ids], dtype=np.int64), **dict(zip(self.past_names, past))}
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

    def __init__(self, session: OnnxDecoderSession, tokenizer: JsonTokenizer, metadata: dict,
                 settings: LoadSettings) -> None:
        super().__init__(tokenizer, metadata, min(settings.n_ctx, int(metadata["config"]["context_length"])),
                         settings.seed)
        self.session = session
        self.past = session.empty_past()

    @classmethod
    def load(cls, path: Path, settings: LoadSettings) -> OnnxBackend:
        folder, model = resolve_build(path)
        metadata = read_edge_metadata(folder)
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
