"""Turns a stream of token bytes into text, stopping at stop sequences without ever printing part of one.

Tokens can split a UTF-8 character and a stop sequence can span several tokens, so text is decoded
incrementally and any tail that could still grow into a stop sequence is held back until it cannot.
"""

from __future__ import annotations

import codecs


def _held_back_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopScanner:
    """Feed token bytes in; get back the text that is safe to release and whether a stop was reached."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""
        self.stopped = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        self.pending += self._decoder.decode(piece)
        hits = [index for index in (self.pending.find(stop) for stop in self.stops) if index >= 0]
        if hits:
            released, self.pending, self.stopped = self.pending[:min(hits)], "", True
            return released
        keep = _held_back_length(self.pending, self.stops)
        released = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(released):]
        return released

    def flush(self) -> str:
        """Whatever is still held back (the stream ended without completing a stop sequence)."""
        if self.stopped:
            return ""
        released, self.pending = self.pending + self._decoder.decode(b"", final=True), ""
        return released
