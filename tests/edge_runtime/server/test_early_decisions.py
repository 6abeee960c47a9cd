"""The server takes the calibration file's early decisions: a real server (production builder, the bundled model)
with ``--calibration`` whose text checkpoint escalates a hopeless prompt, a real loopback cloud, a real ledger.

The hopeless prompt reaches the cloud and the runtime is never asked to decode (its ``stream`` is counted); a
confident prompt is answered by the local model. The calibration is fitted by the real fit functions on a few
made-up queries (``benchmarks.early_calibration``); its final calibrator keeps every local answer, so only
the text checkpoint can send a request to the cloud.
"""

from __future__ import annotations

import json

import httpx
import pytest

from fallback.ledger import Ledger
from tests.edge_runtime.server.conftest import _cloud_gateway, running
from benchmarks.early_calibration import CONFIDENT_QUERY, HOPELESS_QUERY, calibration


@pytest.fixture()
def early_server(batched_runtime, cloud, tmp_path, monkeypatch):
    """(url, ledger path, calls): a server over the shared runtime whose ``stream`` calls are counted."""
    from edge_runtime.server.build import build_server
    from edge_runtime.server.settings import ServerSettings

    calibrator = calibration(tokens=False)
    calibrator.knots = [(-1000.0, 0.99)]  # every whole local answer is confident
    path = calibrator.save(tmp_path / "calibration.json")
    calls = []
    original = batched_runtime.stream
    monkeypatch.setattr(batched_runtime, "stream", lambda *a, **k: calls.append(k) or original(*a, **k))
    ledger_path = tmp_path / "ledger.sqlite3"
    settings = ServerSettings(cloud=_cloud_gateway(cloud), calibration=path, ledger=True, ledger_path=ledger_path)
    app, _ = build_server(settings, runtime=batched_runtime)
    with running(app) as url:
        yield url, ledger_path, calls


def _ask(url: str, prompt: str, stream: bool = False) -> httpx.Response:
    body = {"model": "m", "prompt": prompt + "\nAnswer:", "max_tokens": 8, "stream": stream}
    return httpx.post(url + "/v1/completions", json=body, timeout=300)


def test_a_hopeless_prompt_reaches_the_cloud_without_local_decoding(early_server, cloud):
    url, ledger_path, calls = early_server
    before = len(cloud.received)
    response = _ask(url, HOPELESS_QUERY)
    assert response.status_code == 200, response.text
    assert (response.headers["X-Edge-Route-Taken"], response.headers["X-Edge-Reason"]) == ("cloud", "prompt_hopeless")
    assert response.json()["choices"][0]["text"] == "Cloud says Paris."
    assert calls == [] and len(cloud.received) == before + 1
    assert HOPELESS_QUERY in str(cloud.received[-1])
    with Ledger(ledger_path) as ledger:
        (row,) = ledger.entries()
    assert (row.route, row.reason, row.local_tokens_in, row.local_tokens_out) == ("cloud", "prompt_hopeless", 0, 0)


def test_a_hopeless_streamed_prompt_streams_the_cloud_without_local_decoding(early_server, cloud):
    url, _, calls = early_server
    response = _ask(url, HOPELESS_QUERY, stream=True)
    assert response.status_code == 200, response.text
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(choice.get("text") or "" for chunk in chunks for choice in chunk.get("choices", []))
    assert (response.headers["X-Edge-Route-Taken"], text) == ("cloud", "Cloud says Paris.")
    assert calls == []


def test_a_confident_prompt_is_answered_locally(early_server, cloud):
    url, ledger_path, calls = early_server
    before = len(cloud.received)
    response = _ask(url, CONFIDENT_QUERY)
    assert response.status_code == 200, response.text
    assert (response.headers["X-Edge-Route-Taken"], response.headers["X-Edge-Reason"]) == ("local", "confident")
    assert len(calls) == 1 and len(cloud.received) == before
    with Ledger(ledger_path) as ledger:
        (row,) = ledger.entries()
    assert row.local_tokens_out > 0
