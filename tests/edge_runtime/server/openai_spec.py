"""The OpenAI response schemas every body the server emits must satisfy, transcribed by hand as JSON Schema.

Read from the official OpenAPI document, openai/openai-openapi (MIT licence, Copyright (c) OpenAI),
``openapi.json`` at commit f85dbe223d40e1a31cba812ab2d755c7e98a92a3 (2026-08-21; ``info.version`` 2.3.0,
OpenAPI 3.1.0), ``components/schemas``: CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
ChatCompletionResponseMessage, ChatCompletionStreamResponseDelta, ChatCompletionTokenLogprob,
ChatCompletionMessageToolCall(Chunk), CreateCompletionResponse, CompletionUsage, ErrorResponse, Error,
ListModelsResponse, Model, ServiceTier. Only the response side, and only what this server can emit; no text
of the document is copied, these are our own Python literals.

Nullability is as the document states it: a field may be null only where it says ``nullable: true`` or
``anyOf [..., {type: null}]``. A field typed plainly (``system_fingerprint: string``) may be absent, never
null. Two deliberate differences:

* stricter: an object refuses fields the document does not name (``additionalProperties: false``), except
  our own ``edge`` object on top-level bodies; so anything we add outside ``edge`` is caught;
* as the real API streams them: the document reuses CreateCompletionResponse for ``/v1/completions``
  stream chunks, whose ``finish_reason`` is not nullable, yet OpenAI sends ``null`` until the last chunk;
  ``COMPLETION_CHUNK`` allows that (and the tests check only the last chunk carries a reason).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def closed(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these (optional unless required) fields."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def top_level(properties: dict[str, Schema], required: tuple[str, ...]) -> Schema:
    """A whole response body: the spec's fields plus our ``edge`` extension object."""
    return closed({**properties, "edge": {"type": "object"}}, required)


# ---------------------------------------------------------------- shared parts

COMPLETION_USAGE = closed({
    "completion_tokens": INTEGER, "prompt_tokens": INTEGER, "total_tokens": INTEGER,
    "completion_tokens_details": closed({"accepted_prediction_tokens": INTEGER, "audio_tokens": INTEGER,
                                         "reasoning_tokens": INTEGER, "text_tokens": INTEGER,
                                         "rejected_prediction_tokens": INTEGER}),
    "prompt_tokens_details": closed({"audio_tokens": INTEGER, "cached_tokens": INTEGER, "text_tokens": INTEGER,
                                     "image_tokens": INTEGER, "cache_write_tokens": INTEGER}),
}, ("prompt_tokens", "completion_tokens", "total_tokens"))

_BYTES = nullable(array(INTEGER))
CHAT_TOKEN_LOGPROB = closed({
    "token": STRING, "logprob": NUMBER, "bytes": _BYTES,
    "top_logprobs": array(closed({"token": STRING, "logprob": NUMBER, "bytes": _BYTES},
                                 ("token", "logprob", "bytes"))),
}, ("token", "logprob", "bytes", "top_logprobs"))

CHAT_CHOICE_LOGPROBS = nullable(closed({"content": nullable(array(CHAT_TOKEN_LOGPROB)),
                                        "refusal": nullable(array(CHAT_TOKEN_LOGPROB))}, ("content", "refusal")))

CHAT_FINISH_REASON = enum("stop", "length", "tool_calls", "content_filter", "function_call")
SERVICE_TIER = nullable(enum("auto", "default", "flex", "scale", "priority", "fast"))
_FUNCTION = closed({"name": STRING, "arguments": STRING}, ("name", "arguments"))
TOOL_CALL = {"oneOf": [
    closed({"id": STRING, "type": enum("function"), "function": _FUNCTION}, ("id", "type", "function")),
    closed({"id": STRING, "type": enum("custom"), "custom": closed({"name": STRING, "input": STRING},
                                                                   ("name", "input"))}, ("id", "type", "custom")),
]}
TOOL_CALL_CHUNK = closed({"index": INTEGER, "id": STRING, "type": enum("function"),
                          "function": closed({"name": STRING, "arguments": STRING})}, ("index",))

