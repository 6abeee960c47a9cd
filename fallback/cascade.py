"""The cascade: answer locally, score the answer, and escalate to the cloud when the policy says so.

One request flows: local leg (the runtime, in a worker thread) -> confidence (calibrated when a calibrator is
loaded, else the geometric-mean token probability) and validity -> ``policy.decide`` -> cloud leg through the
gateway when escalating -> one ledger row. Offline-first: when the cloud is not configured or every provider
fails, the local answer is returned marked ``local-degraded`` with the reason; nothing is sent twice.

Streaming holds local tokens back until one decision can be made, by the same policy, calibration and
threshold as a whole answer: on the whole answer when it ends inside the hold, else on the tokens held so far
(their running confidence). The hold is adaptive: it commits as soon as the running confidence is safely above
the threshold (``hold_margin``, after ``hold_min_tokens``), holds up to ``commit_after_tokens`` otherwise, and an
early floor may end it sooner. Escalating stops the local leg and the cloud answers; a committed stream stays
local to the end, and an answer the policy would have escalated after it was committed is marked
``policy_wanted_cloud`` (its route still names where the tokens came from: ``local``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from edge_runtime.errors import (EdgeRuntimeError, EngineCrashedError, EngineStartingError, InvalidRequestError,
                                 PromptTooLongError)
from fallback.errors import FallbackError, PrivacyRefusalError
from fallback.policy import Decision, LocalOutcome, PolicyConfig, Reason, decide, stop_early
from fallback.validity import check_output

log = logging.getLogger(__name__)


@dataclass
class CascadeRequest:
    """A request in OpenAI terms, plus routing: ``route`` is auto, local or cloud."""

    prompt: str | None = None
    messages: list[dict] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    top_logprobs: int = 0
    response_format: dict | None = None
    grammar: str | None = None
    tools: list[dict] | None = None
    tool_choice: object = None
    route: str = "auto"
    never_send: bool = False
    deadline_s: float | None = None
    task: str | None = None

    def cloud_messages(self) -> list[dict]:
        return self.messages if self.messages is not None else [{"role": "user", "content": self.prompt}]


@dataclass
class CascadeResult:
    route_taken: str
    decision: Decision
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float | None
    local: object = None
    cloud: object = None
    ledger_id: str | None = None
    degraded_reason: str | None = None
    tool_calls: list | None = None
    latency_s: float = 0.0
    policy_wanted_cloud: bool = False  # a committed local stream the policy would have escalated at its end


@dataclass
class _LocalLeg:
    result: object = None
    outcome: LocalOutcome = field(default_factory=LocalOutcome)
    latency_s: float = 0.0


class Cascade:
    """Local runtime + policy + optional cloud gateway + optional ledger."""

    def __init__(self, runtime, gateway=None, policy: PolicyConfig | None = None, ledger=None,
                 calibrator=None, commit_after_tokens: int = 8, tracer=None, hold_min_tokens: int = 2,
                 hold_margin: float = 0.1) -> None:
        from fallback.tracing import RequestTracer

        self.runtime, self.gateway, self.ledger, self.calibrator = runtime, gateway, ledger, calibrator
        self.tracer = tracer or RequestTracer.from_env()
        self.policy = policy or PolicyConfig()
        self.commit_after_tokens = commit_after_tokens  # the longest hold before a stream commits
        self.hold_min_tokens, self.hold_margin = hold_min_tokens, hold_margin

    # -- confidence ------------------------------------------------------------------------------------------
    def confidence_of(self, result, request: CascadeRequest | None = None) -> float | None:
        return self.confidence_of_tokens(result.tokens, request)

    def confidence_of_tokens(self, tokens, request: CascadeRequest | None = None) -> float | None:
        """The (calibrated, when a calibrator is loaded) confidence of an answer's tokens, or of its first ones.

        For a JSON answer only the value tokens count (the model's doubt is in the values, not in punctuation
        and keys a grammar forces); a calibrator gets every signal ``answer_signals`` computes."""
        logprobs = [token.logprob for token in tokens]
        if not logprobs:
            return None
        fields, keys = _json_fields(request, tokens)
        if self.calibrator is not None:
            from fallback.confidence import answer_signals

            return self.calibrator.predict(answer_signals(logprobs, _margins(tokens), fields, keys))
        if fields is not None:
            logprobs = [logprob for logprob, field in zip(logprobs, fields) if field is not None] or logprobs
        return math.exp(math.fsum(logprobs) / len(logprobs))

    # -- local leg ---------------------------------------------------------------------------------------------
    def _local_options(self, request: CascadeRequest) -> dict:
        source = {"messages": request.messages} if request.messages is not None else {"prompt": request.prompt}
        return {**source, "max_tokens": request.max_tokens, "temperature": request.temperature,
                "top_p": request.top_p, "seed": request.seed, "stop": request.stop,
                "top_logprobs": request.top_logprobs, "total_deadline_s": request.deadline_s,
                **({"grammar": request.grammar} if request.grammar else {})}

    def run_local(self, request: CascadeRequest, cancel: threading.Event | None = None) -> _LocalLeg:
        """Runs the local leg to the end (or cancellation); input and backend failures become outcomes."""
        started = time.perf_counter()
        try:
            stream = self.runtime.stream(**self._local_options(request))
            for _ in stream:
                if cancel is not None and cancel.is_set():
                    stream.close()
                    break
            result = stream.result
        except PromptTooLongError as exc:
            return _LocalLeg(None, LocalOutcome(input_too_long=True, error=str(exc), route=request.route),
                             time.perf_counter() - started)
        except InvalidRequestError:
            raise
        except EdgeRuntimeError as exc:
            return _LocalLeg(None, LocalOutcome(error=f"{type(exc).__name__}: {exc}", route=request.route,
                                                failure=failure_kind(exc)), time.perf_counter() - started)
        return _LocalLeg(result, self._outcome(request, result), time.perf_counter() - started)

    def _outcome(self, request: CascadeRequest, result) -> LocalOutcome:
        return LocalOutcome(confidence=self.confidence_of(result, request), finish_reason=result.finish_reason,
                            validity=check_output(result.text, request.response_format), route=request.route)

    # -- the whole request -----------------------------------------------------------------------------------
    async def complete(self, request: CascadeRequest, cancel: threading.Event | None = None) -> CascadeResult:
        """Answers one request; setting ``cancel`` stops the local leg at its next token."""
        started = time.perf_counter()
        _refuse_contradiction(request)
        with self.tracer.request(request) as span:
            if request.route == "cloud" or self._local_starting(request):
                leg = self._skipped_leg(request)
            else:
                leg = await asyncio.to_thread(self.run_local, request, cancel)
            decision = decide(leg.outcome, self.policy)
            try:
                result = await self._route(request, leg, decision, started)
            except FallbackError as exc:
                self._record_failure(request, leg, decision, exc, span)
                raise
            result.latency_s = time.perf_counter() - started
            self._record(request, leg, result)
            self.tracer.finish(span, request, leg, result)
        return result

    def _local_starting(self, request: CascadeRequest) -> bool:
        """True when the local engine is starting or restarting and the cloud can take the request now."""
        cloud_usable = self.gateway is not None and not request.never_send and request.route == "auto"
        return cloud_usable and not getattr(self.runtime, "ready", True)

    @staticmethod
    def _skipped_leg(request: CascadeRequest) -> _LocalLeg:
        if request.route == "cloud":
            return _LocalLeg(None, LocalOutcome(route="cloud"))
        return _LocalLeg(None, LocalOutcome(error="the local engine is starting", failure="starting"))

    async def _route(self, request: CascadeRequest, leg: _LocalLeg, decision: Decision,
                     started: float | None = None) -> CascadeResult:
        if not decision.escalate:
            if leg.result is None:  # forced local, and the local leg failed: nothing to return
                _refuse_unanswerable(leg.outcome, "the request is forced to the local model")
                raise CloudUnavailableError(f"the local model could not answer ({leg.outcome.error}) and the "
                                            f"request is forced to the local model")
            return self._local_result(leg, decision, "local")
        if self.gateway is None or request.never_send:
            why = "request is tagged never_send" if request.never_send else "no cloud is configured"
            _refuse_unanswerable(leg.outcome, why)
            return self._degraded(leg, decision, why)
        try:
            cloud = await self.gateway.complete(self._cloud_request(request, leg.result is not None, started))
        except FallbackError as exc:
            return self._degraded(leg, decision, f"{type(exc).__name__}: {exc}")
        local_tokens = leg.result.usage.prompt_tokens if leg.result is not None else 0
        return CascadeResult("cloud", decision, cloud.text, cloud.finish_reason or "stop",
                             cloud.usage.prompt_tokens or local_tokens, cloud.usage.completion_tokens,
                             leg.outcome.confidence, leg.result, cloud, tool_calls=cloud.tool_calls or None)

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
    def _local_result(leg: _LocalLeg, decision: Decision, route: str, why: str | None = None) -> CascadeResult:
        local = leg.result
        return CascadeResult(route, decision, local.text, local.finish_reason, local.usage.prompt_tokens,
                             local.usage.completion_tokens, leg.outcome.confidence, local, degraded_reason=why)

    def _degraded(self, leg: _LocalLeg, decision: Decision, why: str) -> CascadeResult:
        if leg.result is None:
            raise CloudUnavailableError(f"the local model could not answer ({leg.outcome.error}) and the cloud "
                                        f"is unavailable: {why}")
        return self._local_result(leg, decision, "local-degraded", why)

    # -- streaming ---------------------------------------------------------------------------------------------
    async def open_stream(self, request: CascadeRequest) -> "CascadeStream":
        """Decides the route (holding the first local tokens back) and returns the stream to send.

        The route is known when this returns, so a server can put it in response headers."""
        started = time.perf_counter()
        span = self.tracer.start(request, stream=True)
        try:
            opened = await self._open_stream(request, span, started)
        except BaseException as exc:
            self.tracer.fail(span, exc)
            self.tracer.end(span)
            raise
        if span is None:
            return opened
        return CascadeStream(opened.route, self._traced(span, opened.items, started))

    async def _traced(self, span, items: AsyncIterator[object], started: float) -> AsyncIterator[object]:
        """``items`` as they are, ending the request's span when the stream ends, fails or is abandoned."""
        waiting_for_first = True
        try:
            async for item in items:
                if waiting_for_first and isinstance(item, StreamPiece):
                    self.tracer.first_chunk(span, time.perf_counter() - started)
                    waiting_for_first = False
                yield item
        except (GeneratorExit, asyncio.CancelledError):
            self.tracer.cancelled(span)
            raise
        except Exception as exc:
            self.tracer.fail(span, exc)
            raise
        finally:
            self.tracer.end(span)

    async def _open_stream(self, request: CascadeRequest, span, started: float) -> "CascadeStream":
        _refuse_contradiction(request)
        if request.route == "cloud" or self._local_starting(request):
            leg = self._skipped_leg(request)
            decision = decide(leg.outcome, self.policy)
            cloud = self._stream_cloud(request, lambda: (leg, decision), started, span)
            try:
                return CascadeStream("cloud", await _primed(cloud))  # a cloud that fails says so before headers
            except FallbackError as exc:
                self._record_failure(request, leg, decision, exc, span)
                raise
        bridge = _LocalStreamBridge(self, request)
        held = await bridge.hold(lambda tokens: self._hold_done(request, tokens))
        decision = self._hold_decision(request, bridge)
        cloud_usable = self.gateway is not None and not request.never_send and request.route == "auto"
        if decision.escalate and cloud_usable:
            return await self._escalate_stream(request, bridge, held, started, span, decision)
        if bridge.failed():  # say so before any header is sent, not in-band after a 200
            leg = bridge.leg()
            _refuse_unanswerable(leg.outcome, "request is tagged never_send" if request.never_send else
                                 "the cloud is not configured or not asked for")
            error = CloudUnavailableError(f"the local model could not answer: {leg.outcome.error}")
            self._record_failure(request, leg, decide(leg.outcome, self.policy), error, span)
            raise error
        if decision.escalate and request.route == "auto":
            why = "request is tagged never_send" if request.never_send else "no cloud is configured"
            return CascadeStream("local-degraded", self._stream_local(request, bridge, held, started, span,
                                                                      degraded=(decision, why)))
        return CascadeStream("local", self._stream_local(request, bridge, held, started, span))

    def _hold_done(self, request: CascadeRequest, tokens: list) -> bool:
        """Whether a stream may stop holding after ``tokens``: the longest hold is reached, the early floor
        is crossed, or the running confidence is safely above the threshold. A stream forced to the local
        model holds only its first token (a failure before it is still an HTTP status, not an in-band error)."""
        logprobs = [token.logprob for token in tokens]
        if request.route != "auto":
            return len(logprobs) >= 1
        if len(logprobs) >= self.commit_after_tokens or stop_early(logprobs, self.policy):
            return True
        floor_pending = self.policy.early_floor is not None and len(logprobs) < self.policy.early_min_tokens
        if len(logprobs) < self.hold_min_tokens or floor_pending:  # never commit before the floor could judge
            return False
        confidence = self.confidence_of_tokens(tokens, request)
        return confidence is not None and confidence >= self.policy.threshold + self.hold_margin

    def _hold_decision(self, request: CascadeRequest, bridge: "_LocalStreamBridge") -> Decision:
        """The policy's decision on what the hold produced: the whole answer when it ended inside the hold,
        else the tokens held so far (the same threshold; the early floor may escalate sooner)."""
        if bridge.ended():
            return decide(bridge.leg().outcome, self.policy)
        if stop_early([token.logprob for token in bridge.tokens], self.policy):
            return decide(LocalOutcome(stopped_early=True, route=request.route), self.policy)
        running = LocalOutcome(confidence=self.confidence_of_tokens(bridge.tokens, request), route=request.route)
        return decide(running, self.policy)

    async def _escalate_stream(self, request, bridge, held, started, span, decision: Decision) -> "CascadeStream":
        """Tries the cloud up to its first chunk while the local leg keeps going; the local answer streams
        (marked local-degraded) if the cloud fails before anything was sent."""
        cloud = self._stream_cloud(request, lambda: self._early_leg(bridge, decision), started, span,
                                   local_answer_ready=not bridge.failed())
        try:
            primed = await _primed(cloud)
        except FallbackError as exc:
            if bridge.failed():
                self._record_failure(request, *self._early_leg(bridge, decision), exc, span)
                raise
            why = f"the cloud failed before answering: {type(exc).__name__}: {exc}"
            return CascadeStream("local-degraded", self._stream_local(request, bridge, held, started, span,
                                                                      degraded=(decision, why)))
        bridge.cancel()
        return CascadeStream("cloud", primed)

    def _early_leg(self, bridge, decision: Decision) -> tuple[_LocalLeg, Decision]:
        """What the local leg did before the stream escalated, and the decision the hold took."""
        leg = bridge.leg(stopped_early=not bridge.ended())
        return leg, (decision if leg.result is not None else decide(leg.outcome, self.policy))

    async def _stream_local(self, request, bridge, held, started, span,
                            degraded: tuple[Decision, str] | None = None) -> AsyncIterator[object]:
        try:
            for piece in held:
                yield piece
            async for piece in bridge.rest():
                yield piece
        except (GeneratorExit, asyncio.CancelledError):
            self._record_cancelled(request, started)
            raise
        finally:
            bridge.cancel()
        leg = bridge.leg()
        decision = decide(leg.outcome, self.policy)
        if leg.result is None:
            error = CloudUnavailableError(f"the local model could not answer: {leg.outcome.error}")
            self._record_failure(request, leg, decision, error, span)
            raise error
        if degraded:
            result = self._local_result(leg, degraded[0], "local-degraded", degraded[1])
        else:
            result = self._local_result(leg, decision, "local")
            result.policy_wanted_cloud = decision.escalate and request.route == "auto"
        result.latency_s = time.perf_counter() - started
        self._settle(request, leg, result, span)
        yield result

    async def _stream_cloud(self, request, leg_and_decision, started, span,
                            local_answer_ready: bool = False) -> AsyncIterator[object]:
        """The cloud's pieces, then its ``CascadeResult``; ``leg_and_decision()`` gives what the local leg did
        (read at the end, once the local leg has stopped)."""
        if self.gateway is None:
            raise CloudUnavailableError("the request asked for the cloud and no cloud is configured")
        texts, response = [], None
        try:
            async for chunk in self.gateway.stream(self._cloud_request(request, local_answer_ready, started)):
                if chunk.text:
                    texts.append(chunk.text)
                    yield StreamPiece(chunk.text, None)
                response = chunk.response or response
        except FallbackError as exc:
            if texts:  # content already reached the client; before that, the caller decides (and records)
                self._record_failure(request, *leg_and_decision(), exc, span)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            self._record_cancelled(request, started, provider=self._provider_of(None))
            raise
        usage = response.usage if response is not None else None
        leg, decision = leg_and_decision()
        result = CascadeResult("cloud", decision, "".join(texts),
                               (response.finish_reason if response else None) or "stop",
                               usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                               leg.outcome.confidence, leg.result, response,
                               tool_calls=(response.tool_calls if response else None) or None)
        result.latency_s = time.perf_counter() - started
        self._settle(request, leg, result, span)
        yield result

    # -- ledger --------------------------------------------------------------------------------------------------
    def _record(self, request: CascadeRequest, leg: _LocalLeg, result: CascadeResult) -> None:
        if self.ledger is None:
            return
        from fallback.ledger import LedgerEntry

        local, cloud = leg.result, result.cloud
        provider = self._provider_of(cloud)
        entry = LedgerEntry(
            route=result.route_taken, reason=result.decision.reason.value, confidence=result.confidence,
            local_tokens_in=local.usage.prompt_tokens if local else 0,
            local_tokens_out=local.usage.completion_tokens if local else 0, local_latency_s=leg.latency_s,
            cloud_tokens_in=cloud.usage.prompt_tokens if cloud else 0,
            cloud_tokens_out=cloud.usage.completion_tokens if cloud else 0,
            cloud_latency_s=cloud.latency_s if cloud else 0.0, cloud_cost_usd=cloud.cost_usd if cloud else 0.0,
            provider=cloud.provider if cloud else None,
            price_input_per_mtok=provider.price_input_per_mtok if provider else None,
            price_output_per_mtok=provider.price_output_per_mtok if provider else None,
            task=request.task, redaction_count=sum((cloud.redaction_counts or {}).values()) if cloud else 0)
        result.ledger_id = self._store(entry)

    def _store(self, entry) -> str | None:
        """Writes a ledger row; a ledger that cannot be written is logged, never allowed to change what the
        client gets (an answer already paid for is not thrown away over bookkeeping)."""
        from fallback.errors import LedgerError

        try:
            return self.ledger.record(entry)
        except LedgerError as exc:
            log.warning("ledger row not written: %s", exc)
            return None

    def _settle(self, request: CascadeRequest, leg: _LocalLeg, result: CascadeResult, span) -> None:
        """A streamed request's end: its ledger row and its span tree."""
        self._record(request, leg, result)
        self.tracer.finish(span, request, leg, result)

    def _record_failure(self, request: CascadeRequest, leg: _LocalLeg, decision: Decision,
                        error: Exception, span=None) -> None:
        """One ``failed`` row for a request that ends in ``error`` (what it cost the cloud is not known), and
        the request's span marked failed."""
        self.tracer.fail(span, error, leg)
        if self.ledger is None:
            return
        from fallback.ledger import LedgerEntry

        local = leg.result
        provider = getattr(error, "provider", None)
        self._store(LedgerEntry(
            route="failed", reason=decision.reason.value, confidence=leg.outcome.confidence,
            local_tokens_in=local.usage.prompt_tokens if local else 0,
            local_tokens_out=local.usage.completion_tokens if local else 0, local_latency_s=leg.latency_s,
            provider=provider, task=request.task, error=type(error).__name__))

    def _record_cancelled(self, request: CascadeRequest, started: float, provider=None) -> None:
        """One ``cancelled`` row for a stream the client abandoned; ``provider`` is set when the cloud was
        streaming (what it cost is not known: no usage came back)."""
        if self.ledger is None:
            return
        from fallback.ledger import LedgerEntry

        self._store(LedgerEntry(route="cancelled", reason="client_disconnected", task=request.task,
                                local_latency_s=None if provider else time.perf_counter() - started,
                                provider=provider.name if provider else None))

    def _provider_of(self, cloud):
        if self.gateway is None:
            return None
        providers = self.gateway.config.providers
        named = [provider for provider in providers if cloud is not None and provider.name == cloud.provider]
        return (named or providers or [None])[0]


