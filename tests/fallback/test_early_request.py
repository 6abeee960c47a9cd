"""The cascade takes the calibration's early decisions: a hopeless prompt goes to the cloud before the local leg
runs, and a stream's hold escalates at a running checkpoint. A scripted local leg (it records whether it was
asked) and a real loopback cloud; the calibration is fitted by the real fit functions
(``benchmarks.early_calibration``).
"""

from __future__ import annotations

import asyncio

from fallback.cascade import Cascade, CascadeRequest
from fallback.early_request import RequestCheckpoints
from fallback.policy import PolicyConfig
from benchmarks.early_calibration import CONFIDENT_QUERY, HOPELESS_QUERY, calibration
from tests.fallback.test_cascade import CLOUD_ANSWER, FakeLocalLeg, gateway_for, only_row
from tests.fallback.test_cascade import cloud, ledger  # noqa: F401 - the same fixtures (a loopback cloud, a ledger)

LONG = [f" w{index}" for index in range(12)]


def cascade_for(local, cloud=None, ledger=None, **calibration_options) -> Cascade:
    calibrator = calibration(**calibration_options)
    return Cascade(local, gateway_for(cloud) if cloud is not None else None,
                   PolicyConfig(threshold=calibrator.threshold), ledger, calibrator)


def answer(cascade: Cascade, query: str, **fields):
    return asyncio.run(cascade.complete(CascadeRequest(prompt=query, task="t", **fields)))


def stream(cascade: Cascade, query: str, **fields):
    async def drain():
        opened = await cascade.open_stream(CascadeRequest(prompt=query, task="t", **fields))
        items = [item async for item in opened.items]
        return opened.route, "".join(item.text for item in items[:-1]), items[-1]

    return asyncio.run(drain())


def test_a_hopeless_prompt_goes_to_the_cloud_without_asking_the_local_model(cloud, ledger):
    local = FakeLocalLeg(probability=0.95)
    result = answer(cascade_for(local, cloud, ledger), HOPELESS_QUERY)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("cloud", CLOUD_ANSWER,
                                                                               "prompt_hopeless")
    assert local.asked == [] and len(cloud.received) == 1
    row = only_row(ledger)
    assert (row.route, row.reason, row.local_tokens_in, row.local_tokens_out) == ("cloud", "prompt_hopeless", 0, 0)
    assert row.local_latency_s is None or row.local_latency_s == 0.0


def test_a_confident_prompt_is_answered_locally(cloud, ledger):
    local = FakeLocalLeg(probability=0.95)
    result = answer(cascade_for(local, cloud, ledger), CONFIDENT_QUERY)
    assert (result.route_taken, result.decision.reason.value) == ("local", "confident")
    assert len(local.asked) == 1 and cloud.received == []


def test_a_hopeless_prompt_with_no_cloud_is_answered_locally_marked_degraded(ledger):
    local = FakeLocalLeg(probability=0.95)
    result = answer(cascade_for(local, None, ledger), HOPELESS_QUERY)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("local-degraded", " Paris.",
                                                                               "prompt_hopeless")
    assert result.degraded_reason == "no cloud is configured"
    assert only_row(ledger).reason == "prompt_hopeless"


def test_a_hopeless_prompt_whose_cloud_fails_gets_the_local_answer(cloud, ledger):
    cloud.default_fault = "503"
    local = FakeLocalLeg(probability=0.95)
    result = answer(cascade_for(local, cloud, ledger), HOPELESS_QUERY)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("local-degraded", " Paris.",
                                                                               "prompt_hopeless")
    assert len(local.asked) == 1 and only_row(ledger).route == "local-degraded"


def test_the_text_checkpoint_judges_only_auto_routed_requests_of_its_task(cloud, ledger):
    local = FakeLocalLeg(probability=0.95)
    cascade = cascade_for(local, cloud, ledger)
    forced = answer(cascade, HOPELESS_QUERY, route="local")
    other = asyncio.run(cascade.complete(CascadeRequest(prompt=HOPELESS_QUERY, task="other")))
    assert (forced.route_taken, other.route_taken) == ("local", "local") and cloud.received == []


