"""How sure the local model is of an answer, or of its first tokens: the number the policy compares.

Calibrated when a calibrator is loaded (it gets every signal ``confidence.answer_signals`` computes), else
the geometric-mean token probability. For a JSON answer only the value tokens count: the model's doubt is in
the values, not in the punctuation and keys a grammar forces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fallback.local_leg import LocalToken


def answer_confidence(tokens: Sequence[LocalToken], response_format: dict | None = None,
                      calibrator=None, context: dict[str, float] | None = None, whole: bool = True) -> float | None:
    """The confidence of ``tokens`` (a ``whole`` answer or its first tokens); None without tokens, or for first
    tokens a calibrator cannot judge (its class probe needs the whole answer, and it has no fallback).
    ``context``: what a calibrator reads beside the tokens' probabilities (the query text's and the probes')."""
    logprobs = [token.logprob for token in tokens]
    if not logprobs:
        return None
    if calibrator is not None:
        signals = token_signals(tokens, response_format) | (context or {})
        return calibrator.predict(signals) if whole or calibrator.reads(signals) else None
    fields, _ = _json_fields(response_format, tokens)
    if fields is not None:
        logprobs = [logprob for logprob, field in zip(logprobs, fields) if field is not None] or logprobs
    return math.exp(math.fsum(logprobs) / len(logprobs))


def token_signals(tokens: Sequence[LocalToken], response_format: dict | None = None) -> dict[str, float]:
    """Every probability signal a calibrator may read from ``tokens`` (``confidence.answer_signals``)."""
    from fallback.confidence import answer_signals

    fields, keys = _json_fields(response_format, tokens)
    return answer_signals([token.logprob for token in tokens], _margins(tokens), fields, keys)


def _json_fields(response_format: dict | None,
                 tokens: Sequence[LocalToken]) -> tuple[list[str | None] | None, list[str]]:
    """For a JSON answer: which key's value each token carries (None: structure), and the schema's keys."""
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return None, []
    from fallback.structured import token_fields

    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    return token_fields([token.text for token in tokens]), list((schema.get("properties") or {}))


def _margins(tokens: Sequence[LocalToken]) -> list[float] | None:
    """Each token's margin over the best alternative the model offered, when alternatives were asked for."""
    if not tokens or not all(token.top for token in tokens):
        return None
    from fallback.confidence import token_margins

    return token_margins([t.logprob for t in tokens], [[(a.token_id, a.logprob) for a in t.top] for t in tokens],
                         [t.token_id for t in tokens])
