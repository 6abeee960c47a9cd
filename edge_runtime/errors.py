"""Every error the runtime raises, under one root so callers can catch them all.

The tree::

    EdgeRuntimeError
    ├── ModelFileError          the file cannot be used (missing, directory, empty, bad magic, truncated)
    │   ├── ManifestError       a converter's manifest.json is missing or does not match its schema
    │   └── NoBuildFitsError    no accepted build of a manifest has a backend here and fits the memory budget
    ├── UnknownFormatError      no backend is registered for the requested format
    ├── BackendUnavailableError the backend's library is not installed on this machine
    ├── CapExceededError        a hard cap would be broken
    │   ├── ModelTooLargeError  the fit plan does not fit the file-size cap or memory budget
    │   └── PromptTooLongError  the prompt is over the input-token cap (policy "reject")
    ├── InvalidRequestError     a bad argument: empty prompt, bad UTF-8, max_tokens <= 0, ...
    │   └── UnsupportedCapabilityError  the request needs what this backend cannot do (names both)
    └── BackendError            the native library failed while running
        ├── EngineCrashedError  the engine's child process died (a signal, an abort, an OOM kill)
        └── EngineStartingError the engine's child process is starting or restarting and cannot answer yet

Third-party failures are translated at the boundary (``raise BackendError(...) from exc``); messages carry
the numbers a user needs to act on them.
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Root of every error raised by ``edge_runtime``."""


class ModelFileError(EdgeRuntimeError):
    """The model file cannot be used; the message names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(ModelFileError):
    """A converter manifest cannot be read or does not match the schema (``edge_runtime.manifest``)."""


class NoBuildFitsError(ModelFileError):
    """No accepted build of a manifest has a backend here and fits the memory budget; the reason says which."""


class UnknownFormatError(EdgeRuntimeError):
    """No backend is registered for a format."""


class BackendUnavailableError(EdgeRuntimeError):
    """The library a backend needs is not installed."""


class CapExceededError(EdgeRuntimeError):
    """A hard cap would be broken."""


class ModelTooLargeError(CapExceededError):
    """The model does not fit the file-size cap or the memory budget."""


class PromptTooLongError(CapExceededError):
    """The prompt is longer than the input-token cap."""

    def __init__(self, prompt_tokens: int, cap: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.cap = cap
        super().__init__(f"prompt is {prompt_tokens:,} tokens; cap is {cap:,}")


class InvalidRequestError(EdgeRuntimeError, ValueError):
    """A request argument is invalid."""


class UnsupportedCapabilityError(InvalidRequestError):
    """A request needs a capability the loaded backend does not have (``Capabilities``): a grammar on ONNX."""

    def __init__(self, backend: str, capability: str, detail: str = "") -> None:
        self.backend, self.capability = backend, capability
        super().__init__(f"the {backend} backend does not support {capability}" + (f": {detail}" if detail else ""))


class BackendError(EdgeRuntimeError):
    """The native backend failed while loading or running a model."""


class EngineCrashedError(BackendError):
    """The child process running the engine died; ``cause`` names how ("SIGSEGV", "exit status 1")."""

    def __init__(self, message: str, cause: str = "unknown") -> None:
        self.cause = cause
        super().__init__(message)


class EngineStartingError(BackendError):
    """The engine is starting or restarting; the request can go to the cloud or wait."""
