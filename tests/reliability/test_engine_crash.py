"""The server's engine dies under it (SIGSEGV, SIGKILL) and the server keeps its promises.

A real server on loopback over a supervised engine process running the bundled model, a loopback cloud, and
the ledger. Every request in flight is answered by the cloud (reason ``local_crashed``) or, with no cloud,
refused clearly; each gets one ledger row; the engine is restarted and ``/health`` and ``/metrics`` say so.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime
from tests.reliability.conftest import build_server, running

LONG_PROMPT = "The history of the city is long and full of stories. " * 120  # ~1,300 tokens: a long prefill
SHORT = [{"role": "user", "content": "Q: What is the capital of France?\nA:"}]


@pytest.fixture(scope="module")
def engine_runtime(bundled_path):
    settings = LoadSettings(n_ctx=2048, n_parallel=2, prefix_cache=False)
    with Runtime.load(bundled_path, settings=settings, isolation="process") as loaded:
        yield loaded


def wait_ready(runtime, timeout_s: float = 60.0) -> float:
    """Seconds until the engine is back; then it decodes a few tokens, so that a later kill is not taken for a
    crash of a fresh engine's configuration (which would step the engine down the safety ladder)."""
    started = time.monotonic()
    while not runtime.ready:
        assert time.monotonic() - started < timeout_s, "the engine did not come back"
        assert runtime.backend.state != "failed", runtime.backend.failure
        time.sleep(0.05)
    waited = time.monotonic() - started
    if runtime.backend.engine().steps_served < 12:
        runtime.generate("Once upon a time", max_tokens=12)
    return waited


def kill_after(runtime, delay_s: float, sig: signal.Signals = signal.SIGSEGV) -> threading.Thread:
    pid = runtime.backend.engine_pid
    killer = threading.Timer(delay_s, lambda: os.kill(pid, sig))
    killer.start()
    return killer


@pytest.fixture()
def served(engine_runtime, fault_cloud, tmp_path):
    wait_ready(engine_runtime)
    built = build_server(engine_runtime, base_url=fault_cloud.base_url, ledger_path=tmp_path / "ledger.sqlite3")
    with running(built.app) as url:
        yield built, url


def chat(url: str, messages, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": messages, **extra}, timeout=60)


def test_health_names_the_engine_process(served, engine_runtime):
    _, url = served
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["engine_pid"] == engine_runtime.backend.engine_pid
    assert health["engine_pid"] != os.getpid()


def test_sigsegv_during_prefill_is_answered_by_the_cloud_and_the_engine_restarts(served, engine_runtime):
    built, url = served
    old_pid = engine_runtime.backend.engine_pid
    kill_after(engine_runtime, 0.4)
    response = chat(url, [{"role": "user", "content": LONG_PROMPT}], max_tokens=16)
    assert response.status_code == 200
    assert response.headers["x-edge-route-taken"] == "cloud"
    assert response.headers["x-edge-reason"] == "local_crashed"
    assert response.json()["choices"][0]["message"]["content"].startswith("Cloud says")
    restart_s = wait_ready(engine_runtime)
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["engine_pid"] not in (None, old_pid) and restart_s < 60
    assert health["engine_restarts"].get("SIGSEGV", 0) >= 1
    assert 'edge_engine_restarts_total{cause="SIGSEGV"}' in httpx.get(f"{url}/metrics").text
    entries = built.ledger.entries()
    assert [(e.route, e.reason) for e in entries] == [("cloud", "local_crashed")]
    local = chat(url, SHORT, max_tokens=4)
    assert local.status_code == 200 and local.headers["x-edge-route-taken"] == "local"


def test_a_stream_killed_in_its_hold_goes_to_the_cloud(served, engine_runtime):
    _, url = served
    kill_after(engine_runtime, 0.4)
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                      json={"model": "m", "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 16,
                            "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["x-edge-route-taken"] == "cloud"
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices")).startswith(
        "Cloud says")
    wait_ready(engine_runtime)


def test_a_stream_killed_after_content_ends_with_an_error_event(served, engine_runtime):
    built, url = served
    pid = engine_runtime.backend.engine_pid
    with httpx.stream("POST", f"{url}/v1/completions", timeout=60,
                      json={"model": "m", "prompt": "Once upon a time", "max_tokens": 300, "stream": True},
                      headers={"X-Edge-Route": "local"}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = []
        for line in lines:
            if line.startswith("data: {"):
                received.append(json.loads(line[6:]))
                if len(received) == 10:
                    os.kill(pid, signal.SIGSEGV)
            if line == "data: [DONE]":
                break
    assert len(received) > 10
    assert "error" in received[-1] and "SIGSEGV" in received[-1]["error"]["message"]
    wait_ready(engine_runtime)
    assert [(e.route, e.error) for e in built.ledger.entries()] == [("failed", "StreamInterruptedError")] or \
        [e.route for e in built.ledger.entries()] == ["failed"]


def test_sigkill_while_idle_restarts_and_requests_meanwhile_go_to_the_cloud(served, engine_runtime):
    _, url = served
    os.kill(engine_runtime.backend.engine_pid, signal.SIGKILL)
    while engine_runtime.ready:
        time.sleep(0.01)
    response = chat(url, SHORT, max_tokens=4)
    assert response.status_code == 200
    assert response.headers["x-edge-reason"] in ("local_starting", "local_crashed")
    assert response.headers["x-edge-route-taken"] == "cloud"
    wait_ready(engine_runtime)
    assert chat(url, SHORT, max_tokens=4).headers["x-edge-route-taken"] == "local"


def test_without_a_cloud_a_crash_is_a_503_before_headers(engine_runtime, tmp_path):
    wait_ready(engine_runtime)
    built = build_server(engine_runtime, base_url=None, ledger_path=tmp_path / "ledger.sqlite3")
    with running(built.app) as url:
        kill_after(engine_runtime, 0.4)
        response = chat(url, [{"role": "user", "content": LONG_PROMPT}], max_tokens=16)
        assert response.status_code == 503
        assert "SIGSEGV" in response.json()["error"]["message"]
        health = httpx.get(f"{url}/health")
        if not engine_runtime.ready:
            assert health.status_code == 503 and health.json()["status"] == "degraded"
        wait_ready(engine_runtime)
        assert httpx.get(f"{url}/health").status_code == 200
        assert [e.route for e in built.ledger.entries()] == ["failed"]
