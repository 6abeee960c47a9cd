"""Grammar-constrained token choice for the llama.cpp backends, at the cost of a few dozen candidates a step.

llama.cpp's grammar sampler checks candidates against a GBNF grammar. Checking the whole 262,144-token
vocabulary every step would dwarf the decode itself, so the constraint first offers the grammar the most
likely ``CANDIDATES`` tokens and only falls back to the full vocabulary when none of them is allowed. The
token's reported log-probability stays the model's unconstrained one: when the grammar forces unlikely
tokens, confidence drops and the policy can escalate.

An answer must also end inside its token budget: a model that loops inside a JSON string (a digit repeated
until ``max_tokens``) would leave the JSON unclosed and invalid. In the last ``CLOSE_WITHIN`` tokens of the
budget the constraint prefers, among the tokens the grammar allows, those that close something (a quote, a
brace, a bracket), so the answer ends as valid, shorter output; its low probabilities still say how unsure
the model was.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from edge_runtime.backends.llama_bindings import llama_cpp
from edge_runtime.backends.base import SamplingParams
from edge_runtime.errors import BackendError, InvalidRequestError

CANDIDATES = 64
CLOSE_WITHIN = 16  # tokens left of the budget from which closing tokens are preferred (a 3-key object: ~12)
CLOSERS = frozenset(b'"}]')  # a closing token is made of these, commas and spaces only, and has one of them
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class GrammarConstraint:
    """One request's grammar state; ``choose`` picks an allowed token, ``accept`` advances the grammar."""

    def __init__(self, vocab, grammar: str, closers: Callable[[], np.ndarray] | None = None) -> None:
        self.sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not self.sampler:
            raise InvalidRequestError("the grammar could not be parsed")
        self.closers, self.accepted = closers, 0  # closers: the vocabulary's closing tokens, asked for when needed

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
        if self.closers is not None and sampling.max_tokens - self.accepted <= CLOSE_WITHIN:
            closing = self._allowed(self.closers(), logits)
            if len(closing):
                return int(closing[np.argmax(logits[closing])])
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
        self.accepted += 1

    def close(self) -> None:
        if self.sampler:
            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None


def _closes(piece: bytes) -> bool:
    """``"``, ``"}``, ``",``, ``]}`` and the like: punctuation that ends a string, object or array (an escaped
    quote or a token that also opens something does not)."""
    text = piece.strip()
    return bool(text) and text[0] in CLOSERS and all(byte in CLOSERS or byte in b", " for byte in text)


def closing_tokens(model) -> np.ndarray:
    """The ids of ``model``'s (a ``NativeModel``) tokens that only close a string, object or array: read once
    per model, the first time an answer nears its budget (about 0.3 s for a 262k vocabulary)."""
    found = getattr(model, "_closing_tokens", None)
    if found is None:
        pieces = (model.piece(token) for token in range(model.n_vocab))
        found = np.array([token for token, piece in enumerate(pieces) if _closes(piece)], dtype=np.int32)
        model._closing_tokens = found
    return found
