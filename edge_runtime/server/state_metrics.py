"""Gauges read when ``/metrics`` is scraped, and the body of ``/health``: the server's state right now.

Queue depth (admission, and the backend's decoding/waiting slots when it batches), circuit-breaker state per
cloud provider, prefix-cache reuse, and the engine: up or not, restarts by cause. The backend is read through
its one typed ``stats()`` (``BackendStats``), the same whether it runs in this process or in the engine's.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge_runtime.backends.base import BackendStats, PrefixCacheCounters

BREAKER_CODES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
PREFIX_GAUGES = (  # (metric, field of the backend's prefix counters, help)
    ("edge_prefix_cache_hit_ratio", "hit_ratio", "Share of prompt tokens whose KV state was reused"),
    ("edge_prefix_cache_bytes", "bytes_held", "KV cache bytes held for reusable prefixes"),
    ("edge_prefix_store_bytes", "store_bytes", "Bytes of saved prefix states (part of edge_prefix_cache_bytes)"),
    ("edge_prefix_store_entries", "store_entries", "Saved prefix states in the store"),
    ("edge_prefix_store_restores", "store_restores", "Saved prefix states restored since start"),
)


def health(server) -> tuple[int, dict]:
    """(status code, body) of ``/health``: ok while the engine is ready; degraded while it starts or restarts
    (200 if the cloud can answer meanwhile, else 503)."""
    if not server.ready:
        return 503, {"status": "loading"}
    stats = server.runtime.backend.stats()
    body = {"status": "ok", "model": server.config.model_name, "engine_pid": stats.engine_pid,
            "engine": stats.engine_state, "engine_restarts": dict(stats.engine_restarts)}
    if server.runtime.ready:
        return 200, body
    body["status"] = "degraded"
    return (200 if server.cascade.gateway is not None else 503), body


class ServerStateCollector:
    """A ``prometheus_client`` collector over one ``EdgeServer``."""

    def __init__(self, server) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        stats = self.server.runtime.backend.stats()
        yield self._queue_depth(stats)
        yield self._breakers()
        yield from _prefix_gauges(stats.prefix_cache)
        up = GaugeMetricFamily("edge_engine_up", "1 while the engine process is ready to decode, else 0")
        up.add_metric([], float(self.server.runtime.ready))
        yield up
        yield _restarts(stats)

    def _queue_depth(self, stats: BackendStats) -> Metric:
        family = GaugeMetricFamily("edge_queue_depth", "Requests in flight and waiting", labels=("state",))
        family.add_metric(["in_flight"], float(self.server.admission.in_flight))
        if stats.queue_depth is not None:
            decoding, waiting = stats.queue_depth
            family.add_metric(["decoding"], float(decoding))
            family.add_metric(["waiting"], float(waiting))
        return family

    def _breakers(self) -> Metric:
        family = GaugeMetricFamily("edge_breaker_state", "Circuit breaker state per provider (0 closed, "
                                   "1 half-open, 2 open)", labels=("provider",))
        gateway = self.server.cascade.gateway
        for name, breaker in (gateway.breakers.items() if gateway is not None else ()):
            family.add_metric([name], BREAKER_CODES[breaker.state])
        return family


def _restarts(stats: BackendStats) -> Metric:
    family = CounterMetricFamily("edge_engine_restarts_total", "Engine process restarts, by cause "
                                 "(signal or exit)", labels=("cause",))
    for cause, count in stats.engine_restarts.items():
        family.add_metric([cause], float(count))
    return family


def _prefix_gauges(counters: PrefixCacheCounters | None) -> Iterator[Metric]:
    for name, field, text in PREFIX_GAUGES:
        family = GaugeMetricFamily(name, text)
        if counters is not None:
            family.add_metric([], float(getattr(counters, field)))
        yield family
