"""The escalation policy: what the local leg produced goes in, a decision with its reason comes out. No I/O.

Escalate when the caller forces the cloud; when the input is too long for the local model (straight to the
cloud, no local attempt); when the local backend failed; when the prompt was judged hopeless from its text
before the model ran (``early_request``); when a deadline or cap cut the answer; when the answer
is invalid (empty, unparsable, off-schema); when calibrated confidence is below the threshold. While streaming,
``stop_early`` ends a doomed local answer as soon as its running confidence falls below a floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from fallback.validity import VALID, Validity


class _Named(str, Enum):
    """A name that is also its own string: JSON, headers, metric labels and ledger rows read the value."""

    def __str__(self) -> str:
        return self.value


class Route(_Named):
    """Where a request asks to be answered (the ``X-Edge-Route`` header)."""

    AUTO = "auto"
    LOCAL = "local"
    CLOUD = "cloud"


class RouteTaken(_Named):
    """Where a request was answered, as responses, metrics and the ledger name it."""

    LOCAL = "local"
    CLOUD = "cloud"
    BOTH = "both"
    LOCAL_DEGRADED = "local-degraded"  # the cloud was wanted and failed, or may not be used: the local answer
    FAILED = "failed"  # neither leg could answer
    CANCELLED = "cancelled"  # the client left a stream before its end


class Reason(str, Enum):
    CONFIDENT = "confident"
    FORCED_LOCAL = "forced_local"
    FORCED_CLOUD = "forced_cloud"
    INPUT_TOO_LONG = "input_too_long"
    LOCAL_ERROR = "local_error"
    LOCAL_CRASHED = "local_crashed"  # the engine's process died while answering
    LOCAL_STARTING = "local_starting"  # the engine's process is starting or restarting
    DEADLINE = "deadline"
    TRUNCATED = "truncated"
    INVALID_OUTPUT = "invalid_output"
    LOW_CONFIDENCE = "low_confidence"
    EARLY_LOW_CONFIDENCE = "early_low_confidence"
    PROMPT_HOPELESS = "prompt_hopeless"  # the query text alone said escalate, before the model ran


@dataclass(frozen=True)
class PolicyConfig:
    threshold: float = 0.5
    escalate_on_length: bool = False
    early_floor: float | None = None
    early_min_tokens: int = 4


@dataclass(frozen=True)
class LocalOutcome:
    """What the local leg produced, reduced to what the decision needs."""

    confidence: float | None = None
    finish_reason: str | None = None
    validity: Validity = VALID
    error: str | None = None
    input_too_long: bool = False
    stopped_early: bool = False
    route: str = Route.AUTO
    failure: str | None = None  # "crashed" or "starting" when the engine's process could not answer
    prompt_hopeless: bool = False  # the calibration's text checkpoint escalated the prompt before decoding


@dataclass(frozen=True)
class Decision:
    escalate: bool
    reason: Reason
    detail: str = ""


def _forced_or_failed(outcome: LocalOutcome) -> Decision | None:
    if outcome.route == Route.CLOUD:
        return Decision(True, Reason.FORCED_CLOUD, "the caller asked for the cloud")
    if outcome.route == Route.LOCAL:
        return Decision(False, Reason.FORCED_LOCAL, "the caller asked for the local model")
    if outcome.input_too_long:
        return Decision(True, Reason.INPUT_TOO_LONG, "the input is over the local model's cap")
    if outcome.error:
        reason = {"crashed": Reason.LOCAL_CRASHED, "starting": Reason.LOCAL_STARTING}.get(outcome.failure,
                                                                                          Reason.LOCAL_ERROR)
        return Decision(True, reason, outcome.error)
    if outcome.prompt_hopeless:
        return Decision(True, Reason.PROMPT_HOPELESS, "the query text's calibrated confidence is below the text "
                                                      "checkpoint's threshold")
    return None


def _cut_or_invalid(outcome: LocalOutcome, config: PolicyConfig) -> Decision | None:
    if outcome.stopped_early:
        return Decision(True, Reason.EARLY_LOW_CONFIDENCE, "running confidence fell below the floor")
    if outcome.finish_reason == "deadline":
        return Decision(True, Reason.DEADLINE, "the local answer hit its deadline")
    if outcome.finish_reason == "length" and config.escalate_on_length:
        return Decision(True, Reason.TRUNCATED, "the local answer hit the output-token cap")
    if not outcome.validity.ok:
        return Decision(True, Reason.INVALID_OUTPUT, outcome.validity.reason)
    return None


def decide(outcome: LocalOutcome, config: PolicyConfig) -> Decision:
    """The routing decision for one request, with the reason it was taken."""
    decision = _forced_or_failed(outcome) or _cut_or_invalid(outcome, config)
    if decision is not None:
        return decision
    confidence = outcome.confidence if outcome.confidence is not None else 0.0
    if confidence < config.threshold:
        return Decision(True, Reason.LOW_CONFIDENCE, f"confidence {confidence:.3f} < threshold {config.threshold:.3f}")
    return Decision(False, Reason.CONFIDENT, f"confidence {confidence:.3f} >= threshold {config.threshold:.3f}")


def stop_early(logprobs: Sequence[float], config: PolicyConfig) -> bool:
    """True when a streaming answer's running geometric-mean token probability is below the floor."""
    if config.early_floor is None or len(logprobs) < config.early_min_tokens:
        return False
    return math.exp(math.fsum(logprobs) / len(logprobs)) < config.early_floor
