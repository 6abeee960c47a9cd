"""The class probe decides in the server as in eval: a real server (production builder, the bundled model) with
``--calibration`` whose final decision reads only ``probe_class``, a real loopback cloud.

The class probe is fitted (``fit_class_probe``) on the bundled model's own prompt states of made-up queries: for
the capital questions the gold answer is what the model says, for the physics questions it is "ask an expert",
which the model never says. So a capital question's answer agrees with the state's class and is kept local; a
physics question's answer disagrees with it and goes to the cloud. Token probabilities play no part.
"""

from __future__ import annotations

import json

import httpx

from benchmarks.early_calibration import CONFIDENT, HOPELESS
from tests.edge_runtime.server.conftest import _cloud_gateway, running

MAX_TOKENS = 8


def _prompt(query: str) -> str:
    return query + "\nAnswer:"


def _streamed_text(response: httpx.Response) -> str:
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    return "".join(choice["text"] for chunk in chunks for choice in chunk.get("choices", []))


def _class_calibration(runtime):
    import numpy as np

    from fallback.calibration import Calibrator
    from fallback.class_probe import SIGNAL, fit_class_probe
    from fallback.probe import final_state

    queries = HOPELESS + CONFIDENT
    results = [runtime.generate(_prompt(query), max_tokens=MAX_TOKENS, record_hidden=0) for query in queries]
    states = np.stack([final_state(result.tokens[0].hidden) for result in results])
    gold = ["ask an expert"] * len(HOPELESS) + [result.text for result in results[len(HOPELESS):]]
    probe = fit_class_probe(states, gold, "prompt", components=4, l2=0.1, min_items=1)
    # P(correct) = sigmoid(probe_class): the probe's probability of the answer said; a stream's held first
    # tokens (no whole answer yet) are judged by the probabilities-only fallback eval's files carry: keep them
    fallback = Calibrator("isotonic", ["mean_logprob"], knots=[(-1000.0, 0.99)])
    calibrator = Calibrator("platt", [SIGNAL], [0.0], [1.0], [1.0], threshold=0.5, task="t", model="m",
                            extra={"class_probes": [probe.to_dict()], "fallback": fallback.to_dict()})
    return calibrator, results


def test_an_answer_the_class_probe_disagrees_with_goes_to_the_cloud(batched_runtime, cloud, tmp_path, monkeypatch):
    from edge_runtime.server.build import build_server
    from edge_runtime.server.settings import ServerSettings

    calibrator, results = _class_calibration(batched_runtime)
    assert all(result.text.strip() and "expert" not in result.text for result in results)
    calls = []
    original = batched_runtime.stream
    monkeypatch.setattr(batched_runtime, "stream", lambda *a, **k: calls.append(k) or original(*a, **k))
    settings = ServerSettings(cloud=_cloud_gateway(cloud), calibration=calibrator.save(tmp_path / "cal.json"),
                              ledger=False)
    app, _ = build_server(settings, runtime=batched_runtime)
    with running(app) as url:
        replies = [httpx.post(url + "/v1/completions", timeout=300, json={
            "model": "m", "prompt": _prompt(query), "max_tokens": MAX_TOKENS, "stream": stream})
            for query, stream in ((HOPELESS[0], False), (CONFIDENT[0], False), (CONFIDENT[1], True))]
    routes = [(reply.headers["X-Edge-Route-Taken"], reply.headers.get("X-Edge-Reason")) for reply in replies]
    assert routes[0] == ("cloud", "low_confidence"), replies[0].text
    assert replies[0].json()["choices"][0]["text"] == "Cloud says Paris."
    assert routes[1] == ("local", "confident"), replies[1].text
    assert replies[1].json()["choices"][0]["text"] == results[len(HOPELESS)].text
    assert routes[2][0] == "local" and _streamed_text(replies[2]) == results[len(HOPELESS) + 1].text
    assert all(call.get("record_hidden") is not None for call in calls), "the server asks for the prompt's state"
