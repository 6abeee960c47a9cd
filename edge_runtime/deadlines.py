"""Time-to-first-token and total deadlines for one generation, polled between prefill chunks and tokens.

The backend asks ``expired()`` before each prefill chunk and after each token, so a generation really stops
at its deadline; the first-token deadline stops applying once the first token exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Deadlines:
    started_at: float
    first_token_by: float | None
    finish_by: float | None
    first_token_seen: bool = False
    first_token_late: bool = False

    @classmethod
    def start(cls, ttft_deadline_s: float | None, total_deadline_s: float | None) -> "Deadlines":
        now = time.perf_counter()
        return cls(now, None if ttft_deadline_s is None else now + ttft_deadline_s,
                   None if total_deadline_s is None else now + total_deadline_s)

    def saw_first_token(self) -> None:
        """Marks the first token; one that arrives after its deadline still ends the generation."""
        self.first_token_seen = True
        self.first_token_late = self.first_token_by is not None and time.perf_counter() > self.first_token_by

    def seconds_left(self) -> float | None:
        """Seconds until the next deadline that still applies (0 once one has passed); None with no deadline.
        A waiter that sleeps this long notices expiry as soon as polling would, without waking in between."""
        if self.first_token_late:
            return 0.0
        ends = [self.finish_by] if self.finish_by is not None else []
        if not self.first_token_seen and self.first_token_by is not None:
            ends.append(self.first_token_by)
        return max(0.0, min(ends) - time.perf_counter()) if ends else None

    def __call__(self) -> bool:
        """A ``ShouldAbort``: a backend that waits between polls can ask ``seconds_left`` how long to sleep."""
        return self.expired()

    def expired(self) -> bool:
        now = time.perf_counter()
        if self.first_token_late:
            return True
        if self.finish_by is not None and now >= self.finish_by:
            return True
        return not self.first_token_seen and self.first_token_by is not None and now >= self.first_token_by
