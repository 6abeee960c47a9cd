"""Draft-free speculative decoding by prompt lookup: guess the next tokens by finding the current n-gram earlier
in the context, then verify the guesses in one batch.

Extraction, rewriting and quoting copy spans of the input, so the tokens that followed the last time this
n-gram appeared are often the tokens that come next. A verification batch of k + 1 tokens costs little more than
one token on a memory-bound CPU; every accepted guess is a decode step saved. Greedy output is unchanged: a guess
is kept only when it equals the model's own argmax at that position. Acceptance is tracked per request and
drafting pauses while guesses keep failing, so ordinary prompts pay almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

NGRAM_SIZES = (3, 2)


class PromptLookup:
    """An index from n-grams of the context to where they last ended, and drafts read from it."""

    def __init__(self, tokens: Sequence[int], max_draft: int = 6) -> None:
        self.tokens: list[int] = []
        self.max_draft = max_draft
        self._last_end: dict[tuple[int, ...], int] = {}
        self._previous_end: dict[int, int] = {}
        self.accepted = self.proposed = 0
        self._paused_for = 0
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
        """Up to ``limit`` guessed tokens (none while paused after repeated misses)."""
        if self._paused_for > 0:
            self._paused_for -= 1
            return []
        for size in NGRAM_SIZES:
            previous = self._previous_end.get(size)
            if previous is not None:
                return self.tokens[previous + 1:previous + 1 + min(limit, self.max_draft)]
        return []

    def record(self, proposed: int, accepted: int) -> None:
        """Acceptance bookkeeping: after three straight misses, drafting pauses for 16 tokens."""
        self.proposed += proposed
        self.accepted += accepted
        self._misses = 0 if accepted else getattr(self, "_misses", 0) + 1
        if self._misses >= 3:
            self._paused_for, self._misses = 16, 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0
