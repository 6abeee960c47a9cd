"""Checks a generation request's arguments before any work is done, with messages a caller can act on.

Bad input must fail fast and clearly (empty prompt, bad UTF-8, max_tokens <= 0 or absurd, negative
temperature, stop that is not text) instead of reaching native code.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_runtime.errors import InvalidRequestError

MAX_STOP_SEQUENCES = 16
MAX_TOP_LOGPROBS = 20
MAX_RECORDED_HIDDEN = 64  # generated tokens whose hidden states one request may record (each a decode of its own)
ABSURD_MAX_TOKENS = 1_000_000


def prompt_text(prompt: object) -> str:
    """The prompt as text: bytes must be UTF-8, text must be encodable, and it must not be empty."""
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = bytes(prompt).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(f"prompt is not valid UTF-8 (byte {exc.start}: {exc.reason})") from exc
    if not isinstance(prompt, str):
        raise InvalidRequestError(f"prompt must be text, got {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(f"prompt is not valid UTF-8 (character {exc.start}: {exc.reason})") from exc
    if not prompt:
        raise InvalidRequestError("prompt is empty")
    return prompt


def stop_sequences(stop: object) -> tuple[str, ...]:
    """``stop`` as a tuple of non-empty strings; None means no stop sequences."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, Sequence) or isinstance(stop, (bytes, bytearray)):
        raise InvalidRequestError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"stop has {len(stop)} sequences; at most {MAX_STOP_SEQUENCES} are allowed")
    for item in stop:
        if not isinstance(item, str) or not item:
            raise InvalidRequestError(f"each stop sequence must be a non-empty string, got {item!r}")
    return tuple(stop)


def max_tokens_value(max_tokens: object, n_ctx: int) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequestError(f"max_tokens must be an integer, got {max_tokens!r}")
    if max_tokens <= 0:
        raise InvalidRequestError(f"max_tokens must be at least 1, got {max_tokens}")
    if max_tokens > min(ABSURD_MAX_TOKENS, n_ctx):
        raise InvalidRequestError(f"max_tokens is {max_tokens:,}; the model's context holds {n_ctx:,} tokens")
    return max_tokens


def record_hidden_value(value: object) -> int | None:
    """How many generated tokens' hidden states a request records (None: none, not even the prompt's)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RECORDED_HIDDEN:
        raise InvalidRequestError(f"record_hidden must be an integer from 0 to {MAX_RECORDED_HIDDEN}, got {value!r}")
    return value


def sampling_values(temperature: object, top_p: object, top_k: object, top_logprobs: object) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 5:
        raise InvalidRequestError(f"temperature must be a number between 0 and 5, got {temperature!r}")
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
        raise InvalidRequestError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise InvalidRequestError(f"top_k must be a non-negative integer, got {top_k!r}")
    if not isinstance(top_logprobs, int) or isinstance(top_logprobs, bool) or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, "
                                  f"got {top_logprobs!r}")
