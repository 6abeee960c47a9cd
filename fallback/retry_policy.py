"""When the gateway tries again, how long it waits, and when it must stop: pure functions, no I/O.

Retries are decided by the type of the error (``fallback.errors``), never by its message. Time is
wall-clock: ``escalation_deadline`` turns the overall deadline (counted from the start of the caller's
request) and, when a local answer is already waiting, the shorter escalation budget (counted from the start
of the escalation) into one ``time.monotonic()`` instant that bounds everything the gateway does: connect,
every attempt, reading the body or stream, and the backoff sleeps between attempts.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable

from fallback.errors import (
    ProviderConnectError, ProviderError, ProviderHTTPError, ProviderProtocolError, ProviderTimeoutError,
    StreamInterruptedError,
)


def is_retryable(error: ProviderError) -> bool:
    """Whether the same provider may be tried again after ``error``."""
    if isinstance(error, ProviderHTTPError):
        return error.status in (408, 429) or error.status >= 500
    if isinstance(error, StreamInterruptedError):
        return False
    return isinstance(error, (ProviderTimeoutError, ProviderConnectError, ProviderProtocolError))


def counts_as_failure(error: ProviderError) -> bool:
    """Whether ``error`` says the provider is unhealthy (a 400 or 401 says the request or key is wrong)."""
    return is_retryable(error) or isinstance(error, StreamInterruptedError)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def backoff_s(retry: int, *, base_s: float, cap_s: float, jitter: bool, rng: random.Random) -> float:
    """Exponential backoff capped at ``cap_s``; full jitter draws uniformly below it."""
    ceiling = min(cap_s, base_s * 2 ** retry)
    return rng.uniform(0.0, ceiling) if jitter else ceiling


def escalation_deadline(*, request_started: float, escalation_started: float, overall_s: float,
                        escalation_budget_s: float | None) -> float:
    """The instant (``time.monotonic()``) by which an escalation must be over.

    ``overall_s`` counts from the start of the caller's request, so time the local model already spent is
    not given again to the cloud; ``escalation_budget_s`` (None unless a local answer is ready) counts from
    the start of the escalation. The earlier of the two wins.
    """
    deadline = request_started + overall_s
    if escalation_budget_s is not None:
        deadline = min(deadline, escalation_started + escalation_budget_s)
    return deadline
