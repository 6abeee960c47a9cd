"""The thread bridge: the local leg streams in a worker thread, the event loop reads its pieces from a queue.

The local leg is blocking (it decodes on this machine); the cascade's streaming is async. The bridge starts
the leg in a daemon thread, hands each piece to the loop with ``call_soon_threadsafe``, holds pieces back
until the caller's ``done`` says a decision can be made, and stops the leg when asked (at its next token).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

from fallback.cascade_types import CascadeRequest, LocalRun, StreamPiece
from fallback.errors import RequestRejectedError
from fallback.local_leg import LocalLeg, LocalLegError
from fallback.local_run import Confidence, answered_run, failed_run
from fallback.policy import LocalOutcome


class LocalStreamBridge:
    """Runs the local stream in a thread and hands its pieces to the event loop through a queue."""

    _END = object()

    def __init__(self, local: LocalLeg, request: CascadeRequest, confidence: Confidence) -> None:
        self.local, self.request, self.confidence = local, request, confidence
        self.loop = asyncio.get_running_loop()
        self.pieces: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.tokens: list = []  # the tokens held back so far
        self.started = time.perf_counter()
        self._run: LocalRun | None = None
        self._invalid: RequestRejectedError | None = None
        self._ended = False
        self.thread = threading.Thread(target=self._stream, daemon=True)
        self.thread.start()

    def _stream(self) -> None:
        try:
            stream = self.local.stream(self.request.local_request())
            for piece in stream:
                if self.cancelled.is_set():
                    stream.close()
                    break
                self._hand_over(StreamPiece(piece.text, piece.token))
            self._run = answered_run(self.request, stream.result, self.confidence, time.perf_counter() - self.started)
        except RequestRejectedError as exc:
            self._run, self._invalid = LocalRun(None, LocalOutcome(error=str(exc))), exc
        except LocalLegError as exc:
            self._run = failed_run(self.request, exc)
        finally:
            self._hand_over(self._END)

    def _hand_over(self, item: object) -> None:
        """Queues ``item`` for the event loop; a loop that is gone (server shut down) means nobody listens."""
        try:
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, item)
        except RuntimeError:
            self.cancelled.set()

    async def hold(self, done: Callable[[list], bool]) -> list[StreamPiece]:
        """Collects pieces until ``done(held tokens)`` says the decision can be made, or the local stream
        ends; ``tokens`` then holds the held tokens. A request the local leg rejected raises here."""
        held: list[StreamPiece] = []
        self.tokens = []
        while not done(self.tokens):
            piece = await self.pieces.get()
            if piece is self._END:
                self.pieces.put_nowait(self._END)
                self._ended = True
                break
            held.append(piece)
            if piece.token is not None:
                self.tokens.append(piece.token)
        if self._invalid is not None:
            raise self._invalid
        return held

    def ended(self) -> bool:
        """True when the local stream ended inside the hold (its whole answer is known)."""
        return self._ended

    async def rest(self) -> AsyncIterator[StreamPiece]:
        while True:
            piece = await self.pieces.get()
            if piece is self._END:
                return
            yield piece

    def cancel(self) -> None:
        self.cancelled.set()

    def failed(self) -> bool:
        """True when the local leg already ended without an answer (known once ``hold`` returned)."""
        return self._run is not None and self._run.result is None

    def run(self, stopped_early: bool = False) -> LocalRun:
        """What the local leg did, once its thread ended; ``stopped_early`` marks a leg the cascade stopped."""
        self.thread.join(timeout=60)
        run = self._run or LocalRun(None, LocalOutcome(error="local leg did not finish"))
        if stopped_early:
            run.outcome = LocalOutcome(confidence=run.outcome.confidence, stopped_early=run.result is not None,
                                       error=run.outcome.error, input_too_long=run.outcome.input_too_long,
                                       failure=run.outcome.failure)
        return run
