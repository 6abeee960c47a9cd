"""Turns one row of logits into the next token and its log-probability, cheaply, in numpy.

Every backend ends a decode step with a row of logits over the vocabulary (262,144 entries for Gemma 3).
Greedy decoding needs only the argmax and the log-sum-exp; sampling adds temperature, top-k and top-p.
Nothing here allocates more than one temporary row per step.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.backends.base import SamplingParams


# exp(logit) itself stays inside float32 when the peak logit lies in this range (262,144 values of at most e^60
# sum to 3e31, far below float32's 3.4e38, and e^-60 is far above its smallest normal, 1e-38): no shifting pass
UNSHIFTED_PEAK_RANGE = (-60.0, 60.0)


def log_sum_exp(logits: np.ndarray, scratch: np.ndarray | None = None, peak: float | None = None) -> float:
    """``log(sum(exp(logits)))`` without overflow. ``scratch`` (a float32 row as long as ``logits``) saves
    allocating a temporary row per call; ``peak`` saves a pass when the maximum is known.

    With ``scratch`` (the per-token path: 0.17 ms for Gemma 3's 262,144 logits where the plain numpy version takes
    0.30 ms), the exponentials are taken unshifted when the peak allows it and summed by ``einsum``, whose SIMD
    float32 accumulators are 4x faster than ``ndarray.sum`` and as accurate here (relative error near 1e-7 for
    positive values, so a log-probability off by about 1e-7)."""
    peak = float(logits.max()) if peak is None else peak
    if scratch is None:
        return peak + float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))
    low, high = UNSHIFTED_PEAK_RANGE
    if low < peak < high:
        np.exp(logits, out=scratch)
        return float(np.log(np.einsum("i->", scratch)))
    np.subtract(logits, np.float32(peak), out=scratch)
    np.exp(scratch, out=scratch)
    return peak + float(np.log(np.einsum("i->", scratch)))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return logits - np.float32(log_sum_exp(logits))


def top_alternatives(logits: np.ndarray, count: int, normaliser: float) -> tuple[tuple[int, float], ...]:
    """The ``count`` most likely token ids with their log-probabilities, best first."""
    if count <= 0:
        return ()
    candidates = np.argpartition(logits, -count)[-count:]
    ordered = candidates[np.argsort(logits[candidates])[::-1]]
    return tuple((int(token), float(logits[token]) - normaliser) for token in ordered)


def _filtered_probabilities(logits: np.ndarray, sampling: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ids and their renormalised probabilities after temperature, top-k and top-p."""
    keep = min(sampling.top_k or 256, logits.shape[0])
    candidates = np.argpartition(logits, -keep)[-keep:]
    candidates = candidates[np.argsort(logits[candidates])[::-1]]
    scaled = logits[candidates].astype(np.float64) / sampling.temperature
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    if sampling.top_p < 1.0:
        cutoff = int(np.searchsorted(np.cumsum(probabilities), sampling.top_p)) + 1
        candidates, probabilities = candidates[:cutoff], probabilities[:cutoff] / probabilities[:cutoff].sum()
    return candidates, probabilities


def choose_token(logits: np.ndarray, sampling: SamplingParams, rng: np.random.Generator) -> int:
    """Greedy when temperature is 0, else a draw from the filtered, tempered distribution.

    Sampling without ``top_k`` draws from the 256 most likely tokens: the tail beyond them carries
    negligible mass for these models and sorting the whole vocabulary every step would cost more.
    """
    if sampling.temperature == 0.0:
        return int(logits.argmax())
    candidates, probabilities = _filtered_probabilities(logits, sampling)
    return int(candidates[rng.choice(len(candidates), p=probabilities)])


def step(logits: np.ndarray, sampling: SamplingParams, rng: np.random.Generator,
         constraint=None, scratch: np.ndarray | None = None) -> tuple[int, float, tuple[tuple[int, float], ...]]:
    """Chooses the next token: (token id, its log-probability under the model, top alternatives).

    A ``constraint`` (a grammar) picks among the tokens it allows; the log-probability stays the model's.
    ``scratch``: see ``log_sum_exp`` (a batching backend passes one reused row)."""
    token = constraint.choose(logits, sampling, rng) if constraint is not None else choose_token(logits, sampling, rng)
    if constraint is not None:
        constraint.accept(token)
    greedy = constraint is None and sampling.temperature == 0.0  # the chosen token is the peak
    normaliser = log_sum_exp(logits, scratch, float(logits[token]) if greedy else None)
    return token, float(logits[token]) - normaliser, top_alternatives(logits, sampling.top_logprobs, normaliser)
