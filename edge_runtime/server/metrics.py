"""Prometheus text-format metrics without a client library: counters, gauges and histograms with labels.

Exposed at ``GET /metrics``: requests by route and reason, tokens, time to first token and latency
histograms, queue depth, breaker state per provider.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    escaped = (f'{key}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for key, value in pairs)
    return "{" + ",".join(escaped) + "}"


class Metrics:
    """Thread-safe registry; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[tuple, list]] = defaultdict(dict)
        self._gauges: dict[str, Callable[[], dict[tuple, float]]] = {}
        self._help: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._histograms[name].setdefault(key, [[0] * (len(LATENCY_BUCKETS_S) + 1), 0.0, 0])
            series[0][bisect.bisect_left(LATENCY_BUCKETS_S, value)] += 1
            series[1] += value
            series[2] += 1

    def gauge(self, name: str, read: Callable[[], dict[tuple, float]]) -> None:
        """Registers a gauge read at render time: ``read()`` maps label tuples to values."""
        self._gauges[name] = read

    def _header(self, name: str, default_kind: str) -> list[str]:
        kind, text = self._help.get(name, (default_kind, name))
        return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]

    def _render_histogram(self, name: str, series: dict[tuple, list]) -> list[str]:
        lines = self._header(name, "histogram")
        for key, (counts, total, count) in series.items():
            cumulative = 0
            for bound, bucket_count in zip((*LATENCY_BUCKETS_S, "+Inf"), counts):
                cumulative += bucket_count
                lines.append(f"{name}_bucket{_labels(key + (('le', str(bound)),))} {cumulative}")
            lines += [f"{name}_sum{_labels(key)} {total}", f"{name}_count{_labels(key)} {count}"]
        return lines

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                lines += self._header(name, "counter")
                lines += [f"{name}{_labels(key)} {value}" for key, value in series.items()]
            for name, series in sorted(self._histograms.items()):
                lines += self._render_histogram(name, series)
        for name, read in sorted(self._gauges.items()):
            lines += self._header(name, "gauge")
            lines += [f"{name}{_labels(key)} {value}" for key, value in read().items()]
        return "\n".join(lines) + "\n"
