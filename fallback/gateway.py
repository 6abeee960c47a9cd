"""The cloud side of the fallback: send one chat request to OpenAI-compatible providers, safely and on time.

``CloudGateway.complete`` / ``CloudGateway.stream`` do, in order:

1. refuse a ``never_send`` request (``PrivacyRefusalError``) before any I/O;
2. redact the messages (unless disabled) and keep the counts;
3. try providers in configured order, skipping one whose circuit breaker is open;
4. give each attempt ``min(provider.timeout_s, time left before the overall deadline)``;
5. retry connect errors, timeouts, 408, 429 and 5xx with exponential backoff and full jitter, waiting at
   least ``Retry-After`` (seconds or HTTP date) on 429/503; a wait that would cross the deadline is not
   taken, the next provider gets the time left instead. A malformed answer is retried once; other 4xx
   move on to the next provider without a retry and without counting against the breaker, and neither
   does an attempt that the deadline cut short;
6. raise ``AllProvidersFailedError`` (every provider's last error) when nothing worked.

Usage comes from the provider; when it sends none, tokens are estimated at four characters each and
``Usage.estimated`` is set. Cost is usage times the provider's configured prices.

Streams are retried only until their first content chunk: once text has reached the caller, a broken,
cut or stalled stream raises ``StreamInterruptedError`` instead of starting again (which would repeat text).
After the first content chunk each read may take up to ``provider.timeout_s`` and the whole stream must end
before the overall deadline. A stream counts as a breaker success once its first chunk arrives; a later
break adds a failure.

The gateway keeps no per-request state on itself, so one instance may serve concurrent requests.
httpx errors are translated into ``fallback.errors`` types at the boundary; retries are decided by type.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import json
import math
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fallback.breaker import CircuitBreaker
from fallback.errors import (
    AllProvidersFailedError, CircuitOpenError, PrivacyRefusalError, ProviderConnectError, ProviderError,
    ProviderHTTPError, ProviderProtocolError, ProviderRateLimitedError, ProviderTimeoutError,
    StreamInterruptedError,
)
from fallback.providers import GatewayConfig, ProviderConfig
from fallback.redaction import Redactor, redact_messages

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


# ================================================================ public data

class CloudRequest(BaseModel):
    """One chat request for the cloud; ``deadline_s`` overrides the config's overall deadline.

    ``extra_body`` adds provider-specific fields (``seed``, ``top_p``...); it cannot replace ``model``,
    ``messages`` or ``stream``, and a key set to None is dropped (``{"stream_options": None}`` for a
    provider that rejects it).
    """

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)
    never_send: bool = False
    deadline_s: float | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False  # True when the provider sent no usage and these are len(text)/4 guesses

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Attempt:
    """One try at one provider: ``status`` is the HTTP status if one came back, ``error`` the error type."""

    provider: str
    retry: int
    status: int | None
    error: str | None
    latency_s: float
    breaker_state: str


@dataclass(frozen=True)
class CloudResponse:
    text: str
    finish_reason: str | None
    usage: Usage
    provider: str
    model: str
    attempts: list[Attempt]
    latency_s: float
    cost_usd: float
    raw: dict[str, Any] = field(repr=False)
    redaction_counts: dict[str, int]
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class CloudChunk:
    """A piece of a streamed answer; the last chunk has ``response`` (totals, usage, cost) set."""

    text: str
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    response: CloudResponse | None = None


# ================================================================ wire format (validated at the edge)

class _WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _WireUsage(_WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _WireMessage(_WireModel):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _WireChoice(_WireModel):
    message: _WireMessage
    finish_reason: str | None = None


class _WireCompletion(_WireModel):
    model: str | None = None
    choices: list[_WireChoice] = Field(min_length=1)
    usage: _WireUsage | None = None


class _WireDelta(_WireModel):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _WireChunkChoice(_WireModel):
    index: int = 0
    delta: _WireDelta = Field(default_factory=_WireDelta)
    finish_reason: str | None = None


class _WireChunk(_WireModel):
    model: str | None = None
    choices: list[_WireChunkChoice] = Field(default_factory=list)
    usage: _WireUsage | None = None

    def first(self) -> _WireChunkChoice | None:
        return next((c for c in self.choices if c.index == 0), None)

    def carries_content(self) -> bool:
        choice = self.first()
        return choice is not None and bool(choice.delta.content or choice.delta.tool_calls or choice.finish_reason)


def _parse_json(provider: str, content: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(content)
    except ValueError as exc:
        raise ProviderProtocolError(provider, f"answer is not valid JSON ({len(content)} bytes)") from exc
    if not isinstance(payload, dict):
        raise ProviderProtocolError(provider, "answer is JSON but not an object")
    if "error" in payload and "choices" not in payload:
        raise ProviderProtocolError(provider, f"error in answer: {str(payload['error'])[:200]}")
    return payload


def _validate(provider: str, model: type[BaseModel], payload: dict[str, Any]) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:3])
        raise ProviderProtocolError(provider, f"unexpected answer shape (bad fields: {fields})") from exc


# ================================================================ policy (pure)

def is_retryable(error: ProviderError) -> bool:
    """Whether the same provider may be tried again after ``error``."""
    if isinstance(error, ProviderHTTPError):
        return error.status in (408, 429) or error.status >= 500
    if isinstance(error, StreamInterruptedError):
        return False
    return isinstance(error, (ProviderTimeoutError, ProviderConnectError, ProviderProtocolError))


def counts_as_failure(error: ProviderError) -> bool:
    """Whether ``error`` says the provider is unhealthy (a 400 or 401 says the request or key is wrong)."""
    return is_retryable(error) or isinstance(error, StreamInterruptedError)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def estimate_tokens(text: str) -> int:
    """About four characters per token: the usual rule of thumb for English with BPE tokenizers."""
    return math.ceil(len(text) / 4)


def _messages_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(parts)


# ================================================================ one request in flight

@dataclass
class _Call:
    """What one request has done so far; lives only for that request, so requests never share state."""

    request: CloudRequest
    messages: list[dict[str, Any]]
    redaction_counts: dict[str, int]
    client: httpx.AsyncClient
    started: float
    deadline: float
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    deadline_hit: bool = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def body(self, provider: ProviderConfig, *, stream: bool) -> dict[str, Any]:
        request = self.request
        options = {"max_tokens": request.max_tokens, "temperature": request.temperature, "stop": request.stop,
                   "response_format": request.response_format, "tools": request.tools,
                   "tool_choice": request.tool_choice}
        body = {**request.extra_body, **{k: v for k, v in options.items() if v is not None}}
        body.update(model=provider.model, messages=self.messages)
        if stream:
            body = {"stream_options": {"include_usage": True}, **body, "stream": True}
        return {k: v for k, v in body.items() if v is not None}

    def note(self, provider: str, retry: int, started: float, breaker: CircuitBreaker,
             error: Exception | None = None, status: int | None = None) -> None:
        if isinstance(error, ProviderHTTPError):
            status = error.status
        name = type(error).__name__ if error is not None else None
        self.attempts.append(Attempt(provider, retry, status, name, time.monotonic() - started, breaker.state))

    def failure(self) -> AllProvidersFailedError:
        return AllProvidersFailedError(self.errors, deadline_exceeded=self.deadline_hit)

    def usage(self, text: str, wire: _WireUsage | None) -> Usage:
        if wire is not None:
            return Usage(wire.prompt_tokens, wire.completion_tokens)
        return Usage(estimate_tokens(_messages_text(self.messages)), estimate_tokens(text), estimated=True)

    def response(self, provider: ProviderConfig, text: str, finish_reason: str | None,
                 wire_usage: _WireUsage | None, model: str | None, raw: dict[str, Any],
                 tool_calls: list[dict[str, Any]] | None) -> CloudResponse:
        usage = self.usage(text, wire_usage)
        return CloudResponse(
            text=text, finish_reason=finish_reason, usage=usage, provider=provider.name,
            model=model or provider.model, attempts=list(self.attempts), latency_s=self.elapsed(),
            cost_usd=provider.cost_usd(usage.prompt_tokens, usage.completion_tokens), raw=raw,
            redaction_counts=dict(self.redaction_counts), tool_calls=tool_calls)


# ================================================================ HTTP boundary

def _translate(provider: str, exc: httpx.HTTPError) -> ProviderError:
    """Map an httpx error to ours, by type."""
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(provider, reason)
    if isinstance(exc, httpx.RemoteProtocolError):
        return ProviderProtocolError(provider, reason)
    return ProviderConnectError(provider, reason)


def _error_detail(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:200] if message else ""


def _raise_for_status(provider: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
    error_type = ProviderRateLimitedError if status == 429 else ProviderHTTPError
    raise error_type(provider, status, retry_after_s=retry_after, detail=_error_detail(response))


def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines)."""

    async def events() -> AsyncIterator[str]:
        data: list[str] = []
        async for line in lines:
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                yield "\n".join(data)
                data = []
        if data:
            yield "\n".join(data)

    return events()


