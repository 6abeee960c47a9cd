"""Draft-free speculative decoding by prompt lookup: guess the next tokens by finding the current n-gram earlier
in the context, then verify the guesses in one batch, only when that is expected to pay on this machine.

Extraction, rewriting and quoting copy spans of the input, so the tokens that followed the last time this
n-gram appeared are often the tokens that come next. Greedy output is unchanged: a guess is kept only when it
equals the model's own argmax at that position.

Whether verifying k guesses pays depends on the hardware. On a memory-bound device a batch of k + 1 positions
costs little more than one decode step; on a compute-bound one (measured on a 2-core AVX2 VM with a 262k-token
vocabulary: 17.5 ms for one step, +~12 ms per extra verified position) it costs nearly k + 1 steps, and only
near-certain guesses pay. ``DraftPolicy`` therefore measures both costs as decoding goes (``DecodeCosts``, kept
per backend) and estimates how often this request's guesses are right, also from guesses it did not verify
(a "shadow" draft is compared with the tokens plain decoding then produced, at no cost). It drafts k tokens
only when the expected tokens per verification, 1 + p + ... + p^k, over the verification's cost beats plain
decoding by a margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NGRAM_SIZES = (3, 2)


class PromptLookup:
    """An index from n-grams of the context to where they last ended, and drafts read from it."""

    def __init__(self, tokens: Sequence[int], max_draft: int = 6) -> None:
        self.tokens: list[int] = []
        self.max_draft = max_draft
        self._last_end: dict[tuple[int, ...], int] = {}
        self._previous_end: dict[int, int] = {}
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """Adds a token and remembers, per n-gram size, where the n-gram now ending last occurred before."""
        self.tokens.append(token)
        end = len(self.tokens) - 1
        for size in NGRAM_SIZES:
            if end + 1 < size:
                continue
            key = tuple(self.tokens[end + 1 - size:])
            previous = self._last_end.get(key)
            self._last_end[key] = end
            if previous is not None:
                self._previous_end[size] = previous
            else:
                self._previous_end.pop(size, None)

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` guessed tokens: what followed the longest n-gram's previous occurrence."""
        for size in NGRAM_SIZES:
            previous = self._previous_end.get(size)
            if previous is not None:
                return self.tokens[previous + 1:previous + 1 + min(limit, self.max_draft)]
        return []


def _blend(old: float | None, new: float, weight: float) -> float:
    return new if old is None else old + weight * (new - old)


@dataclass
class DecodeCosts:
    """Moving averages of one plain decode step and of each extra position a verification batch adds.

    A verification cost older than ``stale_after`` plain steps is forgotten, so a measurement taken while the
    machine was busy does not switch drafting off for good."""

    step_s: float | None = None
    extra_position_s: float | None = None
    weight: float = 0.1
    stale_after: int = 4096
    steps_since_verify: int = 0

    def observe_step(self, seconds: float) -> None:
        self.step_s = _blend(self.step_s, seconds, self.weight)
        self.steps_since_verify += 1
        if self.steps_since_verify > self.stale_after:
            self.extra_position_s, self.steps_since_verify = None, 0

    def observe_verify(self, positions: int, seconds: float) -> None:
        self.steps_since_verify = 0
        if self.step_s is None or positions < 2:
            return
        extra = max(0.0, seconds - self.step_s) / (positions - 1)
        self.extra_position_s = _blend(self.extra_position_s, extra, 0.3)


@dataclass
class DraftStats:
    proposed: int = 0
    accepted: int = 0
    verifications: int = 0
    shadow_guesses: int = 0
    shadow_hits: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


class DraftPolicy:
    """How many guesses to verify next (0: decode plainly), from measured costs and observed acceptance."""

    def __init__(self, costs: DecodeCosts, *, max_draft: int = 6, prior_acceptance: float = 0.5,
                 margin: float = 1.05, optimistic_extra: float = 0.1) -> None:
        self.costs, self.max_draft, self.margin = costs, max_draft, margin
        self.optimistic_extra = optimistic_extra  # extra cost per position assumed before any is measured
        self.acceptance = prior_acceptance  # probability that a guess is right, given the ones before it were
        self.stats = DraftStats()
        self._shadow: list[int] = []
        self._shadow_hits = 0

    def length(self, available: int) -> int:
        """The draft length with the best expected gain over plain decoding, or 0 if none beats the margin."""
        step = self.costs.step_s
        if step is None or available < 1:
            return 0
        extra = self.costs.extra_position_s
        extra = self.optimistic_extra * step if extra is None else extra
        best, best_gain = 0, self.margin
        expected = 1.0
        for length in range(1, min(available, self.max_draft) + 1):
            expected += self.acceptance ** length
            gain = expected * step / (step + length * extra)
            if gain > best_gain:
                best, best_gain = length, gain
        return best

    def verified(self, proposed: int, accepted: int) -> None:
        """Learns from a verified draft; an open shadow draft is dropped (its positions are past)."""
        self._shadow = []
        self.stats.proposed += proposed
        self.stats.accepted += accepted
        self.stats.verifications += 1
        self._learn(proposed, accepted)

    # -- shadow drafts: guesses compared with what plain decoding produced ----------------------------------
    def shadow(self, draft: list[int]) -> None:
        """Keeps ``draft`` (unverified) to compare with the next plainly decoded tokens."""
        if not self._shadow and draft:
            self._shadow, self._shadow_hits = list(draft), 0

    def decoded(self, token: int) -> None:
        """A token plain decoding produced; settles the shadow draft when it misses or runs out."""
        if not self._shadow:
            return
        guess = self._shadow[self._shadow_hits]
        if guess == token:
            self._shadow_hits += 1
            if self._shadow_hits < len(self._shadow):
                return
        self.stats.shadow_guesses += 1
        self.stats.shadow_hits += self._shadow_hits
        self._learn(len(self._shadow), self._shadow_hits)
        self._shadow = []

    def _learn(self, proposed: int, accepted: int) -> None:
        """Updates the per-guess acceptance from one draft: ``accepted`` successes, then one failure unless all
        were right (the geometric model behind ``length``)."""
        trials = accepted + (1 if accepted < proposed else 0)
        if trials:
            self.acceptance = _blend(self.acceptance, accepted / trials, min(0.5, trials / 4))
