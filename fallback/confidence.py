"""Confidence signals from the local model's own probabilities: pure functions, no model, no I/O.

Two kinds of local answer:
- label scoring (``score_choices``): a distribution over labels; signals are the top probability, the margin
  between the top two, and the entropy. Contextual calibration divides out the label bias the prompt shows on
  a content-free input ("N/A") before the signals are read.
- free generation: per-token log-probabilities; signals are the mean (length-normalised), the minimum, a
  low quantile and the first token's, since a long answer's sum is biased by its length.
- answers with values (``answer_signals``): the same read over the tokens that carry values only (for JSON,
  per field: a grammar forces braces, keys and quotes, and their probabilities say nothing about the values),
  plus each value token's margin over the model's best alternative. The log-probabilities are the model's own,
  read before any grammar masks the distribution (``edge_runtime.sampling.step``), so a forced value the model
  doubted stays doubtful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LABEL_FEATURES = ("max_prob", "margin", "neg_entropy")
GENERATION_FEATURES = ("mean_logprob", "min_logprob", "p10_logprob", "first_logprob")


def normalise(probabilities: Sequence[float]) -> list[float]:
    total = math.fsum(probabilities)
    if total <= 0:
        return [1.0 / len(probabilities)] * len(probabilities)
    return [value / total for value in probabilities]


def contextual_calibrate(probabilities: Sequence[float], content_free: Sequence[float]) -> list[float]:
    """Divides out the label bias measured on a content-free input (Zhao et al., 2021), then renormalises."""
    floor = 1e-9
    return normalise([p / max(bias, floor) for p, bias in zip(probabilities, content_free)])


def entropy(probabilities: Sequence[float]) -> float:
    return -math.fsum(p * math.log(p) for p in probabilities if p > 0)


def label_signals(probabilities: Sequence[float]) -> dict[str, float]:
    """Top probability, margin over the runner-up, and negative entropy normalised to [-1, 0]."""
    ordered = sorted(probabilities, reverse=True)
    runner_up = ordered[1] if len(ordered) > 1 else 0.0
    max_entropy = math.log(len(ordered)) if len(ordered) > 1 else 1.0
    return {"max_prob": ordered[0], "margin": ordered[0] - runner_up,
            "neg_entropy": -entropy(ordered) / max_entropy}


def quantile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def generation_signals(logprobs: Sequence[float]) -> dict[str, float]:
    """Signals of a generated answer's token log-probabilities; an empty answer gets the worst values."""
    if not logprobs:
        return {name: -50.0 for name in GENERATION_FEATURES}
    return {"mean_logprob": math.fsum(logprobs) / len(logprobs), "min_logprob": min(logprobs),
            "p10_logprob": quantile(logprobs, 0.1), "first_logprob": logprobs[0]}


def uncalibrated_confidence(signals: dict[str, float]) -> float:
    """A [0, 1] score without a calibration file: the top label probability, or the geometric-mean token
    probability of a generation."""
    if "max_prob" in signals:
        return signals["max_prob"]
    return math.exp(signals["mean_logprob"])


VALUE_FEATURES = ("value_mean_logprob", "value_min_logprob", "value_first_logprob", "value_sum_logprob",
                  "value_min_margin", "value_first_margin", "value_mean_margin", "field_min_sum", "field_min_first")


def token_margins(chosen: Sequence[float], alternatives: Sequence[Sequence[tuple[int, float]]],
                  token_ids: Sequence[int]) -> list[float]:
    """Each chosen token's log-probability minus that of the best other token the model offered (0 when it
    offered none): small or negative where the model hesitated or a grammar overrode it."""
    margins = []
    for logprob, top, token_id in zip(chosen, alternatives, token_ids):
        others = [value for other, value in top if other != token_id]
        margins.append(logprob - max(others) if others else 0.0)
    return margins


def _field_signals(logprobs: Sequence[float], fields: Sequence[str | None], keys: Sequence[str]) -> dict[str, float]:
    """Per key: the summed and the first log-probability of its value tokens (0 for a value not yet begun),
    and the worst of each over the keys."""
    signals: dict[str, float] = {}
    for key in keys:
        values = [lp for lp, field in zip(logprobs, fields) if field == key]
        signals[f"field_{key}_sum"] = math.fsum(values)
        signals[f"field_{key}_first"] = values[0] if values else 0.0
    sums = [signals[f"field_{key}_sum"] for key in keys]
    firsts = [signals[f"field_{key}_first"] for key in keys]
    signals["field_min_sum"] = min(sums) if sums else 0.0
    signals["field_min_first"] = min(firsts) if firsts else 0.0
    return signals


def answer_signals(logprobs: Sequence[float], margins: Sequence[float] | None = None,
                   fields: Sequence[str | None] | None = None, keys: Sequence[str] = ()) -> dict[str, float]:
    """Signals of a (possibly unfinished) answer: ``generation_signals`` over every token, the same over its
    value tokens (``fields[i]`` is the key token i carries, None for structure; every token counts as a value
    without ``fields``), the value tokens' margins, and per-key field signals for ``keys``.

    Nothing seen yet reads as certain (0), so a running decision before the first value is not pushed to
    escalate; ``n_value_tokens`` tells the calibration how much was seen."""
    margins = list(margins) if margins is not None else [0.0] * len(logprobs)
    fields = list(fields) if fields is not None else ["" for _ in logprobs]
    chosen = [i for i, field in enumerate(fields[:len(logprobs)]) if field is not None]
    values, value_margins = [logprobs[i] for i in chosen], [margins[i] for i in chosen]
    signals = generation_signals(logprobs) | {"n_tokens": float(len(logprobs)), "n_value_tokens": float(len(values))}
    signals.update({
        "value_mean_logprob": math.fsum(values) / len(values) if values else 0.0,
        "value_min_logprob": min(values, default=0.0), "value_first_logprob": values[0] if values else 0.0,
        "value_sum_logprob": math.fsum(values),
        "value_min_margin": min(value_margins, default=0.0),
        "value_first_margin": value_margins[0] if value_margins else 0.0,
        "value_mean_margin": math.fsum(value_margins) / len(value_margins) if value_margins else 0.0})
    signals.update(_field_signals(logprobs, fields, keys))
    return signals
