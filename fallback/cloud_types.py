"""What the cloud gateway takes and gives: a request, its usage, each attempt, the answer and streamed chunks.

Public types of ``fallback.gateway`` (re-exported there), apart from the client so callers and the cascade can
name them without the HTTP machinery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fallback.message_text import text_parts


class CloudRequest(BaseModel):
    """One chat request for the cloud; ``deadline_s`` overrides the config's overall deadline.

    ``elapsed_s``: how long the caller's request ran before it escalated (the local model's turn); the
    overall deadline counts it. ``local_answer_ready``: the caller holds a usable local answer, so the
    escalation gets the shorter escalation budget (``escalation_budget_s`` here overrides the provider's and
    the config's). See the module docstring.

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
    elapsed_s: float = Field(default=0.0, ge=0)
    local_answer_ready: bool = False
    escalation_budget_s: float | None = Field(default=None, gt=0)


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


def estimate_tokens(text: str) -> int:
    """About four characters per token: the usual rule of thumb for English with BPE tokenizers."""
    return math.ceil(len(text) / 4)


def messages_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(text for message in messages for text in text_parts(message.get("content")))
