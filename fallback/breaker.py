"""A circuit breaker per cloud provider, so a failing provider is skipped instead of waited on.

States::

    closed ──(failure rate >= threshold over the last window_size calls,
              once min_calls outcomes are known)──► open
    open ──(cooldown_s elapsed)──► half_open
    half_open ──(a trial call succeeds)──► closed
    half_open ──(a trial call fails)──► open (the cooldown starts again)

In half-open at most ``half_open_max_calls`` trial calls are let through at a time. An outcome that says
nothing about the provider's health (a 400, a cancelled call) is reported with ``record_ignored`` so the
trial slot it held is given back. Time comes from an injected clock, so tests need not sleep.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    """How sensitive a breaker is; defaults suit a provider called a few times a minute."""

    window_size: int = 20
    min_calls: int = 5
    failure_rate_threshold: float = 0.5
    cooldown_s: float = 30.0
    half_open_max_calls: int = 1

    def __post_init__(self) -> None:
        if self.window_size < 1 or self.min_calls < 1 or self.half_open_max_calls < 1:
            raise ValueError("window_size, min_calls and half_open_max_calls must be >= 1")
        if not 0.0 < self.failure_rate_threshold <= 1.0:
            raise ValueError(f"failure_rate_threshold must be in (0, 1]; got {self.failure_rate_threshold}")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0; got {self.cooldown_s}")


class CircuitBreaker:
    """Failure-rate breaker over a sliding window of outcomes; safe to share between threads."""

    def __init__(self, settings: BreakerSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._outcomes: deque[bool] = deque(maxlen=self.settings.window_size)
        self._state = CLOSED
        self._opened_at = 0.0
        self._trials_in_flight = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``; an open breaker past its cooldown reads half_open."""
        with self._lock:
            self._refresh()
            return self._state

    def allow(self) -> bool:
        """True when a call may go ahead; in half-open this takes one of the trial slots."""
        with self._lock:
            self._refresh()
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and self._trials_in_flight < self.settings.half_open_max_calls:
                self._trials_in_flight += 1
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded; in half-open this closes the breaker."""
        with self._lock:
            self._refresh()
            if self._state == HALF_OPEN:
                self._close()
            elif self._state == CLOSED:
                self._outcomes.append(True)

    def record_failure(self) -> None:
        """A call failed in a way that says the provider is unhealthy."""
        with self._lock:
            self._refresh()
            if self._state == HALF_OPEN:
                self._open()
            elif self._state == CLOSED:
                self._outcomes.append(False)
                if self._should_trip():
                    self._open()

    def record_ignored(self) -> None:
        """A call ended without saying anything about health; gives back a half-open trial slot."""
        with self._lock:
            if self._state == HALF_OPEN and self._trials_in_flight > 0:
                self._trials_in_flight -= 1

    def failure_rate(self) -> float:
        """Share of failures among the outcomes in the window (0.0 when the window is empty)."""
        with self._lock:
            return self._failure_rate()

    def _failure_rate(self) -> float:
        if not self._outcomes:
            return 0.0
        return self._outcomes.count(False) / len(self._outcomes)

    def _should_trip(self) -> bool:
        enough = len(self._outcomes) >= self.settings.min_calls
        return enough and self._failure_rate() >= self.settings.failure_rate_threshold

    def _refresh(self) -> None:
        cooled = self._clock() - self._opened_at >= self.settings.cooldown_s
        if self._state == OPEN and cooled:
            self._state = HALF_OPEN
            self._trials_in_flight = 0

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._trials_in_flight = 0

    def _close(self) -> None:
        self._state = CLOSED
        self._outcomes.clear()
        self._trials_in_flight = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failure_rate={self.failure_rate():.2f})"
