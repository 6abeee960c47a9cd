"""One run of the local leg, reduced to what the policy reads: an answer with its outcome, or a failure.

The whole-answer path runs it here (in a worker thread, to the end or until cancelled); the streaming path
runs the same leg through ``stream_bridge`` and builds its outcome with the same two functions, so a stream
and a whole answer are judged alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from fallback.cascade_types import CascadeRequest, LocalRun
from fallback.errors import RequestRejectedError
from fallback.local_leg import (LocalAnswer, LocalInputTooLongError, LocalLeg, LocalLegError, LocalToken,
                                failure_kind)
from fallback.policy import LocalOutcome
from fallback.validity import check_output

Confidence = Callable[[Sequence[LocalToken], CascadeRequest], "float | None"]
Running = Callable[[Sequence[LocalToken]], "RunningDecision | None"]


def answered_run(request: CascadeRequest, answer: LocalAnswer, confidence: Confidence, latency_s: float) -> LocalRun:
    """A run that produced ``answer``: its confidence, finish reason and validity for the policy."""
    outcome = LocalOutcome(confidence=confidence(answer.tokens, request), finish_reason=answer.finish_reason,
                           validity=check_output(answer.text, request.response_format), route=request.route)
    return LocalRun(answer, outcome, latency_s)


def failed_run(request: CascadeRequest, error: LocalLegError, latency_s: float = 0.0) -> LocalRun:
    """A run the local leg could not finish; the policy escalates it for the reason its type names."""
    outcome = LocalOutcome(error=str(error), route=request.route, failure=failure_kind(error),
                           input_too_long=isinstance(error, LocalInputTooLongError))
    return LocalRun(None, outcome, latency_s)


def run_whole(local: LocalLeg, request: CascadeRequest, confidence: Confidence,
              cancel: threading.Event | None = None, running: Running | None = None) -> LocalRun:
    """Runs the local leg to the end (or until ``cancel`` is set); its failures become outcomes, and a
    ``RequestRejectedError`` (the caller's mistake) propagates. ``running`` (the calibration's running
    decision) is asked after every token; where it escalates, the leg is stopped there and the run is marked
    ``stopped_early`` with that decision's confidence."""
    started = time.perf_counter()
    tokens, verdict = [], None
    try:
        stream = local.stream(request.local_request())
        try:
            for piece in stream:
                if piece.token is not None and running is not None:
                    tokens.append(piece.token)
                    verdict = running(tokens)
                if verdict is not None or (cancel is not None and cancel.is_set()):
                    break
        finally:
            stream.close()  # stopped early, cancelled, or a judgement that raised: the local leg is let go
        answer = stream.result
    except LocalLegError as exc:
        return failed_run(request, exc, time.perf_counter() - started)
    run = answered_run(request, answer, confidence, time.perf_counter() - started)
    if verdict is not None:
        run.outcome = LocalOutcome(confidence=verdict.confidence, stopped_early=True, route=request.route)
    return run


def hopeless_run(request: CascadeRequest, confidence: float, run: LocalRun | None = None) -> LocalRun:
    """``run`` (None: the local leg never ran) marked as a prompt the text checkpoint escalated with
    ``confidence``; the policy then decides ``prompt_hopeless`` (unless the local leg failed)."""
    if run is None:
        return LocalRun(None, LocalOutcome(confidence=confidence, route=request.route, prompt_hopeless=True))
    return LocalRun(run.result, replace(run.outcome, prompt_hopeless=True), run.latency_s)


def refuse_unanswerable(outcome: LocalOutcome, why: str) -> None:
    """An input too long for the local model, with no cloud to take it, is refused as the caller's error."""
    if outcome.input_too_long:
        raise RequestRejectedError(f"{outcome.error}: too long for the local model, and {why}")
