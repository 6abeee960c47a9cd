"""Server-sent events of a streamed answer: cascade stream items to OpenAI chunk objects, one builder per API.

A builder turns each ``StreamPiece`` into a chunk (``piece``) and the final ``CascadeResult`` into the last
chunk(s): finish reason, the ``edge`` routing summary, and usage when the client asked for it (``finish``).
"""

from __future__ import annotations

import json

from edge_runtime.server import openai_format as wire
from fallback.cascade import CascadeResult, StreamPiece


def sse(event: dict | str) -> str:
    """One ``data:`` event; a string is sent as it is (``[DONE]``)."""
    return f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"


class ChatStream:
    """Turns stream items into ``chat.completion.chunk`` events."""

    def __init__(self, model: str, with_logprobs: bool, include_usage: bool, top: int | None = None) -> None:
        self.id, self.model = wire.new_id("chatcmpl"), model
        self.with_logprobs, self.include_usage, self.started = with_logprobs, include_usage, False
        self.top = top  # alternatives shown per token (the cascade may have asked the model for more)

    def piece(self, item: StreamPiece) -> dict:
        delta = {"content": item.text}
        if not self.started:
            delta, self.started = {"role": "assistant", "content": item.text}, True
        logprobs = None
        if self.with_logprobs and item.token is not None:
            logprobs = {"content": [wire.chat_token_logprob(item.token, self.top)], "refusal": None}
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

    def __init__(self, model: str, with_logprobs: bool, include_usage: bool, top: int | None = None) -> None:
        self.id, self.model = wire.new_id("cmpl"), model
        self.with_logprobs, self.include_usage, self.offset = with_logprobs, include_usage, 0
        self.top = top  # alternatives shown per token (the cascade may have asked the model for more)

    def piece(self, item: StreamPiece) -> dict:
        logprobs = None
        if self.with_logprobs and item.token is not None:
            logprobs = wire.completion_logprobs([item.token], self.offset, self.top)
        self.offset += len(item.text)
        return wire.completion_chunk(self.id, self.model, item.text, logprobs=logprobs)

    def finish(self, result: CascadeResult) -> list[dict]:
        last = wire.completion_chunk(self.id, self.model, "", wire.finish_reason(result.finish_reason))
        last["edge"] = wire.edge_info(result)
        events = [last]
        if self.include_usage:
            events.append({**last, "choices": [], "usage": wire.usage(result.prompt_tokens, result.completion_tokens)})
        return events
