"""Deciding before the local answer is done: a running escalation decision every few tokens.

An escalated request used to pay the whole local generation and then the cloud. Here a generated answer is
judged at checkpoints while it is produced: from the query text alone (checkpoint -1, ``TEXT_CHECKPOINT``: a
router on its hashed trigrams, before the model runs), from the prompt (checkpoint 0, ``PROMPT_CHECKPOINT``: a
probe on the prompt's last hidden state, known after the prefill, before any token), after the first token (checkpoint
1: chosen from the prompt's last row of logits, so its probability is known before any decoding), then every
``every`` tokens.
At checkpoint n a calibrator fitted on the first n tokens of the calibration answers gives P(correct | what
has been seen); below the checkpoint's threshold the request is escalated there and local decoding stops. An
answer that reaches its end is judged by the task's final calibrator, as before.

A checkpoint's threshold is chosen on the calibration answers so that what it escalates early is no more
often right than what the final rule escalates (``early_threshold``): deciding early saves time without
sending the cloud answers the final rule would have kept. The text checkpoint is the exception: its
calibrator predicts the final rule's own decision from the query text (P(the final rule keeps it local)) and
its threshold escalates where most of what it escalates would be escalated at the end anyway, so it trades a
few extra cloud calls for deciding before the model runs. The checkpoints travel in the final calibrator's
file, under ``extra["running"]`` (``RunningCalibration.to_dict``), so one file serves both decisions and a
runtime that knows nothing of them still loads it. Pure functions and numpy; no model, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fallback.calibration import Calibrator

DEFAULT_EVERY = 4
PROMPT_CHECKPOINT = 0  # the decision from the prompt alone, after the prefill, before the first token
TEXT_CHECKPOINT = -1  # the decision from the query text alone, before the model runs


def checkpoint_tokens(n_tokens: int, every: int = DEFAULT_EVERY) -> list[int]:
    """The token counts a running decision is taken at before an answer of ``n_tokens`` tokens ends: -1 (the
    query text alone), 0 (the prompt alone), 1 (after the prefill), 1 + every, 1 + 2 * every, ... (the end
    itself is the final decision's)."""
    return [TEXT_CHECKPOINT, PROMPT_CHECKPOINT, *range(1, n_tokens, every)]


@dataclass
class RunningCalibration:
    """One calibrator (with its own threshold) per checkpoint; a checkpoint past the last fitted one uses
    the last one."""

    every: int = DEFAULT_EVERY
    by_tokens: dict[int, Calibrator] = field(default_factory=dict)

    def at(self, tokens: int) -> Calibrator | None:
        fitted = [count for count in self.by_tokens if count <= tokens]
        return self.by_tokens[max(fitted)] if fitted else None

    def to_dict(self) -> dict:
        return {"every": self.every, "checkpoints": {str(n): c.to_dict() for n, c in self.by_tokens.items()}}

    @classmethod
    def from_dict(cls, record: dict) -> "RunningCalibration":
        by_tokens = {int(tokens): Calibrator.from_dict(calibrator)
                      for tokens, calibrator in record.get("checkpoints", {}).items()}
        return cls(int(record.get("every", DEFAULT_EVERY)), by_tokens)

    @classmethod
    def of(cls, calibrator: Calibrator) -> "RunningCalibration | None":
        """The running calibration a task's calibrator carries, or None."""
        record = calibrator.extra.get("running")
        return cls.from_dict(record) if record else None


@dataclass(frozen=True)
class RunningDecision:
    """Where a running decision stopped an answer: after ``tokens`` tokens, with that confidence."""

    tokens: int
    confidence: float


def decide_running(running: RunningCalibration, n_tokens: int,
                   signals_after: Callable[[int, Calibrator], dict[str, float]]) -> RunningDecision | None:
    """The first checkpoint at which the answer is escalated, or None when it reaches its end undecided.

    ``signals_after(n, calibrator)`` gives the answer's signals after its first n tokens (what a runtime has
    then), with the probe logits ``calibrator`` needs (``fallback.probe.probes_of``)."""
    for tokens in checkpoint_tokens(n_tokens, running.every):
        calibrator = running.at(tokens)
        if calibrator is None:
            continue
        confidence = calibrator.predict(signals_after(tokens, calibrator))
        if confidence < calibrator.threshold:
            return RunningDecision(tokens, confidence)
    return None


def early_threshold(confidences: Sequence[float], correct: Sequence[bool], accuracy_cap: float,
                    ceiling: float) -> float:
    """The highest threshold (at most ``ceiling``) below which the calibration answers' local accuracy is at
    most ``accuracy_cap``; 0 (never escalate early) when even the least confident one breaks the cap."""
    pairs = sorted(zip(confidences, correct))
    right, best = 0, 0.0
    for count, (confidence, is_correct) in enumerate(pairs, start=1):
        right += bool(is_correct)
        following = pairs[count][0] if count < len(pairs) else confidence + 1e-9
        if right / count <= accuracy_cap and following > confidence:
            best = min(following, ceiling)
    return best