class _StreamReader:
    """Reads one SSE answer chunk by chunk; knows whether it ended properly."""

    def __init__(self, provider: str, response: httpx.Response) -> None:
        self.provider = provider
        self.response = response
        self.raw_chunks: list[dict[str, Any]] = []
        self._events = _sse_events(response.aiter_lines())
        self._finished = False

    async def next_chunk(self) -> _WireChunk | None:
        """The next chunk; None after ``[DONE]``. A stream that just stops is a ProviderProtocolError."""
        try:
            data = await self._events.__anext__()
        except StopAsyncIteration:
            if self._finished:
                return None  # lenient: a finish_reason arrived, only [DONE] is missing
            raise ProviderProtocolError(self.provider, "stream ended without [DONE]") from None
        if data.strip() == "[DONE]":
            return None
        payload = _parse_json(self.provider, data.encode())
        self.raw_chunks.append(payload)
        chunk: _WireChunk = _validate(self.provider, _WireChunk, payload)
        self._finished = self._finished or any(c.finish_reason for c in chunk.choices)
        return chunk

    async def aclose(self) -> None:
        await self.response.aclose()


@dataclass
class _OpenStream:
    reader: _StreamReader
    buffered: list[_WireChunk]
    ended: bool  # [DONE] arrived while opening (an empty answer)


