"""The quality gate: a build must behave like its source model on a fixed set of prompts.

Four numbers, each comparing the build (candidate) with the source weights run in the torch definition
(reference), on the same token ids (the source tokenizer's, so tokenization differences cannot hide):

* ``top1_agreement``: share of prompt positions where both pick the same most likely next token;
* ``mean_kl``: mean KL(reference || candidate) of the next-token distributions over those positions (nats);
* ``greedy_agreement``: share of the reference's N greedy tokens the candidate reproduces before it first
  departs (a free-running check: early divergence costs more than late);
* ``perplexity`` on a short fixed text, and its ratio to the reference's.

A ``Scorer`` is anything with ``logits(ids) -> (T, vocab) array`` and ``greedy(ids, n) -> ids``; each target
module provides one for its builds (llama.cpp, onnxruntime, or a torch simulation of Core ML weights).
Metrics are pure numpy functions below, so they can be tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from converters.manifest import GateResult, GateThresholds

GATE_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Water boils at a temperature of",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are red,",
    "Q: What is 12 plus 7?\nA:",
    "To make a cup of tea, first",
    "The quick brown fox jumps over the",
)
PERPLEXITY_TEXT = (
    "The sun rose slowly over the quiet hills, and the farmers walked out to their fields. Birds sang in "
    "the trees while a light wind moved the tall grass. By noon the air was warm, and children played "
    "near the river until their parents called them home for lunch."
)
DEFAULT_GREEDY_TOKENS = 16


class Scorer(Protocol):
    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits (len(token_ids), vocab) for every position."""

    def greedy(self, token_ids: Sequence[int], count: int) -> list[int]:
        """``count`` greedy tokens after ``token_ids``."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_divergence(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) per row, in nats."""
    ref, cand = log_softmax(reference_logits), log_softmax(candidate_logits)
    return (np.exp(ref) * (ref - cand)).sum(axis=-1)


def perplexity(logits: np.ndarray, token_ids: Sequence[int]) -> float:
    """exp of the mean negative log-likelihood of tokens 1..T-1 given their prefix."""
    logprobs = log_softmax(logits[:-1])
    targets = np.asarray(token_ids[1:])
    return float(np.exp(-logprobs[np.arange(len(targets)), targets].mean()))


def common_prefix(reference: Sequence[int], candidate: Sequence[int]) -> int:
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        if ref != cand:
            return index
    return min(len(reference), len(candidate))


@dataclass
class GateSet:
    """Token ids of the gate's prompts and perplexity text, plus the reference's outputs on them."""

    prompt_ids: list[list[int]]
    text_ids: list[int]
    reference_logits: list[np.ndarray]
    reference_greedy: list[list[int]]
    reference_perplexity: float
    greedy_tokens: int


def prepare_gate_set(reference: Scorer, tokenize, greedy_tokens: int = DEFAULT_GREEDY_TOKENS,
                     prompts: Sequence[str] = GATE_PROMPTS, text: str = PERPLEXITY_TEXT) -> GateSet:
    """Runs the reference once; every build is then compared against these outputs."""
    prompt_ids = [tokenize(prompt) for prompt in prompts]
    text_ids = tokenize(text)
    return GateSet(prompt_ids=prompt_ids, text_ids=text_ids,
                   reference_logits=[reference.logits(ids) for ids in prompt_ids],
                   reference_greedy=[reference.greedy(ids, greedy_tokens) for ids in prompt_ids],
                   reference_perplexity=perplexity(reference.logits(text_ids), text_ids),
                   greedy_tokens=greedy_tokens)


def evaluate(candidate: Scorer, gate_set: GateSet, thresholds: GateThresholds,
             method: str = "runtime", method_note: str = "") -> GateResult:
    top1, kls, greedy = [], [], []
    for ids, ref_logits, ref_greedy in zip(gate_set.prompt_ids, gate_set.reference_logits,
                                           gate_set.reference_greedy):
        cand_logits = candidate.logits(ids)
        top1.extend(ref_logits.argmax(-1) == cand_logits.argmax(-1))
        kls.extend(kl_divergence(ref_logits, cand_logits))
        greedy.append(common_prefix(ref_greedy, candidate.greedy(ids, gate_set.greedy_tokens)) / len(ref_greedy))
    ppl = perplexity(candidate.logits(gate_set.text_ids), gate_set.text_ids)
    result = GateResult(top1_agreement=float(np.mean(top1)), mean_kl=float(np.mean(kls)),
                        greedy_agreement=float(np.mean(greedy)), perplexity=ppl,
                        reference_perplexity=gate_set.reference_perplexity,
                        perplexity_ratio=ppl / gate_set.reference_perplexity, method=method,
                        method_note=method_note, prompts=len(gate_set.prompt_ids),
                        greedy_tokens=gate_set.greedy_tokens, thresholds=thresholds)
    result.failures = failures(result, thresholds)
    return result


def failures(result: GateResult, limits: GateThresholds) -> list[str]:
    """One line per metric on the wrong side of its threshold; empty means accepted."""
    checks = [
        (result.top1_agreement >= limits.min_top1_agreement,
         f"top-1 agreement {result.top1_agreement:.3f} < {limits.min_top1_agreement}"),
        (result.mean_kl <= limits.max_mean_kl, f"mean KL {result.mean_kl:.4f} > {limits.max_mean_kl}"),
        (result.greedy_agreement >= limits.min_greedy_agreement,
         f"greedy agreement {result.greedy_agreement:.3f} < {limits.min_greedy_agreement}"),
        (result.perplexity_ratio <= limits.max_perplexity_ratio,
         f"perplexity ratio {result.perplexity_ratio:.3f} > {limits.max_perplexity_ratio}"),
    ]
    return [message for ok, message in checks if not ok]


class TorchScorer:
    """The torch definition as a scorer: the reference, and the Core ML weight-level simulation."""

    def __init__(self, model) -> None:
        self.model = model

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        from converters.model import full_logits

        return full_logits(self.model, list(token_ids)).numpy()

    def greedy(self, token_ids: Sequence[int], count: int) -> list[int]:
        from converters.model import greedy_tokens

        return greedy_tokens(self.model, list(token_ids), count)
