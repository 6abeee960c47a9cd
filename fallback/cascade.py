"""The cascade: answer locally, score the answer, and escalate to the cloud when the policy says so.

One request flows: local leg (a ``LocalLeg``, in a worker thread) -> confidence (``answer_confidence``:
calibrated when a calibrator is loaded, else the geometric-mean token probability) and validity ->
``policy.decide`` -> cloud leg through the gateway when escalating -> one ledger row (``ledger.request_entry``).
Offline-first: when the cloud is not configured or every provider fails, the local answer is returned marked
``local-degraded`` with the reason; nothing is sent twice. A loaded calibration may decide earlier
(``early_request``): from the query text before the local leg runs, and at its running checkpoints while the
leg decodes (the leg is then stopped); the cascade asks the leg for hidden states when the calibration reads
them (``record_hidden``).

Streaming (``cascade_stream``) holds local tokens back until one decision can be made, by the same policy,
calibration and threshold as a whole answer (``stream_hold``); the local leg runs through a thread bridge
(``stream_bridge``). The parts: ``cascade_types`` (request, result, pieces), ``local_leg`` (the protocol the
local model is reached through; the server adapts the runtime to it), ``local_run`` (a run's outcome).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING

from fallback.answer_confidence import answer_confidence
from fallback.cascade_stream import StreamedRequest, traced
from fallback.cascade_types import CascadeRequest, CascadeResult, CascadeStream, LocalRun, StreamPiece
from fallback.errors import (CloudUnavailableError, FallbackError, LedgerError, PrivacyRefusalError,
                             RequestRejectedError)
from fallback.local_leg import LocalLeg, failure_kind
from fallback.local_run import hopeless_run, refuse_unanswerable, run_whole
from fallback.policy import Decision, LocalOutcome, PolicyConfig, Route, RouteTaken, decide

if TYPE_CHECKING:
    from fallback.early import RunningDecision

__all__ = ["Cascade", "CascadeRequest", "CascadeResult", "CascadeStream", "CloudUnavailableError", "LocalRun",
           "StreamPiece", "failure_kind"]

log = logging.getLogger(__name__)


class Cascade:
    """A local leg + policy + optional cloud gateway + optional ledger."""

    def __init__(self, local: LocalLeg, gateway=None, policy: PolicyConfig | None = None, ledger=None,
                 calibrator=None, commit_after_tokens: int = 8, tracer=None, hold_min_tokens: int = 2,
                 hold_margin: float = 0.1, early: bool = True) -> None:
        from fallback.tracing import RequestTracer

        self.local, self.gateway, self.ledger, self.calibrator = local, gateway, ledger, calibrator
        self.tracer = tracer or RequestTracer.from_env()
        self.policy = policy or PolicyConfig()
        self.commit_after_tokens = commit_after_tokens  # the longest hold before a stream commits
        self.hold_min_tokens, self.hold_margin = hold_min_tokens, hold_margin
        # the calibration's running checkpoints (``early``: off when a fixed threshold overrides the calibration)
        self.checkpoints = _checkpoints(calibrator) if early and calibrator is not None else None
        self.record_hidden = _recorded_tokens(calibrator, early) if calibrator is not None else None
        # margin signals need each token's best alternative: the leg is asked for that many, whatever the client
        self.alternatives = _alternatives(calibrator) if calibrator is not None else 0

    # -- confidence ------------------------------------------------------------------------------------------
    def confidence_of(self, result, request: CascadeRequest | None = None) -> float | None:
        return self.confidence_of_tokens(result.tokens, request)

    def confidence_of_tokens(self, tokens, request: CascadeRequest | None = None, whole: bool = True) -> float | None:
        """The (calibrated, when a calibrator is loaded) confidence of an answer's tokens (``whole``), or of its
        first ones; a calibrator also reads the request's query text and the tokens' hidden states, as ``eval``
        does, and the class probe on a whole answer's words."""
        if request is None:
            return answer_confidence(tokens, None, self.calibrator, whole=whole)
        context = None
        if self.calibrator is not None and tokens:
            from fallback.early_request import context_signals  # numpy: only with a calibration loaded

            context = context_signals(self.calibrator, request.query, tokens, whole, request.stop or ())
        return answer_confidence(tokens, request.response_format, self.calibrator, context, whole)

    def _asking(self, request: CascadeRequest) -> CascadeRequest:
        """``request`` as the local leg is asked it: with hidden states recorded, and alternatives enough for its
        margin signals, when the calibration reads them (the client is shown only the alternatives it asked for)."""
        if request.route == Route.CLOUD:
            return request
        changes = {}
        if self.record_hidden is not None and request.record_hidden is None:
            changes["record_hidden"] = self.record_hidden
        if request.top_logprobs < self.alternatives:
            changes["top_logprobs"] = self.alternatives
        return dataclasses.replace(request, **changes) if changes else request

    def can_escalate(self, request: CascadeRequest) -> bool:
        """Whether this request could go to the cloud at all: a cloud is configured and the request allows it."""
        return self.gateway is not None and request.cloud_usable

    def _checkpoints_for(self, request: CascadeRequest):
        """The calibration's checkpoints when they judge this request (auto-routed, of their task), else None."""
        checkpoints = self.checkpoints
        if checkpoints is None or request.route != Route.AUTO or not checkpoints.applies(request.task):
            return None
        return checkpoints

    def prompt_verdict(self, request: CascadeRequest) -> RunningDecision | None:
        """The text checkpoint's escalation of an auto-routed request of the calibration's task (None: go on)."""
        checkpoints = self._checkpoints_for(request)
        return checkpoints.text_verdict(request.query) if checkpoints is not None else None

    def running_verdict(self, request: CascadeRequest, tokens, ended: bool = False,
                        newest: bool = False) -> RunningDecision | None:
        """The token checkpoints' escalation of a stream's first ``tokens`` (None: no checkpoint escalates);
        ``newest``: only those the last token made reachable."""
        checkpoints = self._checkpoints_for(request)
        if checkpoints is None:
            return None
        return checkpoints.token_verdict(request.query, tokens, request.response_format, ended, newest)

    def run_local(self, request: CascadeRequest, cancel: threading.Event | None = None,
                  early: bool = False) -> LocalRun:
        """Runs the local leg to the end (or cancellation); its failures become outcomes. ``early``: the
        calibration's running decision may stop it at a checkpoint (only where a cloud can take the request)."""
        running = None
        if early and self.can_escalate(request) and self._checkpoints_for(request) is not None:
            running = lambda tokens: self.running_verdict(request, tokens, newest=True)  # noqa: E731
        return run_whole(self.local, request, self.confidence_of_tokens, cancel, running)

    # -- the whole request -----------------------------------------------------------------------------------
    async def complete(self, request: CascadeRequest, cancel: threading.Event | None = None) -> CascadeResult:
        """Answers one request; setting ``cancel`` stops the local leg at its next token."""
        started = time.perf_counter()
        _refuse_contradiction(request)
        request = self._asking(request)
        with self.tracer.request(request) as span:
            run = await self._first_run(request, cancel)
            decision = decide(run.outcome, self.policy)
            try:
                if run.result is None and run.outcome.prompt_hopeless:
                    run, result = await self._cloud_first(request, run, decision, cancel, started)
                elif run.outcome.stopped_early:
                    run, result = await self._cloud_after_early_stop(request, run, decision, cancel, started)
                else:
                    result = await self._route(request, run, decision, started)
            except RequestRejectedError:
                raise
            except FallbackError as exc:
                self._record_failure(request, run, decision, exc, span)
                raise
            result.latency_s = time.perf_counter() - started
            self._record(request, run, result)
            self.tracer.finish(span, request, run, result)
        return result

    async def _first_run(self, request: CascadeRequest, cancel: threading.Event | None) -> LocalRun:
        """The local leg's run, or none: forced to the cloud, the engine starting, or a prompt the text
        checkpoint judged hopeless with a cloud to take it (with none, the local answer is marked so)."""
        if request.route == Route.CLOUD or self._local_starting(request):
            return self._skipped_run(request)
        verdict = self.prompt_verdict(request)
        if verdict is not None and self.can_escalate(request):
            return hopeless_run(request, verdict.confidence)
        run = await asyncio.to_thread(self.run_local, request, cancel, verdict is None)
        return run if verdict is None else hopeless_run(request, verdict.confidence, run)

    async def _cloud_first(self, request: CascadeRequest, run: LocalRun, decision: Decision,
                           cancel: threading.Event | None, started: float) -> tuple[LocalRun, CascadeResult]:
        """A hopeless prompt's cloud answer, before any local decoding; a cloud that fails gets the local
        answer in its place, marked local-degraded (offline-first)."""
        try:
            cloud = await self.gateway.complete(self._cloud_request(request, False, started))
        except FallbackError as exc:
            local = hopeless_run(request, 0.0, await asyncio.to_thread(self.run_local, request, cancel))
            return local, self._degraded(local, decide(local.outcome, self.policy), f"{type(exc).__name__}: {exc}")
        return run, self._cloud_result(run, decision, cloud, cloud.text)

    async def _cloud_after_early_stop(self, request: CascadeRequest, run: LocalRun, decision: Decision,
                                      cancel: threading.Event | None, started: float) -> tuple[LocalRun, CascadeResult]:
        """The cloud's answer to a request the running decision stopped; a cloud that fails gets the whole
        local answer in its place (decoded again, the stopped one is partial), marked local-degraded."""
        try:
            cloud = await self.gateway.complete(self._cloud_request(request, False, started))
        except FallbackError as exc:
            left = request.deadline_s - (time.perf_counter() - started) if request.deadline_s else None
            again = dataclasses.replace(request, deadline_s=max(left, 0.05)) if left is not None else request
            local = await asyncio.to_thread(self.run_local, again, cancel)  # within what is left of the deadline
            return local, self._degraded(local, decision, f"{type(exc).__name__}: {exc}")
        return run, self._cloud_result(run, decision, cloud, cloud.text, run.result.usage.prompt_tokens)

    def _local_starting(self, request: CascadeRequest) -> bool:
        """True when the local engine is starting or restarting and the cloud can take the request now."""
        return self.can_escalate(request) and not self.local.ready

    @staticmethod
    def _skipped_run(request: CascadeRequest) -> LocalRun:
        if request.route == Route.CLOUD:
            return LocalRun(None, LocalOutcome(route=Route.CLOUD))
        return LocalRun(None, LocalOutcome(error="the local engine is starting", failure="starting"))

    async def _route(self, request: CascadeRequest, run: LocalRun, decision: Decision,
                     started: float | None = None) -> CascadeResult:
        if not decision.escalate:
            if run.result is None:  # forced local, and the local leg failed: nothing to return
                refuse_unanswerable(run.outcome, "the request is forced to the local model")
                raise CloudUnavailableError(f"the local model could not answer ({run.outcome.error}) and the "
                                            f"request is forced to the local model")
            return self._local_result(run, decision, RouteTaken.LOCAL)
        if self.gateway is None or request.never_send:
            why = "request is tagged never_send" if request.never_send else "no cloud is configured"
            refuse_unanswerable(run.outcome, why)
            return self._degraded(run, decision, why)
        try:
            cloud = await self.gateway.complete(self._cloud_request(request, run.result is not None, started))
        except FallbackError as exc:
            return self._degraded(run, decision, f"{type(exc).__name__}: {exc}")
        local_tokens = run.result.usage.prompt_tokens if run.result is not None else 0
        return self._cloud_result(run, decision, cloud, cloud.text, local_tokens)

    def _cloud_request(self, request: CascadeRequest, local_answer_ready: bool = False,
                       started: float | None = None):
        """The gateway's request; ``started`` (the request's start) lets the overall deadline count the local
        turn that came before the escalation."""
        from fallback.gateway import CloudRequest

        elapsed_s = max(time.perf_counter() - started, 0.0) if started is not None else 0.0
        return CloudRequest(messages=request.cloud_messages(), max_tokens=request.max_tokens,
                            temperature=request.temperature, stop=request.stop,
                            response_format=request.response_format, tools=request.tools,
                            tool_choice=request.tool_choice, never_send=request.never_send,
                            deadline_s=request.deadline_s, local_answer_ready=local_answer_ready,
                            elapsed_s=elapsed_s)

    @staticmethod
    def _cloud_result(run: LocalRun, decision: Decision, response, text: str,
                      local_prompt_tokens: int = 0) -> CascadeResult:
        """The cloud's answer (``response`` is None when a stream ended without one); prompt tokens fall back
        to ``local_prompt_tokens`` when the cloud reports none."""
        usage = response.usage if response is not None else None
        return CascadeResult(RouteTaken.CLOUD, decision, text,
                             (response.finish_reason if response is not None else None) or "stop",
                             (usage.prompt_tokens if usage else 0) or local_prompt_tokens,
                             usage.completion_tokens if usage else 0, run.outcome.confidence, run.result, response,
                             tool_calls=(response.tool_calls if response is not None else None) or None)

    @staticmethod
    def _local_result(run: LocalRun, decision: Decision, route: str, why: str | None = None) -> CascadeResult:
        local = run.result
        return CascadeResult(route, decision, local.text, local.finish_reason, local.usage.prompt_tokens,
                             local.usage.completion_tokens, run.outcome.confidence, local, degraded_reason=why)

    def _degraded(self, run: LocalRun, decision: Decision, why: str) -> CascadeResult:
        if run.result is None:
            raise CloudUnavailableError(f"the local model could not answer ({run.outcome.error}) and the cloud "
                                        f"is unavailable: {why}")
        return self._local_result(run, decision, RouteTaken.LOCAL_DEGRADED, why)

    # -- streaming ---------------------------------------------------------------------------------------------
    async def open_stream(self, request: CascadeRequest) -> CascadeStream:
        """Decides the route (holding the first local tokens back) and returns the stream to send.

        The route is known when this returns, so a server can put it in response headers."""
        started = time.perf_counter()
        span = self.tracer.start(request, stream=True)
        try:
            _refuse_contradiction(request)
            opened = await StreamedRequest(self, self._asking(request), started, span).open()
        except BaseException as exc:
            self.tracer.fail(span, exc)
            self.tracer.end(span)
            raise
        if span is None:
            return opened
        return CascadeStream(opened.route, traced(self.tracer, span, opened.items, started))

    # -- ledger --------------------------------------------------------------------------------------------------
    def _record(self, request: CascadeRequest, run: LocalRun, result: CascadeResult) -> None:
        """The row of an answered request; its id goes into ``result``."""
        if self.ledger is None:
            return
        from fallback.ledger import request_entry

        result.ledger_id = self._store(request_entry(
            result.route_taken, result.decision.reason.value, task=request.task, confidence=result.confidence,
            local=run.result, local_latency_s=run.latency_s, cloud=result.cloud,
            prices=self._provider_of(result.cloud)))

    def _record_failure(self, request: CascadeRequest, run: LocalRun, decision: Decision,
                        error: Exception, span=None) -> None:
        """One ``failed`` row for a request that ends in ``error`` (what it cost the cloud is not known), and
        the request's span marked failed."""
        self.tracer.fail(span, error, run)
        if self.ledger is None:
            return
        from fallback.ledger import request_entry

        self._store(request_entry(
            RouteTaken.FAILED, decision.reason.value, task=request.task, confidence=run.outcome.confidence,
            local=run.result, local_latency_s=run.latency_s, provider=getattr(error, "provider", None),
            error=type(error).__name__))

    def _record_cancelled(self, request: CascadeRequest, started: float, provider=None) -> None:
        """One ``cancelled`` row for a stream the client abandoned; ``provider`` is set when the cloud was
        streaming (what it cost is not known: no usage came back)."""
        if self.ledger is None:
            return
        from fallback.ledger import request_entry

        self._store(request_entry(RouteTaken.CANCELLED, "client_disconnected", task=request.task,
                                  local_latency_s=None if provider else time.perf_counter() - started,
                                  provider=provider.name if provider else None))

    def _store(self, entry) -> str | None:
        """Writes a ledger row; a ledger that cannot be written is logged, never allowed to change what the
        client gets (an answer already paid for is not thrown away over bookkeeping)."""
        try:
            return self.ledger.record(entry)
        except LedgerError as exc:
            log.warning("ledger row not written: %s", exc)
            return None

    def _provider_of(self, cloud):
        """The provider that answered, else the first configured one (its prices price a local answer)."""
        if self.gateway is None:
            return None
        providers = self.gateway.config.providers
        named = [provider for provider in providers if cloud is not None and provider.name == cloud.provider]
        return (named or providers or [None])[0]


def _checkpoints(calibrator):
    from fallback.early_request import RequestCheckpoints  # numpy: only with a calibration loaded

    return RequestCheckpoints.of(calibrator)


def _recorded_tokens(calibrator, early: bool) -> int | None:
    """How many generated tokens' hidden states a request records for ``calibrator`` (None: it reads none;
    the running checkpoints count only when ``early`` decisions are on)."""
    from fallback.early_request import needs_hidden
    from fallback.probe import RECORDED_TOKENS

    return RECORDED_TOKENS if needs_hidden(calibrator, running=early) else None


def _alternatives(calibrator) -> int:
    """Alternatives per token the calibration's margin signals need (2: the chosen token and its runner-up), or 0."""
    from fallback.early_request import decisions_of, signals_read

    return 2 if any("margin" in name for name in signals_read(decisions_of(calibrator))) else 0


def _refuse_contradiction(request: CascadeRequest) -> None:
    """A request forced to the cloud and tagged never_send can never be answered: the caller's mistake."""
    if request.route == Route.CLOUD and request.never_send:
        raise PrivacyRefusalError("the request asks for the cloud (X-Edge-Route: cloud) and is tagged never_send; "
                                  "nothing was sent")
