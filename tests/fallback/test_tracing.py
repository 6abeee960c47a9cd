"""The OpenTelemetry span tree of cascade requests, read back from the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the [otel] extra is not installed")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from edge_runtime.server.local_leg import RuntimeLocalLeg  # noqa: E402
from fallback.cascade import Cascade, CascadeRequest  # noqa: E402
from fallback.gateway import CloudGateway  # noqa: E402
from fallback.policy import PolicyConfig  # noqa: E402
from fallback.providers import GatewayConfig, ProviderConfig  # noqa: E402
from fallback.tracing import RequestTracer  # noqa: E402

SECRET_PROMPT = "Q: What is the capital of France? My card is 4111 1111 1111 1111.\nA:"


@pytest.fixture()
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _gateway(cloud):
    # the deadline counts the local turn too: generous, so a loaded machine's slow local answer still escalates
    provider = ProviderConfig(name="loopback", base_url=cloud.base_url, model="m", timeout_s=2, max_retries=1,
                              price_input_per_mtok=1.0, price_output_per_mtok=2.0)
    return CloudGateway(GatewayConfig(providers=[provider], overall_deadline_s=30, backoff_base_s=0.01))


def _tree(exporter):
    finished = exporter.get_finished_spans()
    by_name = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    root = by_name["edge.request"][0]
    for span in finished:
        if span is not root and span.name != "edge.cloud_attempt":
            assert span.parent is not None and span.parent.span_id == root.context.span_id, span.name
    return by_name


def _run(runtime, spans, threshold, cloud=None, record_text=False):
    provider, exporter = spans
    cascade = Cascade(RuntimeLocalLeg(runtime), _gateway(cloud) if cloud else None,
                      PolicyConfig(threshold=threshold),
                      tracer=RequestTracer.with_provider(provider, record_text=record_text))
    result = asyncio.run(cascade.complete(CascadeRequest(prompt=SECRET_PROMPT, max_tokens=3)))
    return result, _tree(exporter)


def test_local_answer_tree(runtime, spans):
    result, tree = _run(runtime, spans, threshold=0.0)
    assert result.route_taken == "local"
    local = tree["edge.local_generation"][0].attributes
    assert local["edge.tokens_out"] == 3 and local["edge.time_to_first_token_s"] > 0
    assert tree["edge.policy"][0].attributes["edge.reason"] == "confident"
    assert "edge.cloud" not in tree
    assert tree["edge.request"][0].attributes["edge.route_taken"] == "local"


def test_escalated_answer_tree_has_attempts_and_redaction(runtime, spans):
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(answer_fn=lambda body: "Paris") as cloud:
        cloud.enqueue_faults(["500"])
        result, tree = _run(runtime, spans, threshold=1.0, cloud=cloud)
    assert result.route_taken == "cloud"
    attempts = [span.attributes for span in tree["edge.cloud_attempt"]]
    assert [attempt.get("edge.status") for attempt in attempts] == [500, 200]
    assert all(span.parent.span_id == tree["edge.cloud"][0].context.span_id for span in tree["edge.cloud_attempt"])
    assert tree["edge.redaction"][0].attributes["edge.redacted_total"] >= 1
    assert tree["edge.policy"][0].attributes["edge.reason"] == "low_confidence"


def test_degraded_answer_tree(runtime, spans):
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(default_fault="500") as cloud:
        result, tree = _run(runtime, spans, threshold=1.0, cloud=cloud)
    assert result.route_taken == "local-degraded"
    assert tree["edge.request"][0].attributes["edge.degraded_reason"]


@pytest.mark.parametrize("record_text", [False, True])
def test_prompt_text_is_recorded_only_when_asked(runtime, spans, record_text):
    _run(runtime, spans, threshold=0.0, record_text=record_text)
    everything = " ".join(str(value) for span in spans[1].get_finished_spans() for value in span.attributes.values())
    assert ("4111 1111 1111 1111" in everything) is record_text
    assert ("capital of France" in everything) is record_text


# -- streamed requests ----------------------------------------------------------------------------------------
def _stream(runtime, spans, policy: PolicyConfig, cloud=None, route="auto", take: int | None = None):
    """Opens a streamed request and reads ``take`` items (all when None); returns the items and the tree."""
    provider, exporter = spans
    cascade = Cascade(RuntimeLocalLeg(runtime), _gateway(cloud) if cloud else None, policy,
                      tracer=RequestTracer.with_provider(provider))

    async def read():
        stream = await cascade.open_stream(CascadeRequest(prompt=SECRET_PROMPT, max_tokens=10, route=route))
        items = []
        async for item in stream.items:
            items.append(item)
            if take is not None and len(items) == take:
                await stream.items.aclose()
                break
        return stream.route, items

    route_taken, items = asyncio.run(read())
    return route_taken, items, _tree(exporter)


def test_streamed_local_answer_tree(runtime, spans):
    route, items, tree = _stream(runtime, spans, PolicyConfig(threshold=0.0))
    root = tree["edge.request"][0].attributes
    assert route == "local" and root["edge.stream"] is True and root["edge.route_taken"] == "local"
    assert 0 < root["edge.time_to_first_chunk_s"] < 60
    local = tree["edge.local_generation"][0].attributes
    assert local["edge.tokens_out"] == items[-1].completion_tokens >= 1
    assert tree["edge.policy"][0].attributes["edge.reason"] == "confident"


def test_streamed_escalation_tree_has_the_cloud_and_its_attempts(runtime, spans):
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(answer_fn=lambda body: "Paris is the capital") as cloud:
        cloud.enqueue_faults(["500"])
        route, items, tree = _stream(runtime, spans, PolicyConfig(threshold=1.0, early_floor=0.999), cloud)
    assert route == "cloud" and tree["edge.request"][0].attributes["edge.route_taken"] == "cloud"
    assert [span.attributes.get("edge.status") for span in tree["edge.cloud_attempt"]] == [500, 200]
    assert tree["edge.redaction"][0].attributes["edge.redacted_total"] >= 1
    assert tree["edge.policy"][0].attributes["edge.reason"] == "early_low_confidence"


def test_streamed_degraded_answer_tree(runtime, spans):
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(default_fault="500") as cloud:
        route, _, tree = _stream(runtime, spans, PolicyConfig(threshold=1.0, early_floor=0.999), cloud)
    assert route == "local-degraded"
    assert "the cloud failed" in tree["edge.request"][0].attributes["edge.degraded_reason"]


def test_a_failed_stream_marks_its_root_with_the_error(runtime, spans):
    from opentelemetry.trace import StatusCode

    from fallback.errors import FallbackError
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(default_fault="500") as cloud, pytest.raises(FallbackError):
        _stream(runtime, spans, PolicyConfig(), cloud, route="cloud")
    finished = spans[1].get_finished_spans()
    assert [span.name for span in finished] == ["edge.request"]
    assert finished[0].status.status_code == StatusCode.ERROR
    assert finished[0].attributes["edge.error"] == "AllProvidersFailedError"
    assert [event.name for event in finished[0].events] == ["exception"]


def test_an_abandoned_stream_ends_its_span_marked_cancelled(runtime, spans):
    _, items, tree = _stream(runtime, spans, PolicyConfig(threshold=0.0), take=1)
    root = tree["edge.request"][0]
    assert len(items) == 1 and root.attributes["edge.cancelled"] is True and root.end_time is not None


def test_an_abandoned_stream_is_one_cancelled_ledger_row(runtime, tmp_path):
    from fallback.ledger import Ledger

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        cascade = Cascade(RuntimeLocalLeg(runtime), None, PolicyConfig(threshold=0.0), ledger=ledger)

        async def read_one():
            stream = await cascade.open_stream(CascadeRequest(prompt=SECRET_PROMPT, max_tokens=10))
            async for _ in stream.items:
                break
            await stream.items.aclose()

        asyncio.run(read_one())
        rows = ledger.entries()
        assert [(row.route, row.reason) for row in rows] == [("cancelled", "client_disconnected")]
        assert ledger.summary().cancelled == 1 and ledger.summary().escalated == 0


def test_a_ledger_that_cannot_be_written_does_not_change_the_answer(runtime, tmp_path):
    from fallback.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.close()  # every write now fails with LedgerError
    cascade = Cascade(RuntimeLocalLeg(runtime), None, PolicyConfig(threshold=0.0), ledger=ledger)
    result = asyncio.run(cascade.complete(CascadeRequest(prompt=SECRET_PROMPT, max_tokens=3)))
    assert result.route_taken == "local" and result.text and result.ledger_id is None
