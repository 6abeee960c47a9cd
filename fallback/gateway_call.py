"""One cloud request in flight: its deadline, attempts and errors, the body it sends, and a stream's totals.

Lives only for that request (the gateway keeps no per-request state on itself), so concurrent requests never
share any of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from fallback.breaker import CircuitBreaker
from fallback.cloud_types import Attempt, CloudChunk, CloudRequest, CloudResponse, Usage, estimate_tokens, messages_text
from fallback.cloud_wire import WireChunk, WireUsage
from fallback.errors import AllProvidersFailedError, ProviderHTTPError
from fallback.providers import ProviderConfig


@dataclass
class Call:
    """What one request has done so far; lives only for that request, so requests never share state."""

    request: CloudRequest
    messages: list[dict[str, Any]]
    redaction_counts: dict[str, int]
    client: httpx.AsyncClient
    started: float  # when the gateway was called: the escalation's start
    deadline: float  # time.monotonic() when time is up; set per provider (its budget may differ)
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

    def usage(self, text: str, wire: WireUsage | None) -> Usage:
        if wire is not None:
            return Usage(wire.prompt_tokens, wire.completion_tokens)
        return Usage(estimate_tokens(messages_text(self.messages)), estimate_tokens(text), estimated=True)

    def response(self, provider: ProviderConfig, text: str, finish_reason: str | None,
                 wire_usage: WireUsage | None, model: str | None, raw: dict[str, Any],
                 tool_calls: list[dict[str, Any]] | None) -> CloudResponse:
        usage = self.usage(text, wire_usage)
        return CloudResponse(
            text=text, finish_reason=finish_reason, usage=usage, provider=provider.name,
            model=model or provider.model, attempts=list(self.attempts), latency_s=self.elapsed(),
            cost_usd=provider.cost_usd(usage.prompt_tokens, usage.completion_tokens), raw=raw,
            redaction_counts=dict(self.redaction_counts), tool_calls=tool_calls)


@dataclass
class StreamTotals:
    """What a stream has carried so far, for the final chunk's CloudResponse."""

    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: WireUsage | None = None
    model: str | None = None
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, chunk: WireChunk) -> CloudChunk | None:
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
