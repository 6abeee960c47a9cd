"""The local leg as the cascade sees it: a small protocol, so the fallback never imports the runtime.

The cascade needs four things from a local model: whether it can answer now (``ready``), a stream of pieces
for a request, a way to stop that stream, and the finished answer with its tokens' log-probabilities. The
server adapts the runtime to this protocol (``edge_runtime.server.local_leg``) and translates the runtime's
errors into the fallback's at that boundary::

    LocalLegError             the local model could not answer (the cascade escalates)
    ├── LocalCrashedError     its engine process died while answering
    ├── LocalStartingError    its engine process is starting or restarting
    └── LocalInputTooLongError  the prompt is over its input cap (the cloud may still take it)
    RequestRejectedError      the request itself is invalid: the caller's mistake, never escalated

Anything else a local leg raises is a bug and propagates as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from fallback.errors import (LocalCrashedError, LocalInputTooLongError, LocalLegError, LocalStartingError,
                             RequestRejectedError)

__all__ = ["LocalAlternative", "LocalAnswer", "LocalCrashedError", "LocalInputTooLongError", "LocalLeg",
           "LocalLegError", "LocalPiece", "LocalRequest", "LocalStartingError", "LocalStream", "LocalToken",
           "RequestRejectedError", "failure_kind"]


@dataclass(frozen=True)
class LocalRequest:
    """What the local model is asked: a prompt or chat messages, and how to sample."""

    prompt: str | None = None
    messages: list[dict] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    top_logprobs: int = 0
    deadline_s: float | None = None
    grammar: str | None = None
    record_hidden: int | None = None  # hidden states on the first tokens (a probe's calibration), where it can


class LocalAlternative(Protocol):
    """One alternative the model considered at a step."""

    @property
    def token_id(self) -> int: ...
    @property
    def logprob(self) -> float: ...


class LocalToken(Protocol):
    """One generated token with its log-probability and, when asked for, the alternatives. A leg that records
    hidden states (``LocalRequest.record_hidden``) also gives a token the ``hidden`` state it was chosen from
    (a numpy vector; read with ``getattr(token, "hidden", None)``, it is optional)."""

    @property
    def token_id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def logprob(self) -> float: ...
    @property
    def top(self) -> Sequence[LocalAlternative]: ...


class LocalUsage(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


class LocalTimings(Protocol):
    @property
    def time_to_first_token_s(self) -> float | None: ...


class LocalAnswer(Protocol):
    """A finished local answer; the cascade hands it on untouched as ``CascadeResult.local``."""

    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> str: ...
    @property
    def tokens(self) -> Sequence[LocalToken]: ...
    @property
    def usage(self) -> LocalUsage: ...
    @property
    def timings(self) -> LocalTimings: ...
    @property
    def notes(self) -> Sequence[str]: ...


class LocalPiece(Protocol):
    """A piece of streamed text; ``token`` is None for text released without a token of its own."""

    @property
    def text(self) -> str: ...
    @property
    def token(self) -> LocalToken | None: ...


class LocalStream(Protocol):
    """Iterate for pieces; ``result`` holds the answer once the stream ended or was closed."""

    def __iter__(self) -> Iterator[LocalPiece]: ...
    def close(self) -> None: ...
    @property
    def result(self) -> LocalAnswer | None: ...


class LocalLeg(Protocol):
    """A local model the cascade can ask; its failures are ``LocalLegError`` or ``RequestRejectedError``."""

    @property
    def ready(self) -> bool: ...
    def stream(self, request: LocalRequest) -> LocalStream: ...


def failure_kind(error: LocalLegError) -> str | None:
    """"crashed" / "starting" for the engine process's own failures (the policy gives them their own reasons)."""
    if isinstance(error, LocalCrashedError):
        return "crashed"
    if isinstance(error, LocalStartingError):
        return "starting"
    return None
