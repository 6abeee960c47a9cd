"""Checks every request passes before any parsing: the API key, the body-size limit, valid UTF-8.

The middleware also counts every error response (``edge_errors_total`` by status), its own refusals included.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request

from edge_runtime.server.errors import ApiError


def install_guards(app: FastAPI, server) -> None:
    """Authentication and the body-size limit, before any parsing."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        try:
            if request.url.path != "/health":
                check_auth(request, server.config.api_key)
            await limit_body(request, server.config.max_body_bytes)
        except ApiError as exc:
            server.metrics.errors.labels(status=str(exc.status)).inc()
            return exc.response()
        response = await call_next(request)
        if response.status_code >= 400:
            server.metrics.errors.labels(status=str(response.status_code)).inc()
        return response


def check_auth(request: Request, api_key: str | None) -> None:
    if not api_key:
        return
    header = request.headers.get("authorization", "")
    supplied = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(supplied.encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key", "authentication_error", code="invalid_api_key")


async def limit_body(request: Request, limit: int) -> None:
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
