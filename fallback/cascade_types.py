"""What goes into the cascade and what comes out: a request, its result, streamed pieces, a local run.

Plain dataclasses shared by the cascade's parts (the whole-answer path, the stream hold, the thread bridge,
the ledger rows); ``fallback.cascade`` re-exports the public ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fallback.local_leg import LocalAnswer, LocalRequest, LocalToken
from fallback.policy import Decision, LocalOutcome, Route


@dataclass
class CascadeRequest:
    """A request in OpenAI terms, plus routing: ``route`` is auto, local or cloud."""

    prompt: str | None = None
    messages: list[dict] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    top_logprobs: int = 0
    response_format: dict | None = None
    grammar: str | None = None
    tools: list[dict] | None = None
    tool_choice: object = None
    route: str = Route.AUTO
    never_send: bool = False
    deadline_s: float | None = None
    task: str | None = None
    record_hidden: int | None = None  # set by the cascade when its calibration reads hidden states

    @property
    def query(self) -> str:
        """The text the request asks about (what the text checkpoint reads): its prompt, or its last user
        message's text."""
        from fallback.message_text import text_parts

        if self.messages is None:
            return self.prompt or ""
        users = [message for message in self.messages if isinstance(message, dict) and message.get("role") == "user"]
        return "\n".join(text_parts(users[-1].get("content"))) if users else ""

    def cloud_messages(self) -> list[dict]:
        return self.messages if self.messages is not None else [{"role": "user", "content": self.prompt}]

    def local_request(self) -> LocalRequest:
        """What the local leg is asked (tools and routing stay with the cascade)."""
        return LocalRequest(prompt=self.prompt, messages=self.messages, max_tokens=self.max_tokens,
                            temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=self.stop,
                            top_logprobs=self.top_logprobs, deadline_s=self.deadline_s, grammar=self.grammar,
                            record_hidden=self.record_hidden)

    @property
    def cloud_usable(self) -> bool:
        """Whether this request may be escalated at all (the cascade also needs a cloud configured)."""
        return not self.never_send and self.route == Route.AUTO


@dataclass
class CascadeResult:
    route_taken: str
    decision: Decision
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float | None
    local: LocalAnswer | None = None
    cloud: object = None
    ledger_id: str | None = None
    degraded_reason: str | None = None
    tool_calls: list | None = None
    latency_s: float = 0.0
    policy_wanted_cloud: bool = False  # a committed local stream the policy would have escalated at its end


@dataclass
class LocalRun:
    """What the local leg did for one request: its answer (None when it failed), the outcome the policy
    reads, and how long it took."""

    result: LocalAnswer | None = None
    outcome: LocalOutcome = field(default_factory=LocalOutcome)
    latency_s: float = 0.0


@dataclass
class StreamPiece:
    """A piece of streamed text and, for local tokens, the token it came from."""

    text: str
    token: LocalToken | None = None


@dataclass
class CascadeStream:
    """The route taken and the stream: ``StreamPiece`` items, then the ``CascadeResult`` last."""

    route: str
    items: AsyncIterator[object]
