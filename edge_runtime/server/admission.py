"""Admission control: how many requests the server holds at once; beyond that a request spills or is refused."""

from __future__ import annotations

import threading


class Admission:
    """Counts requests in flight; beyond ``limit`` a request is spilled to the cloud or refused."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_flight, self._lock = limit, 0, threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
