"""``EdgeServer``: one request's way through the server, from the route asked for to the response sent.

It holds the cascade, the runtime it serves, the configuration, admission and metrics. A request names a
route (``X-Edge-Route``), is admitted or spilled to the cloud or refused (429), becomes a ``CascadeRequest``,
and is answered whole (cancelled if the client goes away) or streamed as server-sent events (errors after the
headers are sent go in-band). Admission is left when the answer ends, a stream's when the stream ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from edge_runtime.server import openai_format as wire
from edge_runtime.server.admission import Admission
from edge_runtime.server.config import DEFAULT_MAX_TOKENS, ROUTES, ServerConfig
from edge_runtime.server.errors import ApiError, translate_error
from edge_runtime.server.metrics import Metrics
from edge_runtime.server.state_metrics import ServerStateCollector, health
from edge_runtime.server.streams import sse
from fallback.cascade import Cascade, CascadeRequest, CascadeResult
from fallback.policy import Route, RouteTaken


class EdgeServer:
    """Holds the cascade, the runtime, configuration, admission and metrics; answers requests."""

    def __init__(self, cascade: Cascade, config: ServerConfig, metrics: Metrics | None = None, *,
                 runtime=None) -> None:
        self.cascade, self.config = cascade, config
        self.runtime = runtime if runtime is not None else cascade.local.runtime  # a RuntimeLocalLeg's
        self.metrics = metrics or Metrics()
        self.admission = Admission(config.max_in_flight)
        self.ready = False
        self.metrics.watch(ServerStateCollector(self))

    def health(self) -> tuple[int, dict]:
        return health(self)

    # -- before answering -----------------------------------------------------------------------------------
    def route_of(self, request: Request) -> Route:
        route = request.headers.get("x-edge-route", Route.AUTO.value).strip().lower()
        if route not in ROUTES:
            raise ApiError(400, f"X-Edge-Route must be one of {', '.join(ROUTES)}; got {route!r}",
                           param="X-Edge-Route")
        return Route(route)

    def admit(self, route: Route) -> bool:
        """Enters admission (False), or spills the request to the cloud (True: it holds no admission), or
        refuses it with 429."""
        if self.admission.try_enter():
            return False
        if route is not Route.LOCAL and self.cascade.gateway is not None:
            return True
        raise ApiError(429, f"the server is busy: {self.admission.limit} requests in flight", "rate_limit_error",
                       code="rate_limit_exceeded", headers={"Retry-After": str(self.config.retry_after_s)})

    def cascade_request(self, body, request: Request, route: Route, **fields) -> CascadeRequest:
        max_tokens = fields.pop("max_tokens", None) or DEFAULT_MAX_TOKENS
        never_send = request.headers.get("x-edge-never-send", "").lower() in ("1", "true", "yes") or \
            bool((body.metadata or {}).get("never_send"))
        return CascadeRequest(max_tokens=max_tokens, temperature=body.temperature or 0.0,
                              top_p=body.top_p if body.top_p is not None else 1.0, seed=body.seed,
                              stop=[body.stop] if isinstance(body.stop, str) else body.stop, route=route,
                              never_send=never_send, **fields)

    # -- answering ------------------------------------------------------------------------------------------
    async def answer(self, request: Request, cascade_request: CascadeRequest, build, stream_builder,
                     spilled: bool = False):
        """The response; a ``spilled`` request goes to the cloud and holds no admission to leave."""
        if spilled:
            cascade_request.route = Route.CLOUD
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
                        yield sse(event)
                    continue
                if first:
                    self.metrics.first_token.labels(route="").observe(time.perf_counter() - started)
                    first = False
                if item.text or stream_builder.with_logprobs:  # a held-back token's empty piece carries only logprobs
                    yield sse(stream_builder.piece(item))
        except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, then end the stream
            yield sse(translate_error(exc).body())
        finally:
            if not spilled:
                self.admission.leave()
        yield sse("[DONE]")

    def _count(self, path: str, result: CascadeResult) -> None:
        m, route = self.metrics, result.route_taken
        m.requests.labels(endpoint=path, reason=result.decision.reason.value, route=route).inc()
        m.tokens.labels(direction="in", route=route).inc(result.prompt_tokens)
        m.tokens.labels(direction="out", route=route).inc(result.completion_tokens)
        m.latency.labels(route=route).observe(result.latency_s)
        local = result.local
        if local is not None and local.timings.time_to_first_token_s is not None and route != RouteTaken.CLOUD:
            m.first_token.labels(route="local").observe(local.timings.time_to_first_token_s)


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(0.1)
