"""The FastAPI application: OpenAI-compatible routes over the cascade, with admission control and metrics.

Every failure is an OpenAI-style error object with a 4xx/5xx status, and the server keeps serving: bad JSON,
wrong types, unknown fields, oversized bodies, invalid UTF-8, bad ``max_tokens`` (400/413), a missing or
wrong API key (401), a full queue (spilled to the cloud when one is configured, else 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_runtime.errors import CapExceededError, EdgeRuntimeError, InvalidRequestError, PromptTooLongError
from edge_runtime.server import openai_format as wire
from edge_runtime.server.metrics import Metrics
from edge_runtime.server.schemas import ChatCompletionRequest, CompletionRequest
from fallback.cascade import Cascade, CascadeRequest, CascadeResult, StreamPiece
from fallback.errors import FallbackError, PrivacyRefusalError

log = logging.getLogger("edge_runtime.server")
ROUTES = ("auto", "local", "cloud")
DEFAULT_MAX_TOKENS = 256


@dataclass
class ServerConfig:
    model_name: str = "edge-runtime-local"
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_in_flight: int = 16
    retry_after_s: int = 1
    log_prompts: bool = False


class ApiError(Exception):
    """An error to send as an OpenAI error object."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.param, self.code = status, message, error_type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(wire.error_body(self.message, self.error_type, self.param, self.code),
                            status_code=self.status, headers=self.headers)


