"""The decode loop shared by backends that run a whole decoder step per call (ONNX, Core ML).

Such a backend keeps a single-sequence KV cache and needs only two format-specific pieces: ``_forward``
(logits for some tokens appended to the cache) and, when the cache is not just a length, ``_rewind_to``.
Prefix reuse, chunked prefill with abort checks, sampling with log-probabilities, and continuation scoring
are the same for every such format and live here once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from edge_runtime import sampling as sampler
from edge_runtime.backends.base import BackendStats, SamplingParams, ShouldAbort
from edge_runtime.errors import InvalidRequestError
from edge_runtime.prefix import common_prefix_length
from edge_runtime.results import TokenStep


class CachedDecoderBackend:
    """Base of the ONNX and Core ML backends: tokenizer, cache bookkeeping and the decode loop. Each subclass
    declares its ``capabilities``."""

    prefill_chunk_tokens = 256
    ready = True

    def __init__(self, tokenizer, metadata: dict, n_ctx: int, seed: int) -> None:
        self.tokenizer, self.metadata, self.n_ctx = tokenizer, metadata, n_ctx
        self.n_vocab = int(metadata["config"]["vocab_size"])
        self.cached_tokens: list[int] = []
        self.last_logits: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)

    # -- format-specific -------------------------------------------------------------------------------------
    def _forward(self, tokens: list[int]) -> np.ndarray:
        """Logits (one row per token) for ``tokens`` appended after ``self.cached_tokens``."""
        raise NotImplementedError

    def _rewind_to(self, keep: int) -> None:
        """Drops cached tokens after ``keep``; a format that cannot may drop more (down to none)."""
        del self.cached_tokens[keep:]

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
        if len(self.cached_tokens) + len(tokens) > self.n_ctx:
            raise InvalidRequestError(f"{len(self.cached_tokens) + len(tokens):,} tokens do not fit the "
                                      f"context of {self.n_ctx:,}")
        logits = self._forward(tokens)
        self.cached_tokens.extend(tokens)
        self.last_logits = logits[-1]
        return logits

    def prefill(self, prompt_ids: Sequence[int], should_abort: ShouldAbort) -> bool:
        """Brings the cache to ``prompt_ids`` with logits for the last one; False if aborted."""
        if not prompt_ids:
            raise InvalidRequestError("cannot prefill an empty prompt")
        self._rewind_to(min(common_prefix_length(self.cached_tokens, prompt_ids), len(prompt_ids) - 1))
        for start in range(len(self.cached_tokens), len(prompt_ids), self.prefill_chunk_tokens):
            if should_abort():
                return False
            self._decode(list(prompt_ids[start:start + self.prefill_chunk_tokens]))
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

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        """No prefix store (only the live cache is reused): nothing is kept."""
        return 0

    def stats(self) -> BackendStats:
        """No queue (one sequence) and no prefix store: only the engine fields, this process."""
        return BackendStats()

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        self.prefill(prefix_ids, lambda: False)
        first_row, prefix_length = self.last_logits.copy(), len(self.cached_tokens)
        first_normaliser = sampler.log_sum_exp(first_row)
        scores = []
        for continuation in map(list, continuations):
            rest = []
            if len(continuation) > 1:
                rows = self._continuation_rows(continuation[:-1])
                rest = [float(row[token]) - sampler.log_sum_exp(row) for row, token in zip(rows, continuation[1:])]
                self._rewind_to(prefix_length)
                if len(self.cached_tokens) < prefix_length:  # the cache could not rewind: it started afresh
                    self.prefill(prefix_ids, lambda: False)
            scores.append([float(first_row[continuation[0]]) - first_normaliser, *rest])
        self.last_logits = first_row
        return scores

    def _continuation_rows(self, tokens: list[int]) -> np.ndarray:
        """One row of logits per token of ``tokens`` (appended to the cache)."""
        return self._decode(tokens)
