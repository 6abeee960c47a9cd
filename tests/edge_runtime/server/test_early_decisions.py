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

from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime
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


def _chunks(response: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def _streamed_text(response: httpx.Response) -> str:
    return "".join(choice.get("text") or "" for chunk in _chunks(response) for choice in chunk.get("choices", []))


def _edge(response: httpx.Response) -> dict:
    """The routing summary a stream's last chunk carries."""
    return [chunk["edge"] for chunk in _chunks(response) if "edge" in chunk][-1]


def _prompt_probe_calibration(runtime, source: str = "prompt", every: int = 4):
    """A calibration whose only early decision is the prompt checkpoint (0): a probe on the prompt's last hidden
    state (``source`` "middle": the middle layer's, from a tapped engine), fitted (``fit_probe``, ``fit_platt``,
    ``early_threshold``) on the bundled model's own states of the made-up hopeless and confident queries, as the
    server's requests frame them; every whole answer is kept. Later token counts reuse the checkpoint (every
    ``every`` tokens): a prompt probe reads the prompt's state there too, a middle one the latest token's."""
    import numpy as np

    from benchmarks.early_calibration import CONFIDENT, HOPELESS
    from fallback.calibration import Calibrator, fit_platt
    from fallback.early import RunningCalibration, early_threshold
    from fallback.probe import final_state, fit_probe, middle_state

    queries = HOPELESS + CONFIDENT
    correct = [False] * len(HOPELESS) + [True] * len(CONFIDENT)
    recorded = [runtime.generate(query + "\nAnswer:", max_tokens=1, record_hidden=0).tokens[0].hidden
                for query in queries]
    states = np.stack([middle_state(state) if source == "middle" else final_state(state) for state in recorded])
    probe = fit_probe(states, correct, source, components=4, l2=1.0)
    rows = [{probe.signal: probe.logit(state)} for state in states]
    checkpoint = fit_platt(rows, correct, [probe.signal])
    checkpoint.threshold = early_threshold([checkpoint.predict(row) for row in rows], correct, 0.2, 0.9)
    checkpoint.extra = {"probes": [probe.to_dict()], "tokens": 0}
    final = Calibrator("isotonic", ["mean_logprob"], knots=[(-1000.0, 0.99)], threshold=0.5, task="t", model="m")
    final.extra["running"] = RunningCalibration(every, {0: checkpoint}).to_dict()
    return final


@pytest.fixture()
def probe_server(batched_runtime, cloud, tmp_path, monkeypatch):
    """(url, calls): a server whose calibration decides from the prompt's hidden state; ``stream`` calls counted."""
    from edge_runtime.server.build import build_server
    from edge_runtime.server.settings import ServerSettings

    path = _prompt_probe_calibration(batched_runtime).save(tmp_path / "calibration.json")
    calls = []
    original = batched_runtime.stream
    monkeypatch.setattr(batched_runtime, "stream", lambda *a, **k: calls.append(k) or original(*a, **k))
    settings = ServerSettings(cloud=_cloud_gateway(cloud), calibration=path, ledger=False)
    app, _ = build_server(settings, runtime=batched_runtime)
    with running(app) as url:
        yield url, calls


def test_a_stream_is_escalated_at_the_prompt_checkpoint_from_the_engines_hidden_state(probe_server, cloud):
    """The server asks the engine for hidden states (the calibration reads them), and the probe on the prompt's
    last state escalates the hopeless prompt when its first token arrives, as ``eval`` would at checkpoint 0;
    the confident prompt is kept. Neither decision is possible on the tokens' probabilities alone here."""
    url, calls = probe_server
    hopeless = _ask(url, HOPELESS_QUERY, stream=True)
    assert hopeless.status_code == 200, hopeless.text
    assert (hopeless.headers["X-Edge-Route-Taken"], _edge(hopeless)["reason"]) == ("cloud", "early_low_confidence")
    assert _streamed_text(hopeless) == "Cloud says Paris."
    confident = _ask(url, CONFIDENT_QUERY, stream=True)
    assert (confident.headers["X-Edge-Route-Taken"], _edge(confident)["reason"]) == ("local", "confident")
    assert [call.get("record_hidden") for call in calls] == [4, 4]


def test_a_whole_answer_is_escalated_at_the_prompt_checkpoint_after_one_token(probe_server, cloud):
    """Non-streamed, the same prompt checkpoint stops the local leg at its first token and the cloud answers."""
    url, calls = probe_server
    response = _ask(url, HOPELESS_QUERY)
    assert response.status_code == 200, response.text
    assert (response.headers["X-Edge-Route-Taken"], response.headers["X-Edge-Reason"]) == ("cloud",
                                                                                           "early_low_confidence")
    assert response.json()["choices"][0]["text"] == "Cloud says Paris."
    assert calls[-1]["record_hidden"] == 4


@pytest.fixture(scope="module")
def tapped_runtime(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(n_parallel=4, n_ctx=1024, middle_layer=True)) as loaded:
        yield loaded


def test_a_middle_layer_probe_decides_in_the_server_as_in_eval(tapped_runtime, batched_runtime, cloud, tmp_path):
    """A calibration whose prompt checkpoint reads the middle layer's state (``probe_middle``), served over an
    engine loaded with the tap: a hopeless prompt goes to the cloud at its first token, a confident one stays
    local (two of the fitted queries: 16 made-up items fit a middle-layer probe, they do not make it general).
    Over an engine without the tap the checkpoint has no state to read and every answer is kept."""
    from benchmarks.early_calibration import CONFIDENT, HOPELESS
    from edge_runtime.server.build import build_server
    from edge_runtime.server.settings import ServerSettings

    # checkpoints 0 and 1 only (both read the prompt's state; 8-token answers end before 1 + 64)
    path = _prompt_probe_calibration(tapped_runtime, "middle", every=64).save(tmp_path / "calibration.json")
    settings = ServerSettings(cloud=_cloud_gateway(cloud), calibration=path, ledger=False)
    for runtime, hopeless_route in ((tapped_runtime, ("cloud", "early_low_confidence")),
                                    (batched_runtime, ("local", "confident"))):
        app, _ = build_server(settings, runtime=runtime)
        with running(app) as url:
            hopeless = _ask(url, HOPELESS[0], stream=True)
            confident = _ask(url, CONFIDENT[0])
        assert (hopeless.headers["X-Edge-Route-Taken"], _edge(hopeless)["reason"]) == hopeless_route
        assert (confident.headers["X-Edge-Route-Taken"], confident.headers["X-Edge-Reason"]) == ("local",
                                                                                               "confident")
