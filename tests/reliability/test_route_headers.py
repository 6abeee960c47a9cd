"""Headers never contradict bodies: ``X-Edge-Route-Taken`` equals ``edge.route`` for every route, streamed or not.

Through the real server on loopback and a real loopback cloud, over the byte-level tiny model (its answers
are confident: running confidence ~0.97), so each route is reached on purpose: ``local`` (threshold 0),
``cloud`` (threshold 1: every answer escalates, streamed or not), ``local-degraded`` (threshold 1 with no cloud,
and with a cloud that fails). A stream that cannot reach a cloud does not hold its tokens for a decision that
changes nothing: it says ``local`` and its final ``edge`` block ``policy_wanted_cloud: true``. The OpenAI ``EDGE_CONFIDENCE_THRESHOLD=1`` promise is the ``cloud`` case.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.reliability.conftest import build_server, running, tiny_runtime

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 8}


def routes(url: str, path: str, body: dict) -> list[tuple[str, str]]:
    """(header route, body route) for the request sent whole and streamed."""
    whole = httpx.post(url + path, json=body, timeout=30)
    assert whole.status_code == 200, whole.text
    pairs = [(whole.headers["x-edge-route-taken"], whole.json()["edge"]["route"])]
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=30) as streamed:
        assert streamed.status_code == 200
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
        last = [event for event in events if "edge" in event][-1]
        pairs.append((streamed.headers["x-edge-route-taken"], last["edge"]["route"]))
    return pairs


@pytest.mark.parametrize("path,body", [("/v1/chat/completions", CHAT),
                                       ("/v1/completions", {"model": "m", "prompt": "Q: Capital?\nA:",
                                                            "max_tokens": 8})])
@pytest.mark.parametrize("case,threshold,cloud_state,expected", [
    ("confident", 0.0, "healthy", "local"),
    ("threshold-1", 1.0, "healthy", "cloud"),
    ("no-cloud", 1.0, None, ("local-degraded", "local")),
    ("cloud-fails", 1.0, "failing", "local-degraded"),
])
def test_header_route_equals_body_route(fault_cloud, path, body, case, threshold, cloud_state, expected):
    if cloud_state == "failing":
        fault_cloud.default_fault = "503"
    built = build_server(tiny_runtime(), base_url=fault_cloud.base_url if cloud_state else None,
                         threshold=threshold)
    with running(built.app) as url:
        pairs = routes(url, path, body)
    whole, streamed = expected if isinstance(expected, tuple) else (expected, expected)
    assert pairs == [(whole, whole), (streamed, streamed)], case