@dataclass
class StreamPiece:
    """A piece of streamed text and, for local tokens, the ``TokenLogprob`` it came from."""

    text: str
    token: object = None


@dataclass
class CascadeStream:
    """The route taken and the stream: ``StreamPiece`` items, then the ``CascadeResult`` last."""

    route: str
    items: AsyncIterator[object]


async def _primed(items: AsyncIterator[object]) -> AsyncIterator[object]:
    """Runs ``items`` up to its first item now (so its failure can still become an HTTP status), then
    replays that item and the rest."""
    first = await items.__anext__()

    async def replay() -> AsyncIterator[object]:
        yield first
        async for item in items:
            yield item

    return replay()


class CloudUnavailableError(FallbackError):
    """Neither leg could answer: the local model failed and the cloud is unavailable or not configured."""


def _json_fields(request: CascadeRequest | None, tokens) -> tuple[list[str | None] | None, list[str]]:
    """For a JSON answer: which key's value each token carries (None: structure), and the schema's keys."""
    response_format = request.response_format if request is not None else None
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return None, []
    from fallback.structured import token_fields

    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    return token_fields([token.text for token in tokens]), list((schema.get("properties") or {}))


def _margins(tokens) -> list[float] | None:
    """Each token's margin over the best alternative the model offered, when alternatives were asked for."""
    if not tokens or not all(token.top for token in tokens):
        return None
    from fallback.confidence import token_margins

    return token_margins([t.logprob for t in tokens], [[(a.token_id, a.logprob) for a in t.top] for t in tokens],
                         [t.token_id for t in tokens])