# ---------------------------------------------------------------- chat completions

RESPONSE_MESSAGE = closed({
    "content": nullable(STRING), "refusal": nullable(STRING), "tool_calls": array(TOOL_CALL),
    "annotations": array({"type": "object"}), "role": enum("assistant"), "function_call": _FUNCTION,
    "audio": nullable({"type": "object"}),
}, ("role", "content", "refusal"))

CHAT_COMPLETION = top_level({
    "id": STRING, "object": enum("chat.completion"), "created": INTEGER, "model": STRING,
    "choices": array(closed({"finish_reason": CHAT_FINISH_REASON, "index": INTEGER, "message": RESPONSE_MESSAGE,
                             "logprobs": CHAT_CHOICE_LOGPROBS}, ("finish_reason", "index", "message", "logprobs"))),
    "metadata": nullable({"type": "object", "additionalProperties": STRING}), "service_tier": SERVICE_TIER,
    "system_fingerprint": STRING, "usage": COMPLETION_USAGE, "moderation": nullable({"type": "object"}),
}, ("choices", "created", "id", "model", "object"))

STREAM_DELTA = closed({
    "content": nullable(STRING), "function_call": closed({"arguments": STRING, "name": STRING}),
    "tool_calls": array(TOOL_CALL_CHUNK), "role": enum("developer", "system", "user", "assistant", "tool"),
    "refusal": nullable(STRING),
})

CHAT_CHUNK = top_level({
    "id": STRING, "object": enum("chat.completion.chunk"), "created": INTEGER, "model": STRING,
    "choices": array(closed({"delta": STREAM_DELTA, "logprobs": CHAT_CHOICE_LOGPROBS,
                             "finish_reason": nullable(CHAT_FINISH_REASON), "index": INTEGER},
                            ("delta", "finish_reason", "index"))),
    "obfuscation": STRING, "service_tier": SERVICE_TIER, "system_fingerprint": STRING,
    "usage": nullable(COMPLETION_USAGE), "moderation": nullable({"type": "object"}),
}, ("choices", "created", "id", "model", "object"))

# ---------------------------------------------------------------- completions

COMPLETION_LOGPROBS = nullable(closed({
    "text_offset": array(INTEGER), "token_logprobs": array(NUMBER), "tokens": array(STRING),
    "top_logprobs": array({"type": "object", "additionalProperties": NUMBER}),
}))


def _completion(finish_reason: Schema) -> Schema:
    choice = closed({"finish_reason": finish_reason, "index": INTEGER, "logprobs": COMPLETION_LOGPROBS,
                     "text": STRING}, ("finish_reason", "index", "logprobs", "text"))
    return top_level({"id": STRING, "object": enum("text_completion"), "created": INTEGER, "model": STRING,
                      "choices": array(choice), "system_fingerprint": STRING, "usage": COMPLETION_USAGE},
                     ("id", "object", "created", "model", "choices"))


COMPLETION_FINISH_REASON = enum("stop", "length", "content_filter")
COMPLETION = _completion(COMPLETION_FINISH_REASON)
COMPLETION_CHUNK = _completion(nullable(COMPLETION_FINISH_REASON))

# ---------------------------------------------------------------- errors and models

ERROR_RESPONSE = closed({"error": closed({"code": nullable(STRING), "message": STRING, "param": nullable(STRING),
                                          "type": STRING}, ("type", "message", "param", "code"))}, ("error",))

MODEL = closed({"id": STRING, "created": INTEGER, "object": enum("model"), "owned_by": STRING,
                "shutdown_date": nullable(STRING)}, ("id", "object", "created", "owned_by"))
LIST_MODELS = closed({"object": enum("list"), "data": array(MODEL)}, ("object", "data"))