def test_a_fixed_threshold_turns_the_early_decisions_off(cloud, ledger):
    local = FakeLocalLeg(probability=0.95)
    calibrator = calibration()
    cascade = Cascade(local, gateway_for(cloud), PolicyConfig(threshold=0.5), ledger, calibrator, early=False)
    assert answer(cascade, HOPELESS_QUERY).route_taken == "local"


def test_a_hopeless_streamed_prompt_streams_the_cloud_without_asking_the_local_model(cloud, ledger):
    local = FakeLocalLeg(probability=0.95)
    route, text, result = stream(cascade_for(local, cloud, ledger), HOPELESS_QUERY)
    assert (route, text, result.decision.reason.value) == ("cloud", CLOUD_ANSWER, "prompt_hopeless")
    assert local.asked == [] and only_row(ledger).local_tokens_out == 0


def test_a_hopeless_streamed_prompt_whose_cloud_fails_streams_the_local_answer_degraded(cloud, ledger):
    cloud.default_fault = "503"
    local = FakeLocalLeg(probability=0.95)
    route, text, result = stream(cascade_for(local, cloud, ledger), HOPELESS_QUERY)
    assert (route, text, result.decision.reason.value) == ("local-degraded", " Paris.", "prompt_hopeless")
    assert "the cloud failed before answering" in result.degraded_reason


def test_the_hold_escalates_at_a_running_checkpoint_the_final_rule_would_keep(cloud, ledger):
    """Tokens at p = 0.6: the final calibrator calls the answer confident (0.9), so the hold commits after two
    tokens; the checkpoint after the first token escalates it (as ``eval`` would) and stops the local leg."""
    without = stream(cascade_for(FakeLocalLeg(LONG, probability=0.6), cloud, ledger, tokens=False), CONFIDENT_QUERY)
    assert without[0] == "local" and without[2].decision.reason.value == "confident"
    route, text, result = stream(cascade_for(FakeLocalLeg(LONG, probability=0.6), cloud, ledger), CONFIDENT_QUERY)
    assert (route, text, result.decision.reason.value) == ("cloud", CLOUD_ANSWER, "early_low_confidence")


def test_a_sure_stream_passes_the_running_checkpoint(cloud, ledger):
    route, text, result = stream(cascade_for(FakeLocalLeg(LONG, probability=0.95), cloud, ledger), CONFIDENT_QUERY)
    assert (route, text) == ("local", "".join(LONG)) and cloud.received == []


def test_the_query_is_the_prompt_or_the_last_user_message():
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                {"role": "user", "content": [{"type": "text", "text": HOPELESS_QUERY}]}]
    assert CascadeRequest(messages=messages).query == HOPELESS_QUERY
    assert CascadeRequest(prompt="p").query == "p" and CascadeRequest(messages=[]).query == ""
    checkpoints = RequestCheckpoints.of(calibration())
    assert checkpoints.text_verdict(HOPELESS_QUERY) is not None and checkpoints.text_verdict(CONFIDENT_QUERY) is None


def test_a_checkpoint_needing_a_hidden_state_is_skipped():
    """The server's engine hands back no hidden states: a checkpoint that reads ``probe_prompt`` decides nothing."""
    calibrator = calibration(text=False)
    checkpoint = calibrator.extra["running"]["checkpoints"]["1"]
    checkpoint["features"] = ["first_logprob", "probe_prompt"]
    checkpoint.update(means=[0.0, 0.0], scales=[1.0, 1.0], weights=[5.0, 0.0], bias=0.0)
    local = FakeLocalLeg(LONG, probability=0.6)
    assert RequestCheckpoints.of(calibrator).token_verdict(CONFIDENT_QUERY, []) is None
    cascade = Cascade(local, None, PolicyConfig(threshold=0.5), None, calibrator)
    assert stream(cascade, CONFIDENT_QUERY)[0] == "local"
