"""A streamed cascade request: hold the first local tokens, decide once, then stream one side to the end.

The route is known before the first byte is sent, so a server can put it in response headers: a request
forced to the cloud (or sent there while the local engine starts, or whose prompt the calibration's text
checkpoint judged hopeless) primes the cloud stream up to its first chunk; otherwise the local leg streams
through the thread bridge, the hold (``stream_hold``) decides, and an escalation tries the cloud up to its
first chunk while the local leg keeps going. Escalating stops the local leg and the cloud answers; a
committed stream stays local to the end, and an answer the policy would have escalated after it was committed
is marked ``policy_wanted_cloud`` (its route still says ``local``). Every stream ends with its
``CascadeResult`` and one ledger row, also when it fails or the client leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

from fallback.cascade_types import CascadeRequest, CascadeResult, CascadeStream, LocalRun, StreamPiece
from fallback.errors import CloudUnavailableError, FallbackError
from fallback.local_run import hopeless_run, refuse_unanswerable
from fallback.policy import Decision, Route, RouteTaken, decide
from fallback.stream_bridge import LocalStreamBridge
from fallback.stream_hold import StreamHold

if TYPE_CHECKING:
    from fallback.cascade import Cascade


class StreamedRequest:
    """One streamed request through ``cascade``, from its start to its result and ledger row."""

    def __init__(self, cascade: Cascade, request: CascadeRequest, started: float, span) -> None:
        self.cascade, self.request, self.started, self.span = cascade, request, started, span

    async def open(self) -> CascadeStream:
        request, cascade = self.request, self.cascade
        if request.route == Route.CLOUD or cascade._local_starting(request):
            run = cascade._skipped_run(request)
            decision = decide(run.outcome, cascade.policy)
            try:  # a cloud that fails says so before the headers
                return CascadeStream(RouteTaken.CLOUD, await _primed(self._cloud_items(lambda: (run, decision))))
            except FallbackError as exc:
                cascade._record_failure(request, run, decision, exc, self.span)
                raise
        verdict, cloud_failed = cascade.prompt_verdict(request), None
        if verdict is not None and cascade.can_escalate(request):
            opened, cloud_failed = await self._hopeless_to_cloud(verdict.confidence)
            if opened is not None:
                return opened
        bridge = LocalStreamBridge(cascade.local, request, cascade.confidence_of_tokens)
        hold = self._hold(escalable=cascade.can_escalate(request))
        held = await bridge.hold(hold.done)
        decision = hold.decision(bridge.tokens, bridge.run() if bridge.ended() else None)
        if verdict is not None and not bridge.failed():
            decision = decide(hopeless_run(request, verdict.confidence).outcome, cascade.policy)
        if decision.escalate and cascade.can_escalate(request) and cloud_failed is None:
            return await self._escalate(bridge, held, decision)
        never_send = "request is tagged never_send" if request.never_send else None
        if bridge.failed():  # say so before any header is sent, not in-band after a 200
            raise self._local_failure(bridge.run(), cloud_failed or never_send
                                      or "the cloud is not configured or not asked for")
        if decision.escalate and request.route == Route.AUTO:
            why = cloud_failed or never_send or "no cloud is configured"
            return CascadeStream(RouteTaken.LOCAL_DEGRADED, self._local_items(bridge, held, (decision, why)))
        return CascadeStream(RouteTaken.LOCAL, self._local_items(bridge, held))

    async def _hopeless_to_cloud(self, confidence: float) -> tuple[CascadeStream | None, str | None]:
        """A prompt the text checkpoint judged hopeless: the cloud stream, primed before any local decoding;
        or, when the cloud fails before its first chunk, why (the local answer then streams, local-degraded)."""
        run = hopeless_run(self.request, confidence)
        decision = decide(run.outcome, self.cascade.policy)
        try:
            return CascadeStream(RouteTaken.CLOUD, await _primed(self._cloud_items(lambda: (run, decision)))), None
        except FallbackError as exc:
            return None, f"the cloud failed before answering: {type(exc).__name__}: {exc}"

    def _hold(self, escalable: bool) -> StreamHold:
        """The hold of this request. One that cannot reach the cloud (none configured, ``never_send``) holds only
        its first token: its route is local whatever the tokens say, so waiting for a decision would only delay
        the stream; the policy's view still ends in ``policy_wanted_cloud``."""
        cascade, request = self.cascade, self.request
        route = request.route if escalable else Route.LOCAL
        held = partial(cascade.confidence_of_tokens, request=request, whole=False)  # the held tokens: a cut answer
        return StreamHold(cascade.policy, route, held, cascade.commit_after_tokens, cascade.hold_min_tokens,
                          cascade.hold_margin, lambda tokens, ended: cascade.running_verdict(request, tokens, ended))

    def _local_failure(self, run: LocalRun, why: str) -> Exception:
        """The error for a local leg that failed with no cloud to take over, recorded as a failed request."""
        refuse_unanswerable(run.outcome, why)
        error = CloudUnavailableError(f"the local model could not answer: {run.outcome.error}")
        self.cascade._record_failure(self.request, run, decide(run.outcome, self.cascade.policy), error, self.span)
        return error

    async def _escalate(self, bridge: LocalStreamBridge, held: list, decision: Decision) -> CascadeStream:
        """Tries the cloud up to its first chunk while the local leg keeps going; the local answer streams
        (marked local-degraded) if the cloud fails before anything was sent."""
        cloud = self._cloud_items(lambda: self._early_run(bridge, decision), local_answer_ready=not bridge.failed())
        try:
            primed = await _primed(cloud)
        except FallbackError as exc:
            if bridge.failed():
                self.cascade._record_failure(self.request, *self._early_run(bridge, decision), exc, self.span)
                raise
            why = f"the cloud failed before answering: {type(exc).__name__}: {exc}"
            return CascadeStream(RouteTaken.LOCAL_DEGRADED, self._local_items(bridge, held, (decision, why)))
        bridge.cancel()
        return CascadeStream(RouteTaken.CLOUD, primed)

    def _early_run(self, bridge: LocalStreamBridge, decision: Decision) -> tuple[LocalRun, Decision]:
        """What the local leg did before the stream escalated, and the decision the hold took."""
        run = bridge.run(stopped_early=not bridge.ended())
        return run, (decision if run.result is not None else decide(run.outcome, self.cascade.policy))

    async def _local_items(self, bridge: LocalStreamBridge, held: list,
                           degraded: tuple[Decision, str] | None = None) -> AsyncIterator[object]:
        try:
            for piece in held:
                yield piece
            async for piece in bridge.rest():
                yield piece
        except (GeneratorExit, asyncio.CancelledError):
            self.cascade._record_cancelled(self.request, self.started)
            raise
        finally:
            bridge.cancel()
        yield self._local_result(bridge.run(), degraded)

    def _local_result(self, run: LocalRun, degraded: tuple[Decision, str] | None) -> CascadeResult:
        cascade, request = self.cascade, self.request
        decision = decide(run.outcome, cascade.policy)
        if run.result is None:
            error = CloudUnavailableError(f"the local model could not answer: {run.outcome.error}")
            cascade._record_failure(request, run, decision, error, self.span)
            raise error
        if degraded:
            result = cascade._local_result(run, degraded[0], RouteTaken.LOCAL_DEGRADED, degraded[1])
        else:
            result = cascade._local_result(run, decision, RouteTaken.LOCAL)
            result.policy_wanted_cloud = decision.escalate and request.route == Route.AUTO
        return self._settled(run, result)

    async def _cloud_items(self, run_and_decision: Callable[[], tuple[LocalRun, Decision]],
                           local_answer_ready: bool = False) -> AsyncIterator[object]:
        """The cloud's pieces, then its ``CascadeResult``; ``run_and_decision()`` gives what the local leg did
        (read at the end, once the local leg has stopped)."""
        cascade, request = self.cascade, self.request
        if cascade.gateway is None:
            raise CloudUnavailableError("the request asked for the cloud and no cloud is configured")
        texts, response = [], None
        try:
            async for chunk in cascade.gateway.stream(cascade._cloud_request(request, local_answer_ready,
                                                                             self.started)):
                if chunk.text:
                    texts.append(chunk.text)
                    yield StreamPiece(chunk.text, None)
                response = chunk.response or response
        except FallbackError as exc:
            if texts:  # content already reached the client; before that, the caller decides (and records)
                cascade._record_failure(request, *run_and_decision(), exc, self.span)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            cascade._record_cancelled(request, self.started, provider=cascade._provider_of(None))
            raise
        run, decision = run_and_decision()
        yield self._settled(run, cascade._cloud_result(run, decision, response, "".join(texts)))

    def _settled(self, run: LocalRun, result: CascadeResult) -> CascadeResult:
        """A streamed request's end: its latency, its ledger row and its span tree."""
        result.latency_s = time.perf_counter() - self.started
        self.cascade._record(self.request, run, result)
        self.cascade.tracer.finish(self.span, self.request, run, result)
        return result


async def traced(tracer, span, items: AsyncIterator[object], started: float) -> AsyncIterator[object]:
    """``items`` as they are, ending the request's span when the stream ends, fails or is abandoned."""
    waiting_for_first = True
    try:
        async for item in items:
            if waiting_for_first and isinstance(item, StreamPiece):
                tracer.first_chunk(span, time.perf_counter() - started)
                waiting_for_first = False
            yield item
    except (GeneratorExit, asyncio.CancelledError):
        tracer.cancelled(span)
        raise
    except Exception as exc:
        tracer.fail(span, exc)
        raise
    finally:
        tracer.end(span)


async def _primed(items: AsyncIterator[object]) -> AsyncIterator[object]:
    """Runs ``items`` up to its first item now (so its failure can still become an HTTP status), then
    replays that item and the rest."""
    first = await items.__anext__()

    async def replay() -> AsyncIterator[object]:
        yield first
        async for item in items:
            yield item

    return replay()
