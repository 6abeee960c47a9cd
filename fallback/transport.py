"""The HTTP boundary of the gateway: httpx errors and statuses become ``fallback.errors`` types, SSE becomes chunks.

Nothing here decides to retry or waits; ``fallback.gateway`` does that, by the type of what this module
raises. Deadlines are the caller's too: every call here runs inside the gateway's ``anyio.fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from fallback.cloud_wire import WireChunk, parse_json, validate_wire
from fallback.errors import (
    ProviderConnectError, ProviderError, ProviderHTTPError, ProviderProtocolError, ProviderRateLimitedError,
    ProviderTimeoutError,
)
from fallback.retry_policy import parse_retry_after


def translate(provider: str, exc: httpx.HTTPError) -> ProviderError:
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


def raise_for_status(provider: str, response: httpx.Response) -> None:
    """A typed error for a 4xx/5xx answer (``Retry-After`` kept for 429 and 503); nothing otherwise."""
    status = response.status_code
    if status < 400:
        return
    retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
    error_type = ProviderRateLimitedError if status == 429 else ProviderHTTPError
    raise error_type(provider, status, retry_after_s=retry_after, detail=_error_detail(response))


def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
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


class StreamReader:
    """Reads one SSE answer chunk by chunk; knows whether it ended properly."""

    def __init__(self, provider: str, response: httpx.Response) -> None:
        self.provider = provider
        self.response = response
        self.raw_chunks: list[dict[str, Any]] = []
        self._events = sse_events(response.aiter_lines())
        self._finished = False

    async def next_chunk(self) -> WireChunk | None:
        """The next chunk; None after ``[DONE]``. A stream that just stops is a ProviderProtocolError."""
        try:
            data = await self._events.__anext__()
        except StopAsyncIteration:
            if self._finished:
                return None  # lenient: a finish_reason arrived, only [DONE] is missing
            raise ProviderProtocolError(self.provider, "stream ended without [DONE]") from None
        if data.strip() == "[DONE]":
            return None
        payload = parse_json(self.provider, data.encode())
        self.raw_chunks.append(payload)
        chunk: WireChunk = validate_wire(self.provider, WireChunk, payload)
        self._finished = self._finished or any(c.finish_reason for c in chunk.choices)
        return chunk

    async def aclose(self) -> None:
        await self.response.aclose()


@dataclass
class OpenStream:
    """A stream read up to its first content chunk: what was read so far, and the reader for the rest."""

    reader: StreamReader
    buffered: list[WireChunk]
    ended: bool  # [DONE] arrived while opening (an empty answer)


async def read_first_chunks(provider: str, response: httpx.Response) -> OpenStream:
    """Check the status, then read chunks until one carries content (or the stream ends)."""
    if response.status_code >= 400:
        await response.aread()
        raise_for_status(provider, response)
    reader = StreamReader(provider, response)
    buffered: list[WireChunk] = []
    while True:
        chunk = await reader.next_chunk()
        if chunk is None:
            return OpenStream(reader, buffered, ended=True)
        buffered.append(chunk)
        if chunk.carries_content():
            return OpenStream(reader, buffered, ended=False)
