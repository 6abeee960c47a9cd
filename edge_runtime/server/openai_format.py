"""Response bodies in the OpenAI wire format, built from cascade results; routing goes in an extra ``edge``
object (and response headers) so stock clients parse every response unchanged.

Every body satisfies the schemas of the official OpenAI OpenAPI document (checked field by field in
``tests/edge_runtime/server/test_openai_schema.py``): a field the document does not allow to be null is left
out rather than sent as null. ``system_fingerprint`` is therefore absent: it names a backend configuration
whose answers are reproducible together, and a cascade that may answer from either of two models has no
such single configuration. Log-probabilities are finite numbers (JSON has no ``-Infinity``): a token the
model ruled out gets ``-9999.0``, OpenAI's own value for "very unlikely".
"""

from __future__ import annotations

import math
import time
import uuid

FINISH_REASONS = {"stop": "stop", "length": "length", "deadline": "length", "cancelled": "stop",
                  "tool_calls": "tool_calls", "content_filter": "content_filter"}
COMPLETION_FINISH_REASONS = ("stop", "length", "content_filter")  # /v1/completions has no tool calls
UNLIKELY_LOGPROB = -9999.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(value: str | None) -> str:
    return FINISH_REASONS.get(value or "stop", "stop")


def _completion_finish_reason(value: str | None) -> str | None:
    """A finish reason ``/v1/completions`` allows; None stays None (a stream chunk before the last)."""
    if value is None:
        return None
    reason = finish_reason(value)
    return reason if reason in COMPLETION_FINISH_REASONS else "stop"


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else UNLIKELY_LOGPROB


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def edge_info(result) -> dict:
    return {"route": result.route_taken, "reason": result.decision.reason.value,
            "confidence": result.confidence, "ledger_id": result.ledger_id,
            "degraded_reason": result.degraded_reason, "finish_reason": result.finish_reason,
            "latency_s": round(result.latency_s, 6),
            "policy_wanted_cloud": result.policy_wanted_cloud}


def edge_headers(result_or_route, confidence: float | None = None) -> dict[str, str]:
    if isinstance(result_or_route, str):
        return {"X-Edge-Route-Taken": result_or_route}
    result = result_or_route
    headers = {"X-Edge-Route-Taken": result.route_taken, "X-Edge-Reason": result.decision.reason.value}
    if result.confidence is not None:
        headers["X-Edge-Confidence"] = f"{result.confidence:.4f}"
    if result.ledger_id:
        headers["X-Edge-Ledger-Id"] = result.ledger_id
    return headers


def _token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(tokens, top: int | None = None) -> dict:
    return {"content": [chat_token_logprob(token, top) for token in tokens], "refusal": None}


def chat_token_logprob(token, top: int | None = None) -> dict:
    """One token's logprobs with at most ``top`` alternatives (the cascade may have asked the model for more,
    for its margin signals, than the client asked to see)."""
    return {"token": token.text, "logprob": _logprob(token.logprob), "bytes": _token_bytes(token.text),
            "top_logprobs": [{"token": alt.text, "logprob": _logprob(alt.logprob), "bytes": _token_bytes(alt.text)}
                             for alt in token.top[:top]]}


def completion_logprobs(tokens, offset: int = 0, top: int | None = None) -> dict:
    offsets, position = [], offset
    for token in tokens:
        offsets.append(position)
        position += len(token.text)
    return {"tokens": [token.text for token in tokens],
            "token_logprobs": [_logprob(token.logprob) for token in tokens],
            "top_logprobs": [{alt.text: _logprob(alt.logprob) for alt in token.top[:top]} for token in tokens],
            "text_offset": offsets}


def _local_tokens(result) -> list:
    return result.local.tokens if result.local is not None and result.route_taken != "cloud" else []


def tool_call(call: dict) -> dict:
    """A tool call as the spec requires it: a string ``id`` (a streamed cloud answer may leave it out),
    ``type`` and the function's name and arguments as strings."""
    function = call.get("function") or {}
    return {"id": call.get("id") or new_id("call"), "type": "function",
            "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""}}


def chat_completion(result, model: str, with_logprobs: bool, top: int | None = None) -> dict:
    message = {"role": "assistant", "content": result.text, "refusal": None}
    reason = finish_reason(result.finish_reason)
    if result.tool_calls:
        message["tool_calls"] = [tool_call(call) for call in result.tool_calls]
        message["content"] = result.text or None
        reason = "tool_calls"
    logprobs = chat_logprobs(_local_tokens(result), top) if with_logprobs and result.route_taken != "cloud" else None
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason}],
            "usage": usage(result.prompt_tokens, result.completion_tokens), "edge": edge_info(result)}


def completion(result, model: str, with_logprobs: bool, top: int | None = None) -> dict:
    shown = with_logprobs and result.route_taken != "cloud"
    logprobs = completion_logprobs(_local_tokens(result), top=top) if shown else None
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": result.text, "logprobs": logprobs,
                         "finish_reason": _completion_finish_reason(result.finish_reason or "stop")}],
            "usage": usage(result.prompt_tokens, result.completion_tokens), "edge": edge_info(result)}


def chat_chunk(chunk_id: str, model: str, delta: dict, reason: str | None = None, logprobs: dict | None = None) -> dict:
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}]}


def completion_chunk(chunk_id: str, model: str, text: str, reason: str | None = None,
                     logprobs: dict | None = None) -> dict:
    return {"id": chunk_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs,
                         "finish_reason": _completion_finish_reason(reason)}]}


def error_body(message: str, error_type: str, param: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param,
                      "code": None if code is None else str(code)}}
