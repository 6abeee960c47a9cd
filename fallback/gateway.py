"""The cloud side of the fallback: send one chat request to OpenAI-compatible providers, safely and on time.

``CloudGateway.complete`` / ``CloudGateway.stream`` do, in order:

1. refuse a ``never_send`` request (``PrivacyRefusalError``) before any I/O;
2. redact the messages (unless disabled) and keep the counts;
3. try providers in configured order, skipping one whose circuit breaker is open;
4. give each attempt ``min(provider.timeout_s, time left before the deadline)``, wall-clock;
5. retry connect errors, timeouts, 408, 429 and 5xx with exponential backoff and full jitter, waiting at
   least ``Retry-After`` (seconds or HTTP date) on 429/503; a wait that would cross the deadline is not
   taken, the next provider gets the time left instead. A malformed answer is retried once; other 4xx
   move on to the next provider without a retry and without counting against the breaker, and neither
   does an attempt that the deadline cut short;
6. raise ``AllProvidersFailedError`` (every provider's last error; ``deadline_exceeded`` when time ran out)
   when nothing worked.

Deadlines are wall-clock. One instant bounds the whole escalation: connecting, every attempt, reading the
body or the stream (a body that drips in a byte at a time is cut when time is up, although no single read
ever waits long), and the backoff sleeps. It is the earlier of

* the overall deadline (``CloudRequest.deadline_s``, else ``GatewayConfig.overall_deadline_s``), counted
  from the start of the caller's request: ``CloudRequest.elapsed_s`` says how long it ran before escalating;
* when ``CloudRequest.local_answer_ready``, the escalation budget, counted from the gateway call: the
  request's ``escalation_budget_s``, else the provider's, else ``GatewayConfig.escalation_budget_s``. A
  caller holding a usable local answer should not keep a person waiting on a slow cloud; when the budget
  runs out the gateway raises like any other deadline and the caller serves its local answer. For a stream
  the budget bounds the wait for its first content chunk; once the cloud's answer is arriving, the overall
  deadline alone bounds the rest (a long healthy stream is not cut at the budget).

Streams are retried only until their first content chunk: once text has reached the caller, a broken,
cut or stalled stream raises ``StreamInterruptedError`` instead of starting again (which would repeat text).
After the first content chunk each read may take up to ``provider.timeout_s`` and the whole stream must end
by the deadline: a stream still running then ends with ``StreamInterruptedError`` (``chunks_yielded`` says
how much was delivered), which does not count against the provider's breaker. A stream counts as a breaker
success once its first chunk arrives; a later break adds a failure.

The gateway keeps no per-request state on itself, so one instance may serve concurrent requests. Its parts:
``fallback.retry_policy`` (what to retry, backoff, deadlines; pure), ``fallback.transport`` (httpx errors
translated into ``fallback.errors`` types at the boundary, SSE parsing), ``fallback.cloud_wire`` (the
provider's answer, validated), ``fallback.cloud_types`` (the public request/response types, re-exported
here) and ``fallback.gateway_call`` (one request in flight).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import httpx

from fallback.breaker import CircuitBreaker
from fallback.cloud_types import Attempt, CloudChunk, CloudRequest, CloudResponse, Usage, estimate_tokens
from fallback.cloud_wire import WireChunk, WireCompletion, parse_json, validate_wire
from fallback.errors import (
    CircuitOpenError, PrivacyRefusalError, ProviderError, ProviderHTTPError,
    ProviderProtocolError, ProviderTimeoutError, StreamInterruptedError,
)
from fallback.gateway_call import Call, StreamTotals
from fallback.providers import GatewayConfig, ProviderConfig
from fallback.redaction import Redactor, redact_messages
from fallback.retry_policy import (
    backoff_s, counts_as_failure, escalation_deadline, is_retryable, parse_retry_after,
)
from fallback.transport import OpenStream, raise_for_status, read_first_chunks, translate

__all__ = ["Attempt", "CloudChunk", "CloudGateway", "CloudRequest", "CloudResponse", "Usage", "counts_as_failure",
           "estimate_tokens", "is_retryable", "parse_retry_after"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None  # not inside asyncio (no loop, or another anyio backend such as trio)


def _close_on_its_loop(client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop | None) -> None:
    """Close ``client`` on the asyncio loop that owns its connections; a closed loop took them along."""
    if loop is None or loop.is_closed():
        return
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
    else:
        loop.run_until_complete(client.aclose())


class CloudGateway:
    """Sends chat requests to the configured providers; see the module docstring for the policy.

    ``breaker_clock`` drives the circuit breakers (inject a fake one in tests); ``sleep`` and ``rng``
    drive the backoff. ``environ`` is where API keys are read from (default ``os.environ``). Use it from
    one event loop at a time; ``complete_sync`` may be called from any thread.
    """

    def __init__(self, config: GatewayConfig, *, environ: Mapping[str, str] | None = None,
                 breaker_clock: Callable[[], float] = time.monotonic, sleep: Sleep = anyio.sleep,
                 rng: random.Random | None = None, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.breakers = {p.name: CircuitBreaker(config.breaker.settings(), clock=breaker_clock)
                         for p in config.providers}
        self._keys = {p.name: p.api_key(environ) for p in config.providers}
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client = client
        self._owns_client = client is None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._ssl_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"CloudGateway(providers={[p.name for p in self.config.providers]})"

    # ------------------------------------------------------------ public API

    async def complete(self, request: CloudRequest, *, redactor: Redactor | None = None) -> CloudResponse:
        """One whole answer, from the first provider that gives one.

        Pass a ``redactor`` to keep the placeholder mapping (``redactor.restore(response.text)`` puts the
        user's own values back); by default a fresh one with the configured kinds is used.
        """
        return await self._complete(request, self._shared_client, redactor)

    async def stream(self, request: CloudRequest, *,
                     redactor: Redactor | None = None) -> AsyncIterator[CloudChunk]:
        """Chunks as they arrive; the last one carries ``response``. See the module docstring on retries.

        Close the iterator (``contextlib.aclosing``) if you stop early, so the connection is released.
        """
        call = self._start(request, self._shared_client, redactor)
        for provider in self.config.providers:
            opened = await self._try_provider(provider, call, self._open_stream)
            if opened is not None:
                call.deadline = self._answering_deadline(call)
                async with contextlib.aclosing(self._relay(provider, call, opened)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            if call.deadline_hit:
                break
        raise call.failure()

    def complete_sync(self, request: CloudRequest, *, redactor: Redactor | None = None) -> CloudResponse:
        """Blocking ``complete`` for scripts and the CLI.

        Uses a short-lived HTTP client of its own (an AsyncClient belongs to the loop that used it). When
        called from a thread whose event loop is running, it runs in a worker thread and blocks that loop
        until done; async code should ``await complete()`` instead.
        """
        if _running_asyncio_loop() is None:
            return asyncio.run(self._complete_with_own_client(request, redactor))
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="complete_sync") as pool:
            return pool.submit(asyncio.run, self._complete_with_own_client(request, redactor)).result()

    async def aclose(self) -> None:
        """Close the shared client; one left behind by a finished event loop can only be dropped."""
        client, self._client = self._client, None
        if client is not None and self._owns_client and self._client_loop is _running_asyncio_loop():
            await client.aclose()

    def close(self) -> None:
        """Sync twin of ``aclose`` for code with no running event loop."""
        if _running_asyncio_loop() is not None:
            raise RuntimeError("CloudGateway.close() called inside a running event loop; use await aclose()")
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            _close_on_its_loop(client, self._client_loop)

    async def __aenter__(self) -> CloudGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> CloudGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ one request

    def _new_client(self) -> httpx.AsyncClient:
        """A client sharing one TLS context: building a context (loading CA certificates) costs ~40 ms."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return httpx.AsyncClient(verify=self._ssl_context, follow_redirects=False)

    def _shared_client(self) -> httpx.AsyncClient:
        """The long-lived client; replaced when used from a new event loop (its connections die with the old one)."""
        loop = _running_asyncio_loop()
        if self._client is None or (self._owns_client and loop is not self._client_loop):
            self._client, self._client_loop = self._new_client(), loop
        return self._client

    async def _complete_with_own_client(self, request: CloudRequest, redactor: Redactor | None) -> CloudResponse:
        async with self._new_client() as client:
            return await self._complete(request, lambda: client, redactor)

    async def _complete(self, request: CloudRequest, client: Callable[[], httpx.AsyncClient],
                        redactor: Redactor | None) -> CloudResponse:
        call = self._start(request, client, redactor)
        for provider in self.config.providers:
            answer = await self._try_provider(provider, call, self._post_once)
            if answer is not None:
                return self._whole_response(provider, call, *answer)
            if call.deadline_hit:
                break
        raise call.failure()

    def _start(self, request: CloudRequest, client: Callable[[], httpx.AsyncClient],
               redactor: Redactor | None) -> Call:
        """Check privacy, redact, and start the escalation clock (before the client, which may take a while)."""
        started = time.monotonic()
        if request.never_send:
            raise PrivacyRefusalError("request is tagged never_send; it was not sent to any cloud provider")
        messages, counts = request.messages, {}
        if self.config.redact:
            redacted = redact_messages(request.messages, self.config.redaction_kinds, redactor=redactor)
            messages, counts = redacted.messages, redacted.counts
        call = Call(request, messages, counts, client(), started, deadline=started)
        call.deadline = self._deadline(call, self.config.providers[0])
        return call

    def _deadline(self, call: Call, provider: ProviderConfig) -> float:
        """When time is up for ``provider`` on this call (see the module docstring)."""
        request = call.request
        budget_s = None
        if request.local_answer_ready:
            budget_s = request.escalation_budget_s or provider.escalation_budget_s or self.config.escalation_budget_s
        return escalation_deadline(request_started=call.started - request.elapsed_s, escalation_started=call.started,
                                   overall_s=request.deadline_s or self.config.overall_deadline_s,
                                   escalation_budget_s=budget_s)

    def _answering_deadline(self, call: Call) -> float:
        """The deadline once a stream's first content chunk arrived: the escalation budget bounded the wait for
        an answer while a local one was ready; the person now sees the cloud's answer arrive, so only the
        overall deadline bounds the rest of it (a long healthy stream is not cut at the budget)."""
        request = call.request
        return escalation_deadline(request_started=call.started - request.elapsed_s, escalation_started=call.started,
                                   overall_s=request.deadline_s or self.config.overall_deadline_s,
                                   escalation_budget_s=None)

    # ------------------------------------------------------------ retries at one provider

    async def _try_provider(self, provider: ProviderConfig, call: Call,
                            attempt: Callable[[ProviderConfig, Call, float], Awaitable[T]]) -> T | None:
        """Run ``attempt`` with retries; the result, or None once this provider is given up on."""
        breaker = self.breakers[provider.name]
        call.deadline = self._deadline(call, provider)
        last_error: Exception | None = None
        protocol_errors = 0
        for retry in range(provider.max_retries + 1):
            if call.remaining() <= 0:
                call.deadline_hit = True
                last_error = ProviderTimeoutError(provider.name, f"deadline reached {call.elapsed():.2f} s into the "
                                                                 f"escalation, before this attempt")
                break
            if not breaker.allow():
                last_error = CircuitOpenError(provider.name)
                call.note(provider.name, retry, time.monotonic(), breaker, last_error)
                break
            try:
                return await self._attempt(provider, call, retry, attempt)
            except ProviderError as error:
                last_error = error
                protocol_errors += isinstance(error, ProviderProtocolError)
                delay = self._retry_delay(provider, call, retry, error, protocol_errors)
            if delay is None:
                break
            await self._sleep(delay)
        call.errors.append(last_error)  # type: ignore[arg-type]
        return None

    async def _attempt(self, provider: ProviderConfig, call: Call, retry: int,
                       attempt: Callable[[ProviderConfig, Call, float], Awaitable[T]]) -> T:
        breaker = self.breakers[provider.name]
        timeout = min(provider.timeout_s, call.remaining())
        started = time.monotonic()
        try:
            result = await attempt(provider, call, timeout)
        except ProviderError as error:
            cut_short = timeout < provider.timeout_s and isinstance(error, ProviderTimeoutError)
            call.deadline_hit = call.deadline_hit or cut_short
            self._record(breaker, error, cut_short=cut_short)
            call.note(provider.name, retry, started, breaker, error)
            raise
        except BaseException:
            breaker.record_ignored()  # cancelled: says nothing about the provider
            raise
        breaker.record_success()
        call.note(provider.name, retry, started, breaker, status=200)
        return result

    @staticmethod
    def _record(breaker: CircuitBreaker, error: ProviderError, *, cut_short: bool) -> None:
        """A timeout of an attempt the overall deadline cut short is not the provider's fault."""
        if cut_short or not counts_as_failure(error):
            breaker.record_ignored()
        else:
            breaker.record_failure()

    def _retry_delay(self, provider: ProviderConfig, call: Call, retry: int, error: ProviderError,
                     protocol_errors: int) -> float | None:
        """Seconds to wait before the next try, or None to give up on this provider."""
        if not is_retryable(error) or retry >= provider.max_retries:
            return None
        if isinstance(error, ProviderProtocolError) and protocol_errors > 1:
            return None  # a malformed answer gets one more chance, not two
        delay = backoff_s(retry, base_s=self.config.backoff_base_s, cap_s=self.config.backoff_max_s,
                          jitter=self.config.jitter, rng=self._rng)
        if isinstance(error, ProviderHTTPError) and error.retry_after_s is not None:
            delay = max(delay, error.retry_after_s)
        if delay >= call.remaining():
            return None  # sleeping would cross the deadline
        return delay

    # ------------------------------------------------------------ HTTP

    def _http_args(self, provider: ProviderConfig, timeout: float) -> dict[str, Any]:
        headers = dict(provider.extra_headers)
        if self._keys[provider.name]:
            headers["Authorization"] = f"Bearer {self._keys[provider.name]}"
        limits = httpx.Timeout(timeout, connect=min(provider.connect_timeout_s, timeout))
        return {"headers": headers, "timeout": limits}

    async def _post_once(self, provider: ProviderConfig, call: Call,
                         timeout: float) -> tuple[WireCompletion, dict[str, Any]]:
        """One POST; the validated answer and its raw JSON (validated here, so a bad shape is retried)."""
        url = f"{provider.base_url}/chat/completions"
        try:
            with anyio.fail_after(timeout):
                answer = await call.client.post(url, json=call.body(provider, stream=False),
                                                **self._http_args(provider, timeout))
        except TimeoutError as exc:
            raise ProviderTimeoutError(provider.name, f"no answer within {timeout:.2f} s") from exc
        except httpx.HTTPError as exc:
            raise translate(provider.name, exc) from exc
        raise_for_status(provider.name, answer)
        payload = parse_json(provider.name, answer.content)
        return validate_wire(provider.name, WireCompletion, payload), payload

    @staticmethod
    def _whole_response(provider: ProviderConfig, call: Call, wire: WireCompletion,
                        payload: dict[str, Any]) -> CloudResponse:
        choice = wire.choices[0]
        text = choice.message.content or ""
        return call.response(provider, text, choice.finish_reason, wire.usage, wire.model, payload,
                             choice.message.tool_calls)

    async def _open_stream(self, provider: ProviderConfig, call: Call, timeout: float) -> OpenStream:
        """Send the request and read up to the first content chunk, all within ``timeout``."""
        request = call.client.build_request("POST", f"{provider.base_url}/chat/completions",
                                            json=call.body(provider, stream=True),
                                            **self._http_args(provider, timeout))
        response: httpx.Response | None = None
        try:
            with anyio.fail_after(timeout):
                response = await call.client.send(request, stream=True)
                return await read_first_chunks(provider.name, response)
        except BaseException as exc:
            if response is not None:
                await response.aclose()
            if isinstance(exc, TimeoutError):
                raise ProviderTimeoutError(provider.name, f"no first chunk within {timeout:.2f} s") from exc
            if isinstance(exc, httpx.HTTPError):
                raise translate(provider.name, exc) from exc
            raise

    async def _relay(self, provider: ProviderConfig, call: Call,
                     opened: OpenStream) -> AsyncGenerator[CloudChunk, None]:
        totals, delivered = StreamTotals(), 0
        try:
            pending, ended = list(opened.buffered), opened.ended
            while pending or not ended:
                chunk = pending.pop(0) if pending else await self._next_chunk(provider, call, opened, delivered)
                ended = ended or chunk is None
                out = totals.add(chunk) if chunk is not None else None
                if out is not None:
                    delivered += 1
                    yield out
        finally:
            await opened.reader.aclose()
        tool_calls = [totals.tool_calls[i] for i in sorted(totals.tool_calls)] or None
        raw = {"object": "chat.completion.stream", "chunks": opened.reader.raw_chunks}
        final = call.response(provider, "".join(totals.text), totals.finish_reason, totals.usage,
                              totals.model, raw, tool_calls)
        yield CloudChunk(text="", finish_reason=totals.finish_reason, response=final)

    async def _next_chunk(self, provider: ProviderConfig, call: Call, opened: OpenStream,
                          delivered: int) -> WireChunk | None:
        """The next chunk after content has been delivered; any failure now is final.

        A read cut short by the deadline is not the provider's fault: it does not count against its breaker.
        """
        timeout = max(0.0, min(provider.timeout_s, call.remaining()))
        cut_short = timeout < provider.timeout_s
        cause: BaseException
        try:
            with anyio.fail_after(timeout):
                return await opened.reader.next_chunk()
        except TimeoutError as exc:
            reason, cause = f"no chunk within {timeout:.2f} s", exc
            if cut_short:
                call.deadline_hit = True
                reason = f"deadline reached {call.elapsed():.2f} s into the escalation"
        except httpx.HTTPError as exc:
            reason, cause, cut_short = translate(provider.name, exc).reason, exc, False
        except ProviderProtocolError as exc:
            reason, cause, cut_short = exc.reason, exc, False
        breaker = self.breakers[provider.name]
        if cut_short:
            breaker.record_ignored()
        else:
            breaker.record_failure()
        raise StreamInterruptedError(provider.name, reason, chunks_yielded=delivered) from cause
