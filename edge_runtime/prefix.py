"""Reusing KV state across requests: shared-prefix arithmetic and a byte-budgeted store of saved prefixes.

A backend keeps the KV cache of its last request live and reuses the part a new prompt shares with it. That
alone fails when requests alternate between prefixes (two system prompts, several few-shot tasks, several
tools): each switch throws the other prefix away. ``PrefixStore`` keeps saved KV states of recently used
token sequences under a byte budget, least recently used out first, and finds the one sharing the longest
prefix with a new prompt; the backend restores it (a memory copy) instead of prefilling those tokens again.

The store holds opaque state bytes; saving and restoring them is the backend's job. It is pure Python so its
policy is tested without a model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MIN_TOKENS = 32  # shorter prefixes are cheaper to prefill again than to keep


def common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    length = 0
    for left, right in zip(first, second):
        if left != right:
            break
        length += 1
    return length


@dataclass(frozen=True)
class SavedPrefix:
    """The KV state of one sequence that held exactly ``tokens``."""

    tokens: tuple[int, ...]
    state: bytes

    @property
    def size(self) -> int:
        return len(self.state)


@dataclass
class PrefixStoreStats:
    restores: int = 0
    restored_tokens: int = 0
    saves: int = 0
    evictions: int = 0
    failed_saves: int = 0


class PrefixStore:
    """Saved prefixes under ``budget_bytes``; thread-safe. ``budget_bytes`` 0 keeps nothing."""

    def __init__(self, budget_bytes: int, min_tokens: int = DEFAULT_MIN_TOKENS) -> None:
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0")
        self.budget_bytes, self.min_tokens = budget_bytes, min_tokens
        self.stats = PrefixStoreStats()
        self._entries: OrderedDict[tuple[int, ...], SavedPrefix] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def best_match(self, prompt: Sequence[int], *, touch: bool = True) -> tuple[SavedPrefix | None, int]:
        """The saved prefix sharing the most leading tokens with ``prompt`` and how many; ``touch`` marks it
        recently used."""
        with self._lock:
            best, best_length = None, 0
            for saved in self._entries.values():
                if saved.tokens[0] != (prompt[0] if prompt else None) or len(saved.tokens) <= best_length:
                    continue
                length = common_prefix_length(saved.tokens, prompt)
                if length > best_length:
                    best, best_length = saved, length
            if best is not None and touch:
                self._entries.move_to_end(best.tokens)
            return best, best_length

    def put(self, tokens: Sequence[int], state: bytes) -> bool:
        """Keeps ``state`` for ``tokens``, evicting least recently used prefixes; False if it cannot fit.

        A saved prefix that ``tokens`` extends is dropped: the new state serves every prompt it served."""
        saved = SavedPrefix(tuple(tokens), state)
        if not saved.tokens or saved.size > self.budget_bytes:
            return False
        with self._lock:
            for key in [key for key in self._entries if saved.tokens[:len(key)] == key]:
                self._drop(key)
            self._entries[saved.tokens] = saved
            self._bytes += saved.size
            self.stats.saves += 1
            while self._bytes > self.budget_bytes:
                self._drop(next(iter(self._entries)))
                self.stats.evictions += 1
        return True

    def record_restore(self, tokens: int) -> None:
        with self._lock:
            self.stats.restores += 1
            self.stats.restored_tokens += tokens

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _drop(self, key: tuple[int, ...]) -> None:
        self._bytes -= self._entries.pop(key).size
