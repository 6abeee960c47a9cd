"""Response bodies in the OpenAI wire format, built from cascade results; routing goes in an extra ``edge``
object (and response headers) so stock clients parse every response unchanged."""

from __future__ import annotations

import time
import uuid

FINISH_REASONS = {"stop": "stop", "length": "length", "deadline": "length", "cancelled": "stop",
                  "tool_calls": "tool_calls", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(value: str | None) -> str:
    return FINISH_REASONS.get(value or "stop", "stop")


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def edge_info(result) -> dict:
    return {"route": result.route_taken, "reason": result.decision.reason.value,
            "confidence": result.confidence, "ledger_id": result.ledger_id,
            "degraded_reason": result.degraded_reason, "finish_reason": result.finish_reason,
            "latency_s": round(result.latency_s, 6)}


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


def chat_logprobs(tokens) -> dict:
    return {"content": [chat_token_logprob(token) for token in tokens], "refusal": None}


def chat_token_logprob(token) -> dict:
    return {"token": token.text, "logprob": token.logprob, "bytes": _token_bytes(token.text),
            "top_logprobs": [{"token": alt.text, "logprob": alt.logprob, "bytes": _token_bytes(alt.text)}
                             for alt in token.top]}


def completion_logprobs(tokens, offset: int = 0) -> dict:
    offsets, position = [], offset
    for token in tokens:
        offsets.append(position)
        position += len(token.text)
    return {"tokens": [token.text for token in tokens], "token_logprobs": [token.logprob for token in tokens],
            "top_logprobs": [{alt.text: alt.logprob for alt in token.top} for token in tokens],
            "text_offset": offsets}


def _local_tokens(result) -> list:
    return result.local.tokens if result.local is not None and result.route_taken != "cloud" else []


def chat_completion(result, model: str, with_logprobs: bool) -> dict:
    message = {"role": "assistant", "content": result.text, "refusal": None}
    reason = finish_reason(result.finish_reason)
    if result.tool_calls:
        message["tool_calls"], message["content"], reason = result.tool_calls, result.text or None, "tool_calls"
    logprobs = chat_logprobs(_local_tokens(result)) if with_logprobs and result.route_taken != "cloud" else None
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason}],
            "usage": usage(result.prompt_tokens, result.completion_tokens), "system_fingerprint": None,
            "edge": edge_info(result)}


def completion(result, model: str, with_logprobs: bool) -> dict:
    logprobs = completion_logprobs(_local_tokens(result)) if with_logprobs and result.route_taken != "cloud" else None
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": result.text, "logprobs": logprobs,
                         "finish_reason": finish_reason(result.finish_reason)}],
            "usage": usage(result.prompt_tokens, result.completion_tokens), "system_fingerprint": None,
            "edge": edge_info(result)}


def chat_chunk(chunk_id: str, model: str, delta: dict, reason: str | None = None, logprobs: dict | None = None) -> dict:
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}]}


def completion_chunk(chunk_id: str, model: str, text: str, reason: str | None = None,
                     logprobs: dict | None = None) -> dict:
    return {"id": chunk_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}]}


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
