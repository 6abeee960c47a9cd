"""Every error the cloud fallback raises, under one root so callers can catch them all.

The tree::

    FallbackError
    ├── ConfigError                 the gateway or ledger configuration is invalid
    ├── PrivacyRefusalError         the request is tagged never_send; nothing left the device
    ├── CircuitOpenError            a provider was skipped because its breaker is open
    ├── AllProvidersFailedError     no provider produced an answer (holds every per-provider error)
    ├── LedgerError                 the SQLite ledger cannot be used (newer schema, bad entry)
    ├── CloudUnavailableError       neither leg could answer: the local model failed, the cloud is unavailable
    ├── RequestRejectedError        the request is the caller's mistake (invalid, or answerable by neither leg)
    ├── LocalLegError               the local model could not answer (a local leg raises it; cascade escalates)
    │   ├── LocalCrashedError       its engine process died while answering
    │   ├── LocalStartingError      its engine process is starting or restarting
    │   └── LocalInputTooLongError  the prompt is over its input cap (the cloud may still take it)
    └── ProviderError               one cloud provider failed (carries the provider name)
        ├── ProviderTimeoutError    an attempt or the overall deadline ran out
        ├── ProviderConnectError    the connection could not be made or was dropped (DNS, refused, reset)
        ├── ProviderHTTPError       the provider answered with an error status (status, retry_after_s)
        │   └── ProviderRateLimitedError   status 429
        └── ProviderProtocolError   the answer could not be understood (malformed JSON, broken stream)
            └── StreamInterruptedError     a stream broke after content reached the caller; never retried

httpx errors are translated at the boundary (``raise ProviderTimeoutError(...) from exc``); the gateway
decides what to retry by the type of these errors, never by their message text.
"""

from __future__ import annotations

from collections.abc import Sequence


class FallbackError(Exception):
    """Root of every error raised by ``fallback``."""


class ConfigError(FallbackError, ValueError):
    """The configuration is invalid; the message says which field and why."""


class PrivacyRefusalError(FallbackError):
    """The request is tagged ``never_send``, so it was refused before any network I/O."""


class CircuitOpenError(FallbackError):
    """The provider's circuit breaker is open; the provider was not called."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        super().__init__(f"{provider}: circuit breaker is open; provider skipped")


class AllProvidersFailedError(FallbackError):
    """Every provider failed or was skipped; ``errors`` holds one entry per failure, in order."""

    def __init__(self, errors: Sequence[Exception], *, deadline_exceeded: bool = False) -> None:
        self.errors = list(errors)
        self.deadline_exceeded = deadline_exceeded
        details = "; ".join(str(error) for error in self.errors) or "no provider was tried"
        prefix = "overall deadline reached" if deadline_exceeded else "all cloud providers failed"
        super().__init__(f"{prefix}: {details}")


class LedgerError(FallbackError):
    """The ledger database cannot be used, or an entry is invalid."""


class CloudUnavailableError(FallbackError):
    """Neither leg could answer: the local model failed and the cloud is unavailable or not configured."""


class RequestRejectedError(FallbackError, ValueError):
    """The request is the caller's mistake: the local model refused its arguments, or it is too long for the
    local model and no cloud may take it. Never escalated. ``code`` names the kind of refusal when the side
    that refused gave one (e.g. ``"unsupported_capability"``: a grammar on a backend without grammars)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class LocalLegError(FallbackError):
    """The local model could not answer; the message says why, in the local side's words."""


class LocalCrashedError(LocalLegError):
    """The local engine's process died while answering."""


class LocalStartingError(LocalLegError):
    """The local engine's process is starting or restarting and cannot answer yet."""


class LocalInputTooLongError(LocalLegError):
    """The prompt is over the local model's input cap; the cloud may still take it."""


class ProviderError(FallbackError):
    """One cloud provider failed; ``provider`` names it."""

    def __init__(self, provider: str, message: str) -> None:
        self.provider = provider
        self.reason = message
        super().__init__(f"{provider}: {message}")


class ProviderTimeoutError(ProviderError):
    """An attempt exceeded its timeout, or the overall deadline ran out."""


class ProviderConnectError(ProviderError):
    """The connection failed: DNS, refused, reset, or dropped mid-body."""


class ProviderHTTPError(ProviderError):
    """The provider answered with an error status."""

    def __init__(self, provider: str, status: int, *, retry_after_s: float | None = None,
                 detail: str = "") -> None:
        self.status = status
        self.retry_after_s = retry_after_s
        wait = f" (Retry-After {retry_after_s:g} s)" if retry_after_s is not None else ""
        super().__init__(provider, f"HTTP {status}{wait}{': ' + detail if detail else ''}")


class ProviderRateLimitedError(ProviderHTTPError):
    """The provider answered 429 Too Many Requests."""


class ProviderProtocolError(ProviderError):
    """The answer could not be understood: malformed JSON, missing fields, a broken stream."""


class StreamInterruptedError(ProviderProtocolError):
    """A stream broke after content was yielded; retrying would duplicate text, so it is not retried."""

    def __init__(self, provider: str, message: str, *, chunks_yielded: int) -> None:
        self.chunks_yielded = chunks_yielded
        super().__init__(provider, f"{message} after {chunks_yielded} chunk(s) were delivered")
