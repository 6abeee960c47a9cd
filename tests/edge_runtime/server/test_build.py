"""``build_server`` over a byte-level fake model (no native code): what the settings turn into, ``/metrics``
from a registry of each server's own with label values escaped, and admission that no refused request leaks."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.served import running, tiny_runtime
from edge_runtime.server.build import build_server
from edge_runtime.server.settings import ServerSettings, ServerSettingsError


def tiny_settings(**values) -> ServerSettings:
    return ServerSettings(**{"ledger": False, **values})


def samples(text: str, name: str) -> list:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == name]


def test_settings_become_the_servers_configuration(tmp_path):
    settings = tiny_settings(model_name="tiny", max_body_bytes=1234, parallel=2, queue=3, confidence_threshold=0.9,
                             early_floor=0.1, ledger=True, ledger_path=tmp_path / "ledger.sqlite3")
    _, server = build_server(settings, runtime=tiny_runtime())
    assert (server.config.model_name, server.config.max_body_bytes, server.admission.limit) == ("tiny", 1234, 5)
    assert (server.cascade.policy.threshold, server.cascade.policy.early_floor) == (0.9, 0.1)
    assert server.cascade.ledger.path == tmp_path / "ledger.sqlite3"
    assert server.cascade.gateway is None and server.ready and not server.cascade.tracer.enabled


def test_api_key_from_the_named_variable_read_once_at_build():
    _, server = build_server(tiny_settings(api_key_env="MY_KEY"), runtime=tiny_runtime(), environ={"MY_KEY": "k1"})
    assert server.config.api_key == "k1"
    with pytest.raises(ServerSettingsError, match="MY_KEY is empty or unset"):
        build_server(tiny_settings(api_key_env="MY_KEY"), runtime=tiny_runtime(), environ={})
    with pytest.raises(ServerSettingsError, match="one way"):
        build_server(tiny_settings(api_key="a", api_key_env="MY_KEY"), runtime=tiny_runtime(),
                     environ={"MY_KEY": "b"})


def test_metrics_escape_label_values_and_each_server_has_its_own_registry():
    app, server = build_server(tiny_settings(), runtime=tiny_runtime())
    other_app, _ = build_server(tiny_settings(), runtime=tiny_runtime())
    with running(app) as url, running(other_app) as other_url:
        weird = '/v1/"odd"\\path\nnext'  # not a route: a 404 counted by status only
        assert httpx.get(url + "/v1/models").status_code == 200
        httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 4}).raise_for_status()
        server.metrics.requests.labels(endpoint=weird, reason="confident", route="local").inc()
        text, other = httpx.get(url + "/metrics").text, httpx.get(other_url + "/metrics").text
    requests = {sample.labels["endpoint"]: sample.value for sample in samples(text, "edge_requests_total")}
    assert requests == {"/v1/completions": 1.0, weird: 1.0}  # the odd value parses back unchanged
    assert samples(other, "edge_requests_total") == []
    queue = {sample.labels["state"]: sample.value for sample in samples(text, "edge_queue_depth")}
    assert queue == {"in_flight": 0.0}
    assert samples(text, "edge_engine_up")[0].value == 1.0
    for name in ("edge_tokens_total", "edge_request_latency_seconds_bucket", "edge_breaker_state",
                 "edge_prefix_cache_hit_ratio", "edge_engine_restarts_total"):
        assert f"# TYPE {name.removesuffix('_bucket')} " in text


def test_refused_requests_leave_no_admission_behind():
    app, server = build_server(tiny_settings(max_in_flight=1), runtime=tiny_runtime())
    with running(app) as url, httpx.Client(base_url=url) as http:
        for _ in range(3):  # refused after parsing: two prompts, a bad route, a bad max_tokens
            assert http.post("/v1/completions", json={"prompt": ["a", "b"]}).status_code == 400
            moon = http.post("/v1/completions", json={"prompt": "a"}, headers={"X-Edge-Route": "moon"})
            assert moon.status_code == 400
            assert http.post("/v1/completions", json={"prompt": "a", "max_tokens": -1}).status_code == 400
        assert server.admission.in_flight == 0
        assert http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
