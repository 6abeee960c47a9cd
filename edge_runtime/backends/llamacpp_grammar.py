"""Grammar-constrained token choice for the llama.cpp backends, at the cost of a few dozen candidates a step.

llama.cpp's grammar sampler checks candidates against a GBNF grammar. Checking the whole 262,144-token
vocabulary every step would dwarf the decode itself, so the constraint first offers the grammar the most
likely ``CANDIDATES`` tokens and only falls back to the full vocabulary when none of them is allowed. The
token's reported log-probability stays the model's unconstrained one: when the grammar forces unlikely
tokens, confidence drops and the policy can escalate.
"""

from __future__ import annotations

import ctypes

import numpy as np

from edge_runtime.backends.llama_bindings import llama_cpp
from edge_runtime.backends.base import SamplingParams
from edge_runtime.errors import BackendError, InvalidRequestError

CANDIDATES = 64
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class GrammarConstraint:
    """One request's grammar state; ``choose`` picks an allowed token, ``accept`` advances the grammar."""

    def __init__(self, vocab, grammar: str) -> None:
        self.sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not self.sampler:
            raise InvalidRequestError("the grammar could not be parsed")

    def _allowed(self, token_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The ids among ``token_ids`` that the grammar allows next."""
        data = np.zeros(len(token_ids), dtype=_TOKEN_DATA)
        data["id"], data["logit"] = token_ids, logits[token_ids]
        array = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=len(data), selected=-1,
            sorted=False)
        llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(array))
        return data["id"][np.isfinite(data["logit"])]

    def choose(self, logits: np.ndarray, sampling: SamplingParams, rng: np.random.Generator) -> int:
        top = np.argpartition(logits, -CANDIDATES)[-CANDIDATES:]
        allowed = self._allowed(top, logits)
        if not len(allowed):
            allowed = self._allowed(np.arange(len(logits), dtype=np.int32), logits)
        if not len(allowed):
            raise BackendError("the grammar allows no token")
        if sampling.temperature == 0.0:
            return int(allowed[np.argmax(logits[allowed])])
        scaled = logits[allowed].astype(np.float64) / sampling.temperature
        weights = np.exp(scaled - scaled.max())
        return int(allowed[rng.choice(len(allowed), p=weights / weights.sum())])

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.sampler, token)

    def close(self) -> None:
        if self.sampler:
            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None
