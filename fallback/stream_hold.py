"""The streaming hold: how long a stream keeps local tokens back, and the one decision taken on them.

A stream is judged by the same policy, calibration and threshold as a whole answer: on the whole answer when
it ends inside the hold, else on the tokens held so far (their running confidence). The hold is adaptive: it
commits as soon as the running confidence is safely above the threshold (``margin``, after ``min_tokens``),
holds up to ``commit_after_tokens`` otherwise, and the policy's early floor may end it sooner. Where the
calibration has running checkpoints (``running``: ``Cascade.running_verdict``), the calibrated running decision
is taken at those token counts, as ``edge-runtime eval`` takes it (probability, query-text and hidden-state
signals: ``fallback.early_request``), and escalates the stream there (reason ``early_low_confidence``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fallback.local_leg import LocalToken
from fallback.cascade_types import LocalRun
from fallback.policy import Decision, LocalOutcome, PolicyConfig, Route, decide, stop_early

if TYPE_CHECKING:
    from fallback.early import RunningDecision


@dataclass(frozen=True)
class StreamHold:
    """One stream's hold: the policy, its limits, and the running confidence of the held tokens."""

    policy: PolicyConfig
    route: str
    confidence: Callable[[Sequence[LocalToken]], float | None]
    commit_after_tokens: int = 8
    min_tokens: int = 2
    margin: float = 0.1
    running: Callable[[Sequence[LocalToken], bool], RunningDecision | None] | None = None

    def _running(self, tokens: Sequence[LocalToken], ended: bool = False) -> RunningDecision | None:
        """The calibrated running decision's escalation at a checkpoint within ``tokens``, if any."""
        return self.running(tokens, ended) if self.running is not None and self.route == Route.AUTO else None

    def done(self, tokens: Sequence[LocalToken]) -> bool:
        """Whether the stream may stop holding after ``tokens``: the longest hold is reached, the early floor
        is crossed, or the running confidence is safely above the threshold. A stream forced to one side holds
        only its first token (a failure before it is still an HTTP status, not an in-band error)."""
        logprobs = [token.logprob for token in tokens]
        if self.route != Route.AUTO:
            return len(logprobs) >= 1
        if len(logprobs) >= self.commit_after_tokens or stop_early(logprobs, self.policy):
            return True
        if self._running(tokens) is not None:
            return True
        floor_pending = self.policy.early_floor is not None and len(logprobs) < self.policy.early_min_tokens
        if len(logprobs) < self.min_tokens or floor_pending:  # never commit before the floor could judge
            return False
        confidence = self.confidence(tokens)
        return confidence is not None and confidence >= self.policy.threshold + self.margin

    def decision(self, held: Sequence[LocalToken], whole: LocalRun | None) -> Decision:
        """The policy's decision on what the hold produced: ``whole`` when the answer ended inside the hold,
        else the ``held`` tokens (the same threshold; the early floor may escalate sooner)."""
        running = self._running(held, ended=whole is not None)
        if running is not None and (whole is None or whole.result is not None):
            return decide(LocalOutcome(confidence=running.confidence, stopped_early=True, route=self.route),
                          self.policy)
        if whole is not None:
            return decide(whole.outcome, self.policy)
        if stop_early([token.logprob for token in held], self.policy):
            return decide(LocalOutcome(stopped_early=True, route=self.route), self.policy)
        return decide(LocalOutcome(confidence=self.confidence(held), route=self.route), self.policy)
