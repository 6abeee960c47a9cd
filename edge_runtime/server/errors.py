"""HTTP errors: the OpenAI-style error object, and library errors translated to it by type.

``ApiError`` carries a status, a message and the OpenAI fields (type, param, code); ``translate_error`` maps
the runtime's and the fallback's errors to one (400 a bad request, 429 a cap, 503 the cloud, 500 the local
model); ``install_error_handlers`` makes FastAPI answer every failure, its own included, in that shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_runtime.errors import (CapExceededError, EdgeRuntimeError, InvalidRequestError, PromptTooLongError,
                                 UnsupportedCapabilityError)
from edge_runtime.server import openai_format as wire
from fallback.errors import FallbackError, PrivacyRefusalError, RequestRejectedError

log = logging.getLogger("edge_runtime.server")


class ApiError(Exception):
    """An error to send as an OpenAI error object."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.param, self.code = status, message, error_type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return wire.error_body(self.message, self.error_type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def translate_error(exc: Exception) -> ApiError:
    """Library errors to HTTP, by type."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnsupportedCapabilityError):  # e.g. a response_format on a backend without grammars
        return ApiError(400, str(exc), code="unsupported_capability")
    if isinstance(exc, RequestRejectedError):  # the cascade's word for a request the local leg refused
        return ApiError(400, str(exc), code=exc.code)
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return ApiError(exc.status_code, str(exc.detail), error_type).response()

    async def library_error(_request: Request, exc: Exception):
        return translate_error(exc).response()

    # the library's own types are answered inside the middleware stack (so the guard counts them);
    # ``Exception`` is the outermost catch-all for anything unexpected
    for error_type in (ApiError, EdgeRuntimeError, FallbackError, Exception):
        app.add_exception_handler(error_type, library_error)


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        message = "request body is not valid JSON"
    param = ".".join(location) or None
    return ApiError(400, f"{message}" + (f" ({param})" if param else ""), param=param)
