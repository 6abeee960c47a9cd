"""OpenTelemetry span tree per request across the local and cloud legs (optional extra ``[otel]``).

    edge.request                 route asked / taken, reason, ledger id
    ├── edge.local_generation    tokens in/out, time to first token, confidence, finish reason (caps hit)
    ├── edge.policy              escalate, reason, detail
    ├── edge.redaction           counts per kind (only when something went to the cloud)
    └── edge.cloud               provider, latency, cost
        └── edge.cloud_attempt   one per attempt: provider, status or error, retry, breaker state

A streamed request has the same tree; its root also carries ``edge.stream``, the time to the first chunk
sent, and ``edge.cancelled`` when the client went away first. A request that ends in an error has its root
marked with the error (status ERROR, exception event) and whatever children were known.

Nothing is exported unless configured: ``EDGE_OTEL_EXPORTER=console`` or ``otlp`` (the OTLP/HTTP exporter
reads the standard ``OTEL_EXPORTER_OTLP_*`` variables), or pass a tracer provider. Prompt and answer text
are never recorded unless ``record_text=True`` (``EDGE_OTEL_RECORD_TEXT=1``).
"""

from __future__ import annotations

import os
import time
import weakref
from contextlib import contextmanager


class RequestTracer:
    """Builds the span tree of one cascade request; a no-op when OpenTelemetry is absent or not configured."""

    def __init__(self, tracer=None, record_text: bool = False) -> None:
        self.tracer, self.record_text = tracer, record_text
        self._failed: weakref.WeakSet = weakref.WeakSet()  # roots already marked, so an error is recorded once

    @classmethod
    def from_env(cls) -> "RequestTracer":
        exporter = os.environ.get("EDGE_OTEL_EXPORTER", "").strip().lower()
        record_text = os.environ.get("EDGE_OTEL_RECORD_TEXT", "") in ("1", "true", "yes")
        return cls.configured(exporter, record_text)

    @classmethod
    def configured(cls, exporter: str, record_text: bool = False) -> "RequestTracer":
        """Exporting to ``exporter`` ("console" or "otlp"; "" exports nothing)."""
        return cls(_configured_tracer(exporter) if exporter else None, record_text)

    @classmethod
    def with_provider(cls, provider, record_text: bool = False) -> "RequestTracer":
        return cls(provider.get_tracer("edge-runtime"), record_text)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @contextmanager
    def request(self, request):
        """The root span of a whole (non-streamed) request, ended on exit; an exception marks it failed."""
        span = self.start(request)
        try:
            if span is None:
                yield None
            else:  # current while the request runs, so instrumented HTTP calls (and traceparent) nest under it
                from opentelemetry import trace

                with trace.use_span(span, end_on_exit=False):
                    yield span
        except BaseException as exc:
            self.fail(span, exc)
            raise
        finally:
            self.end(span)

    def start(self, request, *, stream: bool = False):
        """Opens the root span (not made current: a stream outlives the call that opens it); None if off."""
        if not self.enabled:
            return None
        span = self.tracer.start_span("edge.request")
        span.set_attribute("edge.route_requested", request.route)
        span.set_attribute("edge.stream", stream)
        if self.record_text:
            span.set_attribute("edge.prompt", request.prompt or str(request.messages))
        return span

    def first_chunk(self, span, seconds: float) -> None:
        if span is not None:
            span.set_attribute("edge.time_to_first_chunk_s", seconds)

    def cancelled(self, span) -> None:
        if span is not None:
            span.set_attribute("edge.cancelled", True)

    def fail(self, span, error: BaseException, leg=None) -> None:
        """Marks the request failed with ``error``; adds the local leg's span when it is known."""
        if span is None or not span.is_recording() or span in self._failed:
            return
        from opentelemetry.trace import Status, StatusCode

        self._failed.add(span)
        span.set_attribute("edge.error", type(error).__name__)
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        if leg is not None:
            self._local_span(span, leg)

    @staticmethod
    def end(span) -> None:
        if span is not None and span.is_recording():
            span.end()

    def finish(self, span, request, leg, result) -> None:
        """Adds the children of a finished request (their times are taken from the legs' measurements)."""
        if span is None or not span.is_recording():
            return
        span.set_attribute("edge.route_taken", result.route_taken)
        span.set_attribute("edge.reason", result.decision.reason.value)
        if result.ledger_id:
            span.set_attribute("edge.ledger_id", result.ledger_id)
        if result.degraded_reason:
            span.set_attribute("edge.degraded_reason", result.degraded_reason)
        if self.record_text:
            span.set_attribute("edge.answer", result.text)
        self._local_span(span, leg)
        self._child(span, "edge.policy", {"edge.escalate": result.decision.escalate,
                                          "edge.reason": result.decision.reason.value,
                                          "edge.detail": result.decision.detail})
        if result.cloud is not None:
            self._cloud_spans(span, result.cloud)

    def _child(self, parent, name: str, attributes: dict, start_ns: int | None = None,
               end_ns: int | None = None):
        from opentelemetry import trace

        span = self.tracer.start_span(name, context=trace.set_span_in_context(parent), start_time=start_ns)
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        span.end(end_time=end_ns)
        return span

    def _local_span(self, parent, leg) -> None:
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
        self._child(parent, "edge.local_generation", attributes, start, end)

    def _cloud_spans(self, root, cloud) -> None:
        from opentelemetry import trace

        end = time.time_ns()
        start = end - int(cloud.latency_s * 1e9)
        counts = cloud.redaction_counts or {}
        self._child(root, "edge.redaction", {f"edge.redacted.{kind}": count for kind, count in counts.items()}
                    | {"edge.redacted_total": sum(counts.values())}, start, start)
        parent = self.tracer.start_span("edge.cloud", context=trace.set_span_in_context(root), start_time=start)
        parent.set_attribute("edge.provider", cloud.provider)
        parent.set_attribute("edge.cost_usd", cloud.cost_usd)
        cursor = start
        for attempt in cloud.attempts:
            attempt_end = cursor + int(attempt.latency_s * 1e9)
            self._child(parent, "edge.cloud_attempt", {"edge.provider": attempt.provider, "edge.retry": attempt.retry,
                                                       "edge.status": attempt.status, "edge.error": attempt.error,
                                                       "edge.breaker_state": attempt.breaker_state},
                        cursor, attempt_end)
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
