"""The runtime as the cascade's local leg: the one place the runtime's errors become the fallback's.

``fallback`` defines what it needs from a local model (``fallback.local_leg.LocalLeg``) and never imports the
runtime; the server, which sits on both, wraps a ``Runtime`` in ``RuntimeLocalLeg`` and hands that to the
``Cascade``. Errors are translated by type, at this boundary, keeping their messages::

    PromptTooLongError   -> LocalInputTooLongError   (the cloud may take the prompt)
    UnsupportedCapabilityError -> RequestRejectedError, code "unsupported_capability"
    InvalidRequestError  -> RequestRejectedError     (the caller's mistake: 400, never escalated)
    EngineCrashedError   -> LocalCrashedError        (reason local_crashed)
    EngineStartingError  -> LocalStartingError       (reason local_starting)
    any other EdgeRuntimeError -> LocalLegError      (reason local_error)
"""

from __future__ import annotations

from collections.abc import Iterator

from edge_runtime.errors import (EdgeRuntimeError, EngineCrashedError, EngineStartingError, InvalidRequestError,
                                 PromptTooLongError, UnsupportedCapabilityError)
from edge_runtime.results import GenerationResult, StreamEvent
from edge_runtime.runtime import GenerationStream, Runtime
from fallback.errors import FallbackError
from fallback.local_leg import (LocalCrashedError, LocalInputTooLongError, LocalLegError, LocalRequest,
                                LocalStartingError, RequestRejectedError)


def translate(error: EdgeRuntimeError) -> FallbackError:
    """The fallback's error for a runtime error; the runtime's type name stays in the message of failures."""
    if isinstance(error, PromptTooLongError):
        return LocalInputTooLongError(str(error))
    if isinstance(error, UnsupportedCapabilityError):
        return RequestRejectedError(str(error), code="unsupported_capability")
    if isinstance(error, InvalidRequestError):
        return RequestRejectedError(str(error))
    failure = f"{type(error).__name__}: {error}"
    if isinstance(error, EngineCrashedError):
        return LocalCrashedError(failure)
    if isinstance(error, EngineStartingError):
        return LocalStartingError(failure)
    return LocalLegError(failure)


class RuntimeLocalLeg:
    """A ``Runtime`` behind the ``LocalLeg`` protocol; ``runtime`` stays reachable for the server's metrics."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def ready(self) -> bool:
        return self.runtime.ready

    def stream(self, request: LocalRequest) -> RuntimeLocalStream:
        source = {"messages": request.messages} if request.messages is not None else {"prompt": request.prompt}
        optional = {"grammar": request.grammar} if request.grammar else {}
        try:
            if request.record_hidden is not None and self.runtime.backend.capabilities.hidden_states:
                optional["record_hidden"] = request.record_hidden  # a backend without them: probabilities only
            stream = self.runtime.stream(
                **source, max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                seed=request.seed, stop=request.stop, top_logprobs=request.top_logprobs,
                total_deadline_s=request.deadline_s, **optional)
        except EdgeRuntimeError as exc:
            raise translate(exc) from exc
        return RuntimeLocalStream(stream)


class RuntimeLocalStream:
    """A runtime ``GenerationStream`` whose failures while streaming are the fallback's errors too."""

    def __init__(self, stream: GenerationStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[StreamEvent]:
        try:
            yield from self._stream
        except EdgeRuntimeError as exc:
            raise translate(exc) from exc

    def close(self) -> None:
        self._stream.close()

    @property
    def result(self) -> GenerationResult | None:
        return self._stream.result
