"""The circuit breaker, driven by a fake clock."""

from __future__ import annotations

import threading

import pytest

from fallback.breaker import BreakerSettings, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock, **overrides: float) -> CircuitBreaker:
    settings = {"window_size": 4, "min_calls": 4, "failure_rate_threshold": 0.5, "cooldown_s": 10.0,
                "half_open_max_calls": 1, **overrides}
    return CircuitBreaker(BreakerSettings(**settings), clock=clock)  # type: ignore[arg-type]


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.settings.min_calls):
        breaker.record_failure()


def test_starts_closed_and_allows_calls() -> None:
    breaker = make(FakeClock())
    assert breaker.state == "closed"
    assert breaker.allow()


def test_does_not_trip_before_min_calls_even_if_all_fail() -> None:
    breaker = make(FakeClock())
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.failure_rate() == 1.0


def test_trips_when_failure_rate_reaches_threshold() -> None:
    breaker = make(FakeClock())
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()  # 2 of 4 = 0.5
    assert breaker.state == "open"
    assert not breaker.allow()


def test_window_slides_so_old_failures_are_forgotten() -> None:
    breaker = make(FakeClock(), failure_rate_threshold=0.75)
    for outcome in (False, False, True, True, True, False):
        breaker.record_success() if outcome else breaker.record_failure()
    assert breaker.failure_rate() == 0.25  # the last four: S, S, S, F (all six would give 0.5)
    assert breaker.state == "closed"


def test_open_until_cooldown_then_half_open_allows_limited_trials() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(9.9)
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(0.1)
    assert breaker.state == "half_open"
    assert breaker.allow() and breaker.allow()
    assert not breaker.allow()  # only two trial calls at a time


def test_success_in_half_open_closes_and_clears_history() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.failure_rate() == 0.0
    breaker.record_failure()  # one failure after closing must not reopen (min_calls again)
    assert breaker.state == "closed"


def test_failure_in_half_open_reopens_and_restarts_cooldown() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.state == "half_open"


def test_ignored_outcome_gives_back_the_trial_slot() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_ignored()
    assert breaker.state == "half_open"
    assert breaker.allow()


def test_zero_cooldown_goes_straight_to_half_open() -> None:
    breaker = make(FakeClock(), cooldown_s=0.0)
    trip(breaker)
    assert breaker.state == "half_open"


@pytest.mark.parametrize("settings", [{"window_size": 0}, {"min_calls": 0}, {"failure_rate_threshold": 0.0},
                                      {"failure_rate_threshold": 1.5}, {"cooldown_s": -1.0},
                                      {"half_open_max_calls": 0}])
def test_invalid_settings_are_rejected(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerSettings(**settings)  # type: ignore[arg-type]


def test_concurrent_use_keeps_half_open_trial_limit() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_max_calls=3)
    trip(breaker)
    clock.advance(10)
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        result = [breaker.allow() for _ in range(50)]
        with lock:
            allowed.extend(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 3
