"""Fuzzing the HTTP API: no 5xx, no crash, no hang, every 4xx an OpenAI error object, streams end in [DONE].

By default a short run of each kind (hypothesis bodies and headers, schemathesis from ``/openapi.json``) on the
tiny-model server; the ``slow`` run is the full one: 10,000 hypothesis cases and ~1,000 schemathesis cases on the
tiny-model server plus 300 cases on the bundled model (``python -m benchmarks.fuzz_http`` runs the same).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_http import check_response, fuzz_servers, headers, requests, run_all, run_hypothesis, \
    run_schemathesis
from edge_runtime.errors import BackendError
from tests.reliability.conftest import TinyBackend, build_server, running


@pytest.fixture(scope="module")
def tiny_url(tiny):
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(stall_limit_s=5.0) as cloud, running(fuzz_servers(tiny, cloud.base_url).app) as url:
        yield url


def _shown(report) -> str:
    return report.line() + "".join(f"\n  {failure}" for failure in report.failures)


def test_generated_bodies_and_headers(tiny_url):
    report = run_hypothesis(tiny_url, 300, "hypothesis, tiny model", seed_value=1)
    print(report.line())
    assert report.failure_count == 0, _shown(report)
    assert report.cases >= 300 and report.statuses[200] >= 30 and report.statuses[400] >= 30, report.line()


def test_schemathesis_against_the_servers_own_openapi(tiny_url):
    report = run_schemathesis(tiny_url, 24, seed_value=1)
    print(report.line())
    assert report.failure_count == 0, _shown(report)
    assert report.cases >= 30 and report.statuses[200] >= 5, report.line()


def test_the_checker_catches_what_it_should():
    """The oracle itself: a 5xx, a bare 400 and a stream without [DONE] are failures; a proper 400 is not."""
    from benchmarks.fuzz_http import FuzzReport

    report = FuzzReport("self-check")
    error = json.dumps({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}})
    check_response(report, "ok", 400, "application/json", error.encode())
    assert report.failure_count == 0
    check_response(report, "5xx", 500, "application/json", error.encode())
    check_response(report, "bare", 400, "application/json", b"{}")
    check_response(report, "cut", 200, "text/event-stream", b'data: {"choices": []}\n\n')
    in_band = json.dumps({"error": {"type": "server_error", "message": "x"}})
    check_response(report, "in-band", 200, "text/event-stream", f"data: {in_band}\n\ndata: [DONE]\n\n".encode())
    assert report.failure_count == 4 and report.cases == 5


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests(st.integers(1, 2), bounded=True), extra=headers)
def test_real_model_short_run(real_url, request, extra):
    """8 cases through llama.cpp by default (the slow run sends 300)."""
    path, body = request
    from benchmarks.fuzz_http import FuzzReport

    report = FuzzReport("real")
    with httpx.Client(base_url=real_url, timeout=60) as http:
        response = http.post(path, content=body, headers=extra)
    check_response(report, f"{path} {body[:200]!r} {extra}", response.status_code,
                   response.headers.get("content-type", ""), response.content)
    assert report.failure_count == 0, report.failures


@pytest.fixture(scope="module")
def real_url(runtime):
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(stall_limit_s=5.0) as cloud, running(fuzz_servers(runtime, cloud.base_url).app) as url:
        yield url


@pytest.mark.slow
def test_ten_thousand_cases():
    reports = run_all(cases=10_000, schemathesis_cases=500, real_cases=300)
    for report in reports:
        print(report.line())
    assert all(report.failure_count == 0 for report in reports), "\n".join(_shown(r) for r in reports)
    assert sum(report.cases for report in reports[:2]) >= 10_000
    assert reports[2].cases >= 300


class _FailingBackend(TinyBackend):
    def generate_tokens(self, prompt_ids, sampling, should_abort):
        raise BackendError("injected: the native decode failed")
        yield  # pragma: no cover - makes this a generator


@pytest.mark.parametrize("route, stream", [("local", False), ("local", True), ("auto", False), ("auto", True),
                                           ("cloud", False), ("cloud", True)])
def test_a_failing_local_model_is_an_error_object_on_every_route(route, stream):
    """Found by the 10k run: a local failure with ``X-Edge-Route: local`` crashed the request (AttributeError)."""
    from edge_runtime.caps import Caps
    from edge_runtime.models import ResolvedModel
    from edge_runtime.runtime import Runtime

    runtime = Runtime(_FailingBackend(), ResolvedModel("gguf", Path("failing.gguf")), Caps(), 0.0)
    built = build_server(runtime, base_url=None)
    with running(built.app) as url, httpx.Client(base_url=url, timeout=30) as http:
        response = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "stream": stream},
                             headers={"X-Edge-Route": route})
        assert response.status_code == 503 and response.json()["error"]["code"] == "cloud_unavailable"
        assert http.get("/health").status_code == 200
