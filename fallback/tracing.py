"""OpenTelemetry span tree per request across the local and cloud legs (optional extra ``[otel]``).

    edge.request                 route asked / taken, reason, ledger id
    ├── edge.local_generation    tokens in/out, time to first token, confidence, finish reason (caps hit)
    ├── edge.policy              escalate, reason, detail
    ├── edge.redaction           counts per kind (only when something went to the cloud)
    └── edge.cloud               provider, latency, cost
        └── edge.cloud_attempt   one per attempt: provider, status or error, retry, breaker state

Nothing is exported unless configured: ``EDGE_OTEL_EXPORTER=console`` or ``otlp`` (the OTLP/HTTP exporter
reads the standard ``OTEL_EXPORTER_OTLP_*`` variables), or pass a tracer provider. Prompt and answer text
are never recorded unless ``record_text=True`` (``EDGE_OTEL_RECORD_TEXT=1``).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager


class RequestTracer:
    """Builds the span tree of one cascade request; a no-op when OpenTelemetry is absent or not configured."""

    def __init__(self, tracer=None, record_text: bool = False) -> None:
        self.tracer, self.record_text = tracer, record_text

    @classmethod
    def from_env(cls) -> "RequestTracer":
        exporter = os.environ.get("EDGE_OTEL_EXPORTER", "").strip().lower()
        record_text = os.environ.get("EDGE_OTEL_RECORD_TEXT", "") in ("1", "true", "yes")
        if not exporter:
            return cls(None, record_text)
        return cls(_configured_tracer(exporter), record_text)

    @classmethod
    def with_provider(cls, provider, record_text: bool = False) -> "RequestTracer":
        return cls(provider.get_tracer("edge-runtime"), record_text)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @contextmanager
    def request(self, request):
        if not self.enabled:
            yield None
            return
        with self.tracer.start_as_current_span("edge.request") as span:
            span.set_attribute("edge.route_requested", request.route)
            if self.record_text:
                span.set_attribute("edge.prompt", request.prompt or str(request.messages))
            yield span

    def finish(self, span, request, leg, result) -> None:
        """Adds the children of a finished request (their times are taken from the legs' measurements)."""
        if span is None:
            return
        span.set_attribute("edge.route_taken", result.route_taken)
        span.set_attribute("edge.reason", result.decision.reason.value)
        if result.ledger_id:
            span.set_attribute("edge.ledger_id", result.ledger_id)
        if result.degraded_reason:
            span.set_attribute("edge.degraded_reason", result.degraded_reason)
        if self.record_text:
            span.set_attribute("edge.answer", result.text)
        self._local_span(leg)
        self._child("edge.policy", {"edge.escalate": result.decision.escalate,
                                    "edge.reason": result.decision.reason.value,
                                    "edge.detail": result.decision.detail})
        if result.cloud is not None:
            self._cloud_spans(result.cloud)

    def _child(self, name: str, attributes: dict, start_ns: int | None = None, end_ns: int | None = None):
        span = self.tracer.start_span(name, start_time=start_ns)
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        span.end(end_time=end_ns)
        return span

    def _local_span(self, leg) -> None:
        if leg.result is None and not leg.outcome.error:
            return
        end = time.time_ns()
        start = end - int(leg.latency_s * 1e9)
        local = leg.result
        attributes = {"edge.error": leg.outcome.error, "edge.confidence": leg.outcome.confidence,
                      "edge.input_too_long": leg.outcome.input_too_long}
        if local is not None:
            attributes |= {"edge.tokens_in": local.usage.prompt_tokens, "edge.tokens_out": local.usage.completion_tokens,
                           "edge.time_to_first_token_s": local.timings.time_to_first_token_s,
                           "edge.finish_reason": local.finish_reason,
                           "edge.cap_hit": local.finish_reason in ("deadline", "length") or bool(local.notes)}
        self._child("edge.local_generation", attributes, start, end)

    def _cloud_spans(self, cloud) -> None:
        from opentelemetry import trace

        end = time.time_ns()
        start = end - int(cloud.latency_s * 1e9)
        counts = cloud.redaction_counts or {}
        self._child("edge.redaction", {f"edge.redacted.{kind}": count for kind, count in counts.items()}
                    | {"edge.redacted_total": sum(counts.values())}, start, start)
        parent = self.tracer.start_span("edge.cloud", start_time=start)
        parent.set_attribute("edge.provider", cloud.provider)
        parent.set_attribute("edge.cost_usd", cloud.cost_usd)
        with trace.use_span(parent, end_on_exit=False):
            cursor = start
            for attempt in cloud.attempts:
                attempt_end = cursor + int(attempt.latency_s * 1e9)
                self._child("edge.cloud_attempt", {"edge.provider": attempt.provider, "edge.retry": attempt.retry,
                                                   "edge.status": attempt.status, "edge.error": attempt.error,
                                                   "edge.breaker_state": attempt.breaker_state}, cursor, attempt_end)
                cursor = attempt_end
        parent.end(end_time=end)


def _configured_tracer(exporter: str):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider()
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        from fallback.errors import ConfigError

        raise ConfigError(f"EDGE_OTEL_EXPORTER must be console or otlp, got {exporter!r}")
    return provider.get_tracer("edge-runtime")
