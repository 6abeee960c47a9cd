"""What an OpenAI-compatible provider sends back, validated at the edge before the gateway uses any of it.

Only the fields the gateway reads are modelled; everything else is ignored, so a provider that adds fields
still works. A body that does not parse, or lacks what is needed, raises ``ProviderProtocolError`` naming
the bad fields (never their values), and the gateway treats it as a retryable protocol error.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fallback.errors import ProviderProtocolError


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WireUsage(_WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class WireMessage(_WireModel):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class WireChoice(_WireModel):
    message: WireMessage
    finish_reason: str | None = None


class WireCompletion(_WireModel):
    model: str | None = None
    choices: list[WireChoice] = Field(min_length=1)
    usage: WireUsage | None = None


class WireDelta(_WireModel):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class WireChunkChoice(_WireModel):
    index: int = 0
    delta: WireDelta = Field(default_factory=WireDelta)
    finish_reason: str | None = None


class WireChunk(_WireModel):
    model: str | None = None
    choices: list[WireChunkChoice] = Field(default_factory=list)
    usage: WireUsage | None = None

    def first(self) -> WireChunkChoice | None:
        return next((c for c in self.choices if c.index == 0), None)

    def carries_content(self) -> bool:
        choice = self.first()
        return choice is not None and bool(choice.delta.content or choice.delta.tool_calls or choice.finish_reason)


def parse_json(provider: str, content: bytes) -> dict[str, Any]:
    """The JSON object in ``content``; an ``{"error": ...}`` body with a 200 status is a protocol error too."""
    try:
        payload = json.loads(content)
    except ValueError as exc:
        raise ProviderProtocolError(provider, f"answer is not valid JSON ({len(content)} bytes)") from exc
    if not isinstance(payload, dict):
        raise ProviderProtocolError(provider, "answer is JSON but not an object")
    if "error" in payload and "choices" not in payload:
        raise ProviderProtocolError(provider, f"error in answer: {str(payload['error'])[:200]}")
    return payload


def validate_wire(provider: str, model: type[BaseModel], payload: dict[str, Any]) -> Any:
    """``payload`` as ``model``; the error names up to three bad fields."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:3])
        raise ProviderProtocolError(provider, f"unexpected answer shape (bad fields: {fields})") from exc
