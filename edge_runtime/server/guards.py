"""Checks every request passes before any parsing: the API key, the body-size limit, valid UTF-8.

The guard also counts every error response (``edge_errors_total`` by status), its own refusals included.
It is a plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: that one relays every chunk of a streamed
answer through a memory stream and an extra task, a cost paid once per token on a machine whose cores are
busy decoding. Here a streamed chunk passes through one function call.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_runtime.server.errors import ApiError


def install_guards(app: FastAPI, server) -> None:
    """Authentication and the body-size limit, before any parsing."""
    app.add_middleware(Guards, server=server)


class Guards:
    """The API key, the body limit and UTF-8 for every HTTP request; error responses counted by status."""

    def __init__(self, app: ASGIApp, server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            headers = Headers(scope=scope)
            if scope["path"] != "/health":
                check_auth(headers.get("authorization", ""), self.server.config.api_key)
            receive = await checked_body(scope, headers, receive, self.server.config.max_body_bytes)
        except ApiError as exc:
            self.count(exc.status)
            await exc.response()(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.count(message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)

    def count(self, status: int) -> None:
        self.server.metrics.errors.labels(status=str(status)).inc()


def check_auth(header: str, api_key: str | None) -> None:
    if not api_key:
        return
    supplied = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(supplied.encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key", "authentication_error", code="invalid_api_key")


async def checked_body(scope: Scope, headers: Headers, receive: Receive, limit: int) -> Receive:
    """Reads a POST body (refusing it once it passes ``limit`` bytes, without buffering the rest, or when it is
    not UTF-8) and returns a ``receive`` that hands it to the app, then passes later messages (a disconnect)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {int(declared):,} bytes; the limit is {limit:,}",
                       code="request_too_large")
    if scope["method"] != "POST":
        return receive
    body = await read_body(receive, limit)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})") from exc
    return replaying(body, receive)


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit:,} bytes", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    handed = False

    async def replay() -> Message:
        nonlocal handed
        if handed:
            return await receive()
        handed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
