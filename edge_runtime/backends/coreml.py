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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edge_runtime import sampling as sampler
from edge_runtime.backends.base import SamplingParams, ShouldAbort
from edge_runtime.backends.json_tokenizer import JsonTokenizer, read_edge_metadata
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, BackendUnavailableError, InvalidRequestError, ModelFileError
from edge_runtime.results import TokenStep

PACKAGE = "model.mlpackage"
PREFILL_CHUNK_TOKENS = 128
MASK_VALUE = np.float16(-3.0e4)


def resolve_build(path: Path) -> tuple[Path, Path]:
    """(build folder, .mlpackage) for a folder or a .mlpackage path; ``ModelFileError`` if missing."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file or folder")
    package = path if path.suffix == ".mlpackage" else path / PACKAGE
    if not (package / "Manifest.json").is_file():
        raise ModelFileError(package, "not a Core ML package (no Manifest.json)")
    for name in ("tokenizer.json", "edge_model.json"):
        if not (package.parent / name).is_file():
            raise ModelFileError(package.parent / name, "missing from the Core ML build folder")
    return package.parent, package


def causal_mask(past_length: int, length: int) -> np.ndarray:
    """(1, 1, T, P+T) additive float16 mask: position P+i sees positions 0..P+i."""
    keys = np.arange(past_length + length)[None, :]
    queries = np.arange(length)[:, None] + past_length
    return np.where(keys <= queries, np.float16(0), MASK_VALUE).astype(np.float16)[None, None]


class CoreMLBackend:
    """One Core ML build and its state (the KV cache)."""

    format = "coreml"

    def __init__(self, model, tokenizer: JsonTokenizer, metadata: dict, settings: LoadSettings) -> None:
        self.model, self.tokenizer, self.metadata = model, tokenizer, metadata
        self.n_ctx = min(settings.n_ctx, int(metadata.get("max_context", 512)))
        self.n_vocab = int(metadata["config"]["vocab_size"])
        self.state = model.make_state()
        self.cached_tokens: list[int] = []
        self.last_logits: np.ndarray | None = None
        self._rng = np.random.default_rng(settings.seed)

    @classmethod
    def load(cls, path: Path, settings: LoadSettings) -> CoreMLBackend:
        if sys.platform != "darwin":
            raise BackendUnavailableError(f"Core ML prediction needs macOS 15 or later; this is {platform.system()}")
        folder, package = resolve_build(path)
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
    def _decode(self, tokens: list[int]) -> np.ndarray:
        past = len(self.cached_tokens)
        if past + len(tokens) > self.n_ctx:
            raise InvalidRequestError(f"{past + len(tokens):,} tokens do not fit the context of {self.n_ctx:,}")
        inputs = {"inputIds": np.asarray([tokens], dtype=np.int32), "causalMask": causal_mask(past, len(tokens))}
        try:
            logits = self.model.predict(inputs, state=self.state)["logits"][0].astype(np.float32)
        except Exception as exc:  # Core ML raises plain exceptions
            raise BackendError(f"Core ML prediction failed on {len(tokens)} tokens: {exc}") from exc
        self.cached_tokens.extend(tokens)
        self.last_logits = logits[-1]
        return logits

    def prefill(self, prompt_ids: Sequence[int], should_abort: ShouldAbort) -> bool:
        if not prompt_ids:
            raise InvalidRequestError("cannot prefill an empty prompt")
        shared = 0
        for cached, wanted in zip(self.cached_tokens, prompt_ids):
            if cached != wanted:
                break
            shared += 1
        del self.cached_tokens[min(shared, len(prompt_ids) - 1):]
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
        for continuation in map(list, continuations):
            rest = []
            if len(continuation) > 1:
                rows = self._decode(continuation[:-1])
                rest = [float(row[t]) - sampler.log_sum_exp(row) for row, t in zip(rows, continuation[1:])]
                del self.cached_tokens[prefix_length:]
            scores.append([float(first_row[continuation[0]]) - first_normaliser, *rest])
        self.last_logits = first_row
        return scores

    def close(self) -> None:
        self.model = self.state = None