@dataclass
class _StreamTotals:
    """What a stream has carried so far, for the final chunk's CloudResponse."""

    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: _WireUsage | None = None
    model: str | None = None
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, chunk: _WireChunk) -> CloudChunk | None:
        """Fold ``chunk`` in; returns what to hand the caller, if anything."""
        self.model = chunk.model or self.model
        self.usage = chunk.usage or self.usage
        choice = chunk.first()
        if choice is None:
            return None
        self.finish_reason = choice.finish_reason or self.finish_reason
        if choice.delta.tool_calls:
            _merge_tool_calls(self.tool_calls, choice.delta.tool_calls)
        if not (choice.delta.content or choice.delta.tool_calls):
            return None
        self.text.append(choice.delta.content or "")
        return CloudChunk(text=choice.delta.content or "", tool_calls=choice.delta.tool_calls)


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    for delta in deltas:
        slot = calls.setdefault(int(delta.get("index", len(calls))),
                                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        slot["id"] = delta.get("id") or slot["id"]
        function = delta.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""


# ================================================================ the gateway

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
               redactor: Redactor | None) -> _Call:
        """Check privacy, redact, and start the deadline clock (before the client, which may take a while)."""
        started = time.monotonic()
        if request.never_send:
            raise PrivacyRefusalError("request is tagged never_send; it was not sent to any cloud provider")
        messages, counts = request.messages, {}
        if self.config.redact:
            redacted = redact_messages(request.messages, self.config.redaction_kinds, redactor=redactor)
            messages, counts = redacted.messages, redacted.counts
        deadline = started + (request.deadline_s or self.config.overall_deadline_s)
        return _Call(request, messages, counts, client(), started, deadline)

    # ------------------------------------------------------------ retries at one provider

    async def _try_provider(self, provider: ProviderConfig, call: _Call,
                            attempt: Callable[[ProviderConfig, _Call, float], Awaitable[T]]) -> T | None:
        """Run ``attempt`` with retries; the result, or None once this provider is given up on."""
        breaker = self.breakers[provider.name]
        last_error: Exception | None = None
        protocol_errors = 0
        for retry in range(provider.max_retries + 1):
            if call.remaining() <= 0:
                call.deadline_hit = True
                last_error = ProviderTimeoutError(provider.name, "overall deadline reached before this attempt")
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

    async def _attempt(self, provider: ProviderConfig, call: _Call, retry: int,
                       attempt: Callable[[ProviderConfig, _Call, float], Awaitable[T]]) -> T:
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

    def _retry_delay(self, provider: ProviderConfig, call: _Call, retry: int, error: ProviderError,
                     protocol_errors: int) -> float | None:
        """Seconds to wait before the next try, or None to give up on this provider."""
        if not is_retryable(error) or retry >= provider.max_retries:
            return None
        if isinstance(error, ProviderProtocolError) and protocol_errors > 1:
            return None  # a malformed answer gets one more chance, not two
        delay = self._backoff(retry)
        if isinstance(error, ProviderHTTPError) and error.retry_after_s is not None:
            delay = max(delay, error.retry_after_s)
        if delay >= call.remaining():
            return None  # sleeping would cross the overall deadline
        return delay

    def _backoff(self, retry: int) -> float:
        """Exponential backoff capped at ``backoff_max_s``; full jitter draws uniformly below it."""
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** retry)
        return self._rng.uniform(0.0, ceiling) if self.config.jitter else ceiling

    # ------------------------------------------------------------ HTTP

    def _http_args(self, provider: ProviderConfig, timeout: float) -> dict[str, Any]:
        headers = dict(provider.extra_headers)
        if self._keys[provider.name]:
            headers["Authorization"] = f"Bearer {self._keys[provider.name]}"
        limits = httpx.Timeout(timeout, connect=min(provider.connect_timeout_s, timeout))
        return {"headers": headers, "timeout": limits}

    async def _post_once(self, provider: ProviderConfig, call: _Call,
                         timeout: float) -> tuple[_WireCompletion, dict[str, Any]]:
        """One POST; the validated answer and its raw JSON (validated here, so a bad shape is retried)."""
        url = f"{provider.base_url}/chat/completions"
        try:
            with anyio.fail_after(timeout):
                answer = await call.client.post(url, json=call.body(provider, stream=False),
                                                **self._http_args(provider, timeout))
        except TimeoutError as exc:
            raise ProviderTimeoutError(provider.name, f"no answer within {timeout:.2f} s") from exc
        except httpx.HTTPError as exc:
            raise _translate(provider.name, exc) from exc
        _raise_for_status(provider.name, answer)
        payload = _parse_json(provider.name, answer.content)
        return _validate(provider.name, _WireCompletion, payload), payload

    @staticmethod
    def _whole_response(provider: ProviderConfig, call: _Call, wire: _WireCompletion,
                        payload: dict[str, Any]) -> CloudResponse:
        choice = wire.choices[0]
        text = choice.message.content or ""
        return call.response(provider, text, choice.finish_reason, wire.usage, wire.model, payload,
                             choice.message.tool_calls)

    async def _open_stream(self, provider: ProviderConfig, call: _Call, timeout: float) -> _OpenStream:
        """Send the request and read up to the first content chunk, all within ``timeout``."""
        request = call.client.build_request("POST", f"{provider.base_url}/chat/completions",
                                            json=call.body(provider, stream=True),
                                            **self._http_args(provider, timeout))
        response: httpx.Response | None = None
        try:
            with anyio.fail_after(timeout):
                response = await call.client.send(request, stream=True)
                return await self._read_first_chunks(provider, response)
        except BaseException as exc:
            if response is not None:
                await response.aclose()
            if isinstance(exc, TimeoutError):
                raise ProviderTimeoutError(provider.name, f"no first chunk within {timeout:.2f} s") from exc
            if isinstance(exc, httpx.HTTPError):
                raise _translate(provider.name, exc) from exc
            raise

    @staticmethod
    async def _read_first_chunks(provider: ProviderConfig, response: httpx.Response) -> _OpenStream:
        if response.status_code >= 400:
            await response.aread()
            _raise_for_status(provider.name, response)
        reader = _StreamReader(provider.name, response)
        buffered: list[_WireChunk] = []
        while True:
            chunk = await reader.next_chunk()
            if chunk is None:
                return _OpenStream(reader, buffered, ended=True)
            buffered.append(chunk)
            if chunk.carries_content():
                return _OpenStream(reader, buffered, ended=False)

    async def _relay(self, provider: ProviderConfig, call: _Call,
                     opened: _OpenStream) -> AsyncGenerator[CloudChunk, None]:
        totals, delivered = _StreamTotals(), 0
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

    async def _next_chunk(self, provider: ProviderConfig, call: _Call, opened: _OpenStream,
                          delivered: int) -> _WireChunk | None:
        """The next chunk after content has been delivered; any failure now is final."""
        timeout = max(0.0, min(provider.timeout_s, call.remaining()))
        cause: BaseException
        try:
            with anyio.fail_after(timeout):
                return await opened.reader.next_chunk()
        except TimeoutError as exc:
            reason, cause = f"no chunk within {timeout:.2f} s", exc
        except httpx.HTTPError as exc:
            reason, cause = _translate(provider.name, exc).reason, exc
        except ProviderProtocolError as exc:
            reason, cause = exc.reason, exc
        self.breakers[provider.name].record_failure()
        raise StreamInterruptedError(provider.name, reason, chunks_yielded=delivered) from cause