class Admission:
    """Counts requests in flight; beyond ``limit`` a request is spilled to the cloud or refused."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_flight, self._lock = limit, 0, threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def translate_error(exc: Exception) -> ApiError:
    """Library errors to HTTP, by type."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (InvalidRequestError, PromptTooLongError, PrivacyRefusalError)):
        return ApiError(400, str(exc))
    if isinstance(exc, CapExceededError):
        return ApiError(429, str(exc), "rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
    if isinstance(exc, FallbackError):
        return ApiError(503, str(exc), "server_error", code="cloud_unavailable")
    if isinstance(exc, EdgeRuntimeError):
        return ApiError(500, f"local model failed: {exc}", "server_error", code="backend_error")
    log.exception("unexpected error")
    return ApiError(500, "internal error", "server_error")


class EdgeServer:
    """Holds the cascade, configuration, admission and metrics; builds the app."""

    def __init__(self, cascade: Cascade, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.cascade, self.config = cascade, config
        self.metrics = metrics or Metrics()
        self.admission = Admission(config.max_in_flight)
        self.ready = False
        self._describe_metrics()

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("edge_requests_total", "counter", "Requests answered, by endpoint, route taken and reason")
        m.describe("edge_errors_total", "counter", "Requests answered with an error, by status")
        m.describe("edge_tokens_total", "counter", "Tokens, by direction and route")
        m.describe("edge_request_latency_seconds", "histogram", "Total latency of a request, by route")
        m.describe("edge_time_to_first_token_seconds", "histogram", "Time to the first streamed token, by route")
        m.describe("edge_queue_depth", "gauge", "Requests in flight and waiting")
        m.describe("edge_breaker_state", "gauge", "Circuit breaker state per provider (0 closed, 1 half-open, 2 open)")
        m.describe("edge_prefix_cache_hit_ratio", "gauge", "Share of prompt tokens whose KV state was reused")
        m.describe("edge_prefix_cache_bytes", "gauge", "KV cache bytes held for reusable prefixes")
        m.gauge("edge_prefix_cache_hit_ratio", lambda: self._prefix("hit_ratio"))
        m.gauge("edge_prefix_cache_bytes", lambda: self._prefix("bytes_held"))
        m.describe("edge_prefix_store_bytes", "gauge", "Bytes of saved prefix states (part of edge_prefix_cache_bytes)")
        m.describe("edge_prefix_store_entries", "gauge", "Saved prefix states in the store")
        m.describe("edge_prefix_store_restores", "gauge", "Saved prefix states restored since start")
        m.gauge("edge_prefix_store_bytes", lambda: self._prefix("store_bytes"))
        m.gauge("edge_prefix_store_entries", lambda: self._prefix("store_entries"))
        m.gauge("edge_prefix_store_restores", lambda: self._prefix("store_restores"))
        m.gauge("edge_queue_depth", self._queue_depth)
        m.gauge("edge_breaker_state", self._breaker_states)
        m.describe("edge_engine_up", "gauge", "1 while the engine process is ready to decode, else 0")
        m.describe("edge_engine_restarts_total", "counter", "Engine process restarts, by cause (signal or exit)")
        m.gauge("edge_engine_up", lambda: {(): float(self.cascade.runtime.ready)})
        m.gauge("edge_engine_restarts_total", self._engine_restarts)

    def _backend_stats(self) -> dict:
        """The backend's counters as plain values, whether it runs in this process or in the engine's."""
        from edge_runtime.engine.messages import backend_stats

        backend = self.cascade.runtime.backend
        stats = getattr(backend, "stats", None)
        return stats() if stats is not None else backend_stats(backend)

    def _queue_depth(self) -> dict:
        depth = {(("state", "in_flight"),): float(self.admission.in_flight)}
        backend_depth = self._backend_stats().get("queue_depth")
        if backend_depth is not None:
            decoding, waiting = backend_depth
            depth[(("state", "decoding"),)] = float(decoding)
            depth[(("state", "waiting"),)] = float(waiting)
        return depth

    def _prefix(self, field: str) -> dict:
        stats = self._backend_stats().get("prefix")
        return {(): stats[field]} if stats is not None else {}

    def _engine_restarts(self) -> dict:
        restarts = getattr(self.cascade.runtime.backend, "restarts", {})
        return {(("cause", cause),): float(count) for cause, count in restarts.items()}

    def health(self) -> tuple[int, dict]:
        """(status code, body) of ``/health``: ok while the engine is ready; degraded while it starts or
        restarts (200 if the cloud can answer meanwhile, else 503)."""
        if not self.ready:
            return 503, {"status": "loading"}
        runtime = self.cascade.runtime
        backend = runtime.backend
        body = {"status": "ok", "model": self.config.model_name,
                "engine_pid": getattr(backend, "engine_pid", os.getpid()),
                "engine": getattr(backend, "state", "ready"),
                "engine_restarts": dict(getattr(backend, "restarts", {}))}
        if runtime.ready:
            return 200, body
        body["status"] = "degraded"
        return (200 if self.cascade.gateway is not None else 503), body

    def _breaker_states(self) -> dict:
        gateway = self.cascade.gateway
        if gateway is None:
            return {}
        codes = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
        return {(("provider", name),): codes[breaker.state] for name, breaker in gateway.breakers.items()}

    # -- requests ------------------------------------------------------------------------------------------
    def check_auth(self, request: Request) -> None:
        if not self.config.api_key:
            return
        header = request.headers.get("authorization", "")
        supplied = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(supplied.encode(), self.config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key", "authentication_error", code="invalid_api_key")

    def route_of(self, request: Request) -> str:
        route = request.headers.get("x-edge-route", "auto").strip().lower()
        if route not in ROUTES:
            raise ApiError(400, f"X-Edge-Route must be one of {', '.join(ROUTES)}; got {route!r}",
                           param="X-Edge-Route")
        return route

    def admit(self, route: str) -> str:
        """Enters admission, or spills the request to the cloud, or refuses it with 429."""
        if self.admission.try_enter():
            return route
        if route != "local" and self.cascade.gateway is not None:
            return "spill"
        raise ApiError(429, f"the server is busy: {self.admission.limit} requests in flight", "rate_limit_error",
                       code="rate_limit_exceeded", headers={"Retry-After": str(self.config.retry_after_s)})

    def cascade_request(self, body, request: Request, route: str, **fields) -> CascadeRequest:
        max_tokens = fields.pop("max_tokens", None) or DEFAULT_MAX_TOKENS
        never_send = request.headers.get("x-edge-never-send", "").lower() in ("1", "true", "yes") or \
            bool((body.metadata or {}).get("never_send"))
        return CascadeRequest(max_tokens=max_tokens, temperature=body.temperature or 0.0,
                              top_p=body.top_p if body.top_p is not None else 1.0, seed=body.seed,
                              stop=[body.stop] if isinstance(body.stop, str) else body.stop, route=route,
                              never_send=never_send, **fields)

    async def answer(self, request: Request, cascade_request: CascadeRequest, build, stream_builder):
        spilled = cascade_request.route == "spill"
        if spilled:
            cascade_request.route = "cloud"
        handed_over = False  # a stream releases admission itself, when it ends
        try:
            if cascade_request.max_tokens is not None and cascade_request.max_tokens <= 0:
                raise ApiError(400, f"max_tokens must be at least 1, got {cascade_request.max_tokens}",
                               param="max_tokens")
            if stream_builder is None:
                return await self._complete(request, cascade_request, build)
            response = await self._stream(request, cascade_request, stream_builder, spilled)
            handed_over = True
            return response
        finally:
            if not spilled and not handed_over:
                self.admission.leave()

    async def _complete(self, request: Request, cascade_request: CascadeRequest, build) -> JSONResponse:
        cancel = threading.Event()
        task = asyncio.ensure_future(self.cascade.complete(cascade_request, cancel))
        watcher = asyncio.ensure_future(_watch_disconnect(request, cancel))
        try:
            result = await task
        finally:
            watcher.cancel()
        self._count(request.url.path, result)
        return JSONResponse(build(result), headers=wire.edge_headers(result))

    async def _stream(self, request: Request, cascade_request: CascadeRequest, stream_builder, spilled: bool):
        opened = await self.cascade.open_stream(cascade_request)
        body = self._sse(request.url.path, opened.items, stream_builder, spilled)
        return StreamingResponse(body, media_type="text/event-stream", headers=wire.edge_headers(opened.route))

    async def _sse(self, path: str, items: AsyncIterator, stream_builder, spilled: bool) -> AsyncIterator[str]:
        started, first = time.perf_counter(), True
        try:
            async for item in items:
                if isinstance(item, CascadeResult):
                    self._count(path, item)
                    for event in stream_builder.finish(item):
                        yield f"data: {json.dumps(event)}\n\n"
                    continue
                if first:
                    self.metrics.observe("edge_time_to_first_token_seconds", time.perf_counter() - started)
                    first = False
                yield f"data: {json.dumps(stream_builder.piece(item))}\n\n"
        except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, then end the stream
            error = translate_error(exc)
            yield f"data: {json.dumps(wire.error_body(error.message, error.error_type, error.param, error.code))}\n\n"
        finally:
            if not spilled:
                self.admission.leave()
        yield "data: [DONE]\n\n"

    def _count(self, path: str, result: CascadeResult) -> None:
        m = self.metrics
        m.inc("edge_requests_total", endpoint=path, route=result.route_taken, reason=result.decision.reason.value)
        m.inc("edge_tokens_total", result.prompt_tokens, direction="in", route=result.route_taken)
        m.inc("edge_tokens_total", result.completion_tokens, direction="out", route=result.route_taken)
        m.observe("edge_request_latency_seconds", result.latency_s, route=result.route_taken)
        local = result.local
        if local is not None and local.timings.time_to_first_token_s is not None and result.route_taken != "cloud":
            m.observe("edge_time_to_first_token_seconds", local.timings.time_to_first_token_s, route="local")


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(0.1)


class ChatStream:
    """Turns stream items into ``chat.completion.chunk`` events."""

    def __init__(self, model: str, with_logprobs: bool, include_usage: bool) -> None:
        self.id, self.model = wire.new_id("chatcmpl"), model
        self.with_logprobs, self.include_usage, self.started = with_logprobs, include_usage, False

    def piece(self, item: StreamPiece) -> dict:
        delta = {"content": item.text}
        if not self.started:
            delta, self.started = {"role": "assistant", "content": item.text}, True
        logprobs = None
        if self.with_logprobs and item.token is not None:
            logprobs = {"content": [wire.chat_token_logprob(item.token)], "refusal": None}
        return wire.chat_chunk(self.id, self.model, delta, logprobs=logprobs)

    def finish(self, result: CascadeResult) -> list[dict]:
        delta = {} if self.started else {"role": "assistant", "content": ""}
        last = wire.chat_chunk(self.id, self.model, delta, wire.finish_reason(result.finish_reason))
        last["edge"] = wire.edge_info(result)
        events = [last]
        if self.include_usage:
            events.append({**wire.chat_chunk(self.id, self.model, {}), "choices": [],
                           "usage": wire.usage(result.prompt_tokens, result.completion_tokens)})
        return events


class CompletionStream:
    """Turns stream items into ``text_completion`` chunk events."""

    def __init__(self, model: str, with_logprobs: bool, include_usage: bool) -> None:
        self.id, self.model = wire.new_id("cmpl"), model
        self.with_logprobs, self.include_usage, self.offset = with_logprobs, include_usage, 0

    def piece(self, item: StreamPiece) -> dict:
        logprobs = None
        if self.with_logprobs and item.token is not None:
            logprobs = wire.completion_logprobs([item.token], self.offset)
        self.offset += len(item.text)
        return wire.completion_chunk(self.id, self.model, item.text, logprobs=logprobs)

    def finish(self, result: CascadeResult) -> list[dict]:
        last = wire.completion_chunk(self.id, self.model, "", wire.finish_reason(result.finish_reason))
        last["edge"] = wire.edge_info(result)
        events = [last]
        if self.include_usage:
            events.append({**last, "choices": [], "usage": wire.usage(result.prompt_tokens, result.completion_tokens)})
        return events


def _schema_grammar(response_format) -> str | None:
    """A llama.cpp grammar for ``json_object`` / ``json_schema`` response formats."""
    if response_format is None or response_format.type == "text":
        return None
    from edge_runtime.grammar import grammar_for_response_format

    return grammar_for_response_format(response_format.model_dump())


def create_app(server: EdgeServer) -> FastAPI:
    app = FastAPI(title="edge-runtime", version="0.1.0",
                  description="OpenAI-compatible local inference with cloud escalation")
    _install_error_handlers(app)
    _install_guards(app, server)

    @app.get("/health")
    async def health():
        status_code, body = server.health()
        return JSONResponse(body, status_code=status_code)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.config.model_name, "object": "model", "created": 0,
                                             "owned_by": "edge-runtime"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        route = server.admit(server.route_of(request))
        messages = [message.model_dump(exclude_none=True) for message in body.messages]
        response_format = body.response_format.model_dump(exclude_none=True) if body.response_format else None
        cascade_request = server.cascade_request(
            body, request, route, messages=messages, max_tokens=body.max_completion_tokens or body.max_tokens,
            top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0, response_format=response_format,
            grammar=_schema_grammar(body.response_format), tools=body.tools, tool_choice=body.tool_choice)
        model = server.config.model_name
        builder = ChatStream(model, body.logprobs, body.include_usage_in_stream) if body.stream else None
        return await server.answer(request, cascade_request,
                                   lambda result: wire.chat_completion(result, model, body.logprobs), builder)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        route = server.admit(server.route_of(request))
        prompt = body.prompt if isinstance(body.prompt, str) else _single_prompt(body.prompt)
        with_logprobs = body.logprobs is not None
        cascade_request = server.cascade_request(body, request, route, prompt=prompt, max_tokens=body.max_tokens,
                                                 top_logprobs=body.logprobs or 0)
        model = server.config.model_name
        builder = CompletionStream(model, with_logprobs, body.include_usage_in_stream) if body.stream else None
        return await server.answer(request, cascade_request,
                                   lambda result: wire.completion(result, model, with_logprobs), builder)

    return app


def _single_prompt(prompts: list[str]) -> str:
    if len(prompts) != 1:
        raise ApiError(400, f"exactly one prompt is supported (n=1), got {len(prompts)}", param="prompt")
    return prompts[0]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        param = ".".join(location) or None
        return ApiError(400, f"{message}" + (f" ({param})" if param else ""), param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return ApiError(exc.status_code, str(exc.detail), error_type).response()

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(EdgeRuntimeError)
    async def runtime_error(_request: Request, exc: EdgeRuntimeError):
        return translate_error(exc).response()

    @app.exception_handler(FallbackError)
    async def fallback_error(_request: Request, exc: FallbackError):
        return translate_error(exc).response()

    @app.exception_handler(Exception)
    async def any_error(_request: Request, exc: Exception):
        return translate_error(exc).response()


def _install_guards(app: FastAPI, server: EdgeServer) -> None:
    """Authentication and the body-size limit, before any parsing."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        try:
            if request.url.path != "/health":
                server.check_auth(request)
            await _limit_body(request, server.config.max_body_bytes)
        except ApiError as exc:
            server.metrics.inc("edge_errors_total", status=str(exc.status))
            return exc.response()
        response = await call_next(request)
        if response.status_code >= 400:
            server.metrics.inc("edge_errors_total", status=str(response.status_code))
        return response


async def _limit_body(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {int(declared):,} bytes; the limit is {limit:,}",
                       code="request_too_large")
    if request.method != "POST":
        return
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, f"request body is over the limit of {limit:,} bytes", code="request_too_large")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})") from exc
