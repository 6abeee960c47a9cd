"""The server's Prometheus metrics, in a registry of its own (``prometheus_client``).

Exposed at ``GET /metrics`` in the text format 0.0.4: requests by endpoint, route and reason, errors by status,
tokens, latency and time-to-first-token histograms, and gauges read when scraped (queue depth, breaker state
per provider, prefix cache, engine; see ``edge_runtime.server.state_metrics``). Each server has its own
registry, never the process-wide default one, so several apps can live in one process (tests do).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class Metrics:
    """Counters and histograms the request path updates, plus collectors read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("edge_requests_total", "Requests answered, by endpoint, route taken and reason",
                                ("endpoint", "reason", "route"), registry=self.registry)
        self.errors = Counter("edge_errors_total", "Requests answered with an error, by status", ("status",),
                              registry=self.registry)
        self.tokens = Counter("edge_tokens_total", "Tokens, by direction and route", ("direction", "route"),
                              registry=self.registry)
        self.latency = Histogram("edge_request_latency_seconds", "Total latency of a request, by route",
                                 ("route",), buckets=LATENCY_BUCKETS_S, registry=self.registry)
        # route "" (no route, to Prometheus) is the time to the first chunk a stream sent, measured here
        self.first_token = Histogram("edge_time_to_first_token_seconds",
                                     "Time to the first streamed token, by route", ("route",),
                                     buckets=LATENCY_BUCKETS_S, registry=self.registry)

    def watch(self, collector: Collector) -> None:
        """Adds gauges read at scrape time."""
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
