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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edge_runtime import sampling as sampler
from edge_runtime.backends.base import SamplingParams, ShouldAbort
from edge_runtime.backends.json_tokenizer import JsonTokenizer, read_edge_metadata
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, BackendUnavailableError, InvalidRequestError, ModelFileError
from edge_runtime.results import TokenStep

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


class OnnxBackend:
    """One ONNX build with a single-sequence numpy KV cache."""

    format = "onnx"

    def __init__(self, session: OnnxDecoderSession, tokenizer: JsonTokenizer, metadata: dict,
                 settings: LoadSettings) -> None:
        self.session, self.tokenizer, self.metadata = session, tokenizer, metadata
        self.n_ctx = min(settings.n_ctx, int(metadata["config"]["context_length"]))
        self.n_vocab = int(metadata["config"]["vocab_size"])
        self.cached_tokens: list[int] = []
        self.past = session.empty_past()
        self.last_logits: np.ndarray | None = None
        self._rng = np.random.default_rng(settings.seed)

    @classmethod
    def load(cls, path: Path, settings: LoadSettings) -> OnnxBackend:
        folder, model = resolve_build(path)
        metadata = read_edge_metadata(folder)
        tokenizer = JsonTokenizer(folder / "tokenizer.json", metadata)
        session = OnnxDecoderSession(model, settings.n_threads or os.cpu_count() or 1)
        return cls(session, tokenizer, metadata, settings)

    # -- vocabulary ----------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self.tokenizer.tokenize(text, add_special)

    def token_piece(self, token_id: int) -> bytes:
        return self.tokenizer.token_piece(token_id)

    def chat_template(self) -> str | None:
        return self.metadata.get("chat_template")

    def special_tokens(self) -> tuple[str, str]:
        eos = min(self.tokenizer.eos_token_ids, default=None)
        return self.tokenizer.text_of(self.tokenizer.bos_token_id), self.tokenizer.text_of(eos)

    # -- KV cache ------------------------------------------------------------------------------------------
    def _rewind_to(self, keep: int) -> None:
        self.past = [array[:, :, :keep] for array in self.past]
        del self.cached_tokens[keep:]

    def _decode(self, tokens: list[int]) -> np.ndarray:
        if len(self.cached_tokens) + len(tokens) > self.n_ctx:
            raise InvalidRequestError(f"{len(self.cached_tokens) + len(tokens):,} tokens do not fit the "
                                      f"context of {self.n_ctx:,}")
        logits, self.past = self.session.forward(tokens, self.past)
        self.cached_tokens.extend(tokens)
        self.last_logits = logits[-1]
        return logits

    def prefill(self, prompt_ids: Sequence[int], should_abort: ShouldAbort) -> bool:
        """Brings the cache to ``prompt_ids`` with logits for the last one; False if aborted."""
        if not prompt_ids:
            raise InvalidRequestError("cannot prefill an empty prompt")
        shared = 0
        for cached, wanted in zip(self.cached_tokens, prompt_ids):
            if cached != wanted:
                break
            shared += 1
        self._rewind_to(min(shared, len(prompt_ids) - 1))
        for start in range(len(self.cached_tokens), len(prompt_ids), PREFILL_CHUNK_TOKENS):
            if should_abort():
                return False
            self._decode(list(prompt_ids[start:start + PREFILL_CHUNK_TOKENS]))
        return True

    # -- generation ----------------------------------------------------------------------------------------
    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        if not self.prefill(prompt_ids, should_abort):
            return
        rng = self._rng if sampling.seed is None else np.random.default_rng(sampling.seed)
        budget = min(sampling.max_tokens, self.n_ctx - len(self.cached_tokens))
        for produced in range(budget):
            token, logprob, top = sampler.step(self.last_logits, sampling, rng)
            end = token in self.tokenizer.eos_token_ids
            yield TokenStep(token, b"" if end else self.token_piece(token), logprob, top, end)
            if end or produced == budget - 1 or should_abort():
                return
            self._decode([token])

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        self.prefill(prefix_ids, lambda: False)
        first_row, prefix_length = self.last_logits.copy(), len(self.cached_tokens)
        first_normaliser = sampler.log_sum_exp(first_row)
        scores = []
        for continuation in continuations:
            continuation = list(continuation)
            rest = []
            if len(continuation) > 1:
                rows = self._decode(continuation[:-1])
                rest = [float(row[token]) - sampler.log_sum_exp(row) for row, token in zip(rows, continuation[1:])]
                self._rewind_to(prefix_length)
            scores.append([float(first_row[continuation[0]]) - first_normaliser, *rest])
        self.last_logits = first_row
        return scores

    def close(self) -> None:
        self.session.close()
        self.past, self.cached_tokens = [], []
