"""Confidence signals from the local model's own probabilities: pure functions, no model, no I/O.

Two kinds of local answer:
- label scoring (``score_choices``): a distribution over labels; signals are the top probability, the margin
  between the top two, and the entropy. Contextual calibration divides out the label bias the prompt shows on
  a content-free input ("N/A") before the signals are read.
- free generation: per-token log-probabilities; signals are the mean (length-normalised), the minimum, a
  low quantile and the first token's, since a long answer's sum is biased by its length.
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