def failure_kind(exc: Exception) -> str | None:
    """"crashed" / "starting" for the engine process's own failures (they have their own reasons)."""
    if isinstance(exc, EngineCrashedError):
        return "crashed"
    if isinstance(exc, EngineStartingError):
        return "starting"
    return None


def _refuse_contradiction(request: CascadeRequest) -> None:
    """A request forced to the cloud and tagged never_send can never be answered: the caller's mistake."""
    if request.route == "cloud" and request.never_send:
        raise PrivacyRefusalError("the request asks for the cloud (X-Edge-Route: cloud) and is tagged never_send; "
                                  "nothing was sent")


def _refuse_unanswerable(outcome: LocalOutcome, why: str) -> None:
    """An input too long for the local model, with no cloud to take it, is refused as the caller's error."""
    if outcome.input_too_long:
        raise InvalidRequestError(f"{outcome.error}: too long for the local model, and {why}")


class _LocalStreamBridge:
    """Runs the local stream in a thread and hands its pieces to the event loop through a queue."""

    _END = object()

    def __init__(self, cascade: Cascade, request: CascadeRequest) -> None:
        self.cascade, self.request = cascade, request
        self.loop = asyncio.get_running_loop()
        self.pieces: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.tokens: list = []  # the tokens held back so far
        self.started = time.perf_counter()
        self._leg: _LocalLeg | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            stream = self.cascade.runtime.stream(**self.cascade._local_options(self.request))
            for event in stream:
                if self.cancelled.is_set():
                    stream.close()
                    break
                self._hand_over(StreamPiece(event.text, event.token))
            result = stream.result
            self._leg = _LocalLeg(result, self.cascade._outcome(self.request, result),
                                  time.perf_counter() - self.started)
        except EdgeRuntimeError as exc:
            self._leg = _LocalLeg(None, LocalOutcome(error=f"{type(exc).__name__}: {exc}", route=self.request.route,
                                                     input_too_long=isinstance(exc, PromptTooLongError),
                                                     failure=failure_kind(exc)))
            if isinstance(exc, InvalidRequestError):
                self._leg.outcome = LocalOutcome(error=str(exc))
                self._invalid = exc
        finally:
            self._hand_over(self._END)

    def _hand_over(self, item: object) -> None:
        """Queues ``item`` for the event loop; a loop that is gone (server shut down) means nobody listens."""
        try:
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, item)
        except RuntimeError:
            self.cancelled.set()

    async def hold(self, done: Callable[[list], bool]) -> list[StreamPiece]:
        """Collects pieces until ``done(held tokens)`` says the decision can be made, or the local stream
        ends; ``tokens`` then holds the held tokens."""
        held: list[StreamPiece] = []
        self.tokens = []
        while not done(self.tokens):
            piece = await self.pieces.get()
            if piece is self._END:
                self.pieces.put_nowait(self._END)
                self._ended = True
                break
            held.append(piece)
            if piece.token is not None:
                self.tokens.append(piece.token)
        invalid = getattr(self, "_invalid", None)
        if invalid is not None:
            raise invalid
        return held

    def ended(self) -> bool:
        """True when the local stream ended inside the hold (its whole answer is known)."""
        return getattr(self, "_ended", False)

    async def rest(self) -> AsyncIterator[str]:
        while True:
            piece = await self.pieces.get()
            if piece is self._END:
                return
            yield piece

    def cancel(self) -> None:
        self.cancelled.set()

    def failed(self) -> bool:
        """True when the local leg already ended without an answer (known once ``hold`` returned)."""
        return self._leg is not None and self._leg.result is None

    def leg(self, stopped_early: bool = False) -> _LocalLeg:
        self.thread.join(timeout=60)
        leg = self._leg or _LocalLeg(None, LocalOutcome(error="local leg did not finish"))
        if stopped_early:
            leg.outcome = LocalOutcome(confidence=leg.outcome.confidence, stopped_early=leg.result is not None,
                                       error=leg.outcome.error, input_too_long=leg.outcome.input_too_long,
                                       failure=leg.outcome.failure)
        return leg
