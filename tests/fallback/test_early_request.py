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


def test_a_whole_answer_is_stopped_at_the_running_checkpoint_and_the_cloud_answers(cloud, ledger):
    """The same running decision for a non-streamed request: checkpoint 1 is judged once the second token shows
    the answer goes on (its end is the final decision's, as in eval), the local leg is stopped there (its
    partial answer is what the ledger counts), the cloud answers."""
    local = FakeLocalLeg(LONG, probability=0.6)
    result = answer(cascade_for(local, cloud, ledger), CONFIDENT_QUERY)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("cloud", CLOUD_ANSWER,
                                                                               "early_low_confidence")
    assert result.local.finish_reason == "cancelled" and len(result.local.tokens) == 2
    row = only_row(ledger)
    assert (row.route, row.reason, row.local_tokens_out) == ("cloud", "early_low_confidence", 2)


def test_a_one_token_whole_answer_is_judged_by_the_final_rule_not_a_checkpoint(cloud, ledger):
    """An answer that ends after its first token never reaches checkpoint 1 (eval's ``checkpoint_tokens``):
    the final calibrator keeps it (p = 0.6 is above its floor), nothing is stopped or decoded twice."""
    local = FakeLocalLeg([" Lisbon"], probability=0.6)
    result = answer(cascade_for(local, cloud, ledger), CONFIDENT_QUERY)
    assert (result.route_taken, result.decision.reason.value) == ("local", "confident")
    assert len(local.asked) == 1 and cloud.received == []


def test_a_whole_answer_stopped_early_whose_cloud_fails_gets_the_whole_local_answer(cloud, ledger):
    cloud.default_fault = "503"
    local = FakeLocalLeg(LONG, probability=0.6)
    result = answer(cascade_for(local, cloud, ledger), CONFIDENT_QUERY)
    assert (result.route_taken, result.text) == ("local-degraded", "".join(LONG))
    assert result.decision.reason.value == "early_low_confidence" and len(local.asked) == 2


def test_a_whole_answer_with_no_cloud_to_take_it_is_never_stopped_early(ledger):
    local = FakeLocalLeg(LONG, probability=0.6)
    result = answer(cascade_for(local, None, ledger), CONFIDENT_QUERY)
    assert (result.route_taken, result.text) == ("local", "".join(LONG)) and len(local.asked) == 1


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
    """A local leg that hands back no hidden states (ONNX, this scripted one): a checkpoint that reads
    ``probe_prompt`` decides nothing, and the leg is asked for them (the calibration reads them)."""
    calibrator = calibration(text=False)
    checkpoint = calibrator.extra["running"]["checkpoints"]["1"]
    checkpoint["features"] = ["first_logprob", "probe_prompt"]
    checkpoint.update(means=[0.0, 0.0], scales=[1.0, 1.0], weights=[5.0, 0.0], bias=0.0)
    local = FakeLocalLeg(LONG, probability=0.6)
    assert RequestCheckpoints.of(calibrator).token_verdict(CONFIDENT_QUERY, []) is None
    cascade = Cascade(local, None, PolicyConfig(threshold=0.5), None, calibrator)
    assert stream(cascade, CONFIDENT_QUERY)[0] == "local"
    assert [request.record_hidden for request in local.asked] == [4]


def test_hidden_signals_read_the_states_the_tokens_were_chosen_from_as_eval_reads_them():
    """``probe_prompt`` reads the first token's state (the prompt's last); ``probe_tokens`` the mean of those the
    first ``count`` tokens were chosen from, ``probe_last`` the latest of them: ``LocalAnswer.hidden`` over the
    same recording, at every count."""
    from types import SimpleNamespace

    import numpy as np

    from fallback.early_request import context_signals, hidden_signals
    from fallback.probe import Probe, encode
    from fallback.tasks import LocalAnswer

    rng = np.random.default_rng(0)
    states = [rng.normal(size=8).astype(np.float32) for _ in range(4)]
    tokens = [SimpleNamespace(logprob=-0.1, text="", hidden=state) for state in states]
    tokens.append(SimpleNamespace(logprob=-0.1, text=""))
    probes = [Probe(source, list(rng.normal(size=8)), 0.5) for source in ("prompt", "tokens", "last")]
    calibrator = calibration(text=False, tokens=False)
    calibrator.extra["probes"] = [probe.to_dict() for probe in probes]
    recorded = LocalAnswer("x", {}, 3, 5, 0.1, hidden_prompt=encode(states[0]),
                           hidden_tokens=[encode(state) for state in states[1:]])
    for count in (0, 1, 3, None):
        expected = {probe.signal: probe.logit(recorded.hidden(probe.source, count)) for probe in probes}
        got = hidden_signals(calibrator, tokens, count)
        assert got.keys() == expected.keys() and all(abs(got[k] - expected[k]) < 1e-2 for k in got)
    assert hidden_signals(calibrator, [SimpleNamespace(logprob=-0.1)]) == {}  # no hidden state: no probe signal
    assert "probe_tokens" in context_signals(calibrator, "q", tokens)


def test_the_final_decision_reads_the_probe_where_the_tokens_carry_hidden_states():
    """A final calibrator on ``probe_prompt`` decides on the prompt's state when the leg hands it back, and on
    the probabilities-only fallback calibrator it carries when the leg does not."""
    from types import SimpleNamespace

    import numpy as np

    from fallback.calibration import Calibrator
    from fallback.probe import Probe

    probe = Probe("prompt", [1.0, 0.0], 0.0)
    final = Calibrator("platt", ["probe_prompt"], [0.0], [1.0], [4.0], 0.0, threshold=0.5, task="t")
    final.extra = {"probes": [probe.to_dict()],
                   "fallback": Calibrator("isotonic", ["mean_logprob"], knots=[(-100.0, 0.42)]).to_dict()}
    cascade = Cascade(FakeLocalLeg(), None, PolicyConfig(threshold=0.5), None, final)
    request = CascadeRequest(prompt="q", task="t")
    sure = [SimpleNamespace(logprob=-0.1, top=(), token_id=1, text='x', hidden=np.array([2.0, 0.0]))]
    unsure = [SimpleNamespace(logprob=-0.1, top=(), token_id=1, text='x', hidden=np.array([-2.0, 0.0]))]
    assert cascade.confidence_of_tokens(sure, request) > 0.99 > 0.01 > cascade.confidence_of_tokens(unsure, request)
    assert cascade.confidence_of_tokens([SimpleNamespace(logprob=-0.1, top=(), token_id=1, text='x')], request) == 0.42
    assert cascade.record_hidden == 4 and Cascade(FakeLocalLeg(), calibrator=calibration()).record_hidden is None


def test_a_calibration_reading_margins_asks_the_local_leg_for_the_runner_up():
    """Margin signals need each token's best alternative: the leg is asked for two whatever the client asked
    (eval always has them), and a client that asked for more keeps its number."""
    from fallback.calibration import Calibrator

    final = Calibrator("platt", ["value_min_margin"], [0.0], [1.0], [1.0], 0.0, threshold=0.5, task="t")
    local = FakeLocalLeg()
    cascade = Cascade(local, None, PolicyConfig(threshold=0.5), None, final)
    asyncio.run(cascade.complete(CascadeRequest(prompt="q", task="t")))
    asyncio.run(cascade.complete(CascadeRequest(prompt="q", task="t", top_logprobs=5)))
    assert [request.top_logprobs for request in local.asked] == [2, 5]
    plain = FakeLocalLeg()
    asyncio.run(Cascade(plain, None, PolicyConfig(threshold=0.5), None, calibration()).complete(
        CascadeRequest(prompt="q", task="t")))
    assert plain.asked[0].top_logprobs == 0


def test_a_label_answer_probe_is_eval_only_and_the_server_falls_back():
    """The server generates; it never reads a label's "answer" state: a calibrator on ``probe_answer`` gets no
    hidden signal there (its probabilities-only fallback decides) and asks for no recording."""
    from types import SimpleNamespace

    import numpy as np

    from fallback.calibration import Calibrator
    from fallback.early_request import hidden_signals, needs_hidden
    from fallback.probe import Probe

    final = Calibrator("platt", ["probe_answer"], [0.0], [1.0], [4.0], 0.0, threshold=0.5, task="t")
    final.extra = {"probes": [Probe("answer", [1.0, 0.0], 0.0).to_dict()],
                   "fallback": Calibrator("isotonic", ["mean_logprob"], knots=[(-100.0, 0.42)]).to_dict()}
    tokens = [SimpleNamespace(logprob=-0.1, top=(), token_id=1, text="x", hidden=np.array([2.0, 0.0]))]
    assert hidden_signals(final, tokens) == {} and not needs_hidden(final)
    cascade = Cascade(FakeLocalLeg(), None, PolicyConfig(threshold=0.5), None, final)
    assert cascade.confidence_of_tokens(tokens, CascadeRequest(prompt="q", task="t")) == 0.42


def _class_calibrator(field: str = "", fallback: bool = True):
    """A final calibrator on one class probe (classes "french" / "dutch", or a JSON field's "monday" / "<null>")
    over a 2-dimensional state: the first coordinate points to the first class."""
    from fallback.calibration import Calibrator
    from fallback.class_probe import ClassProbe

    classes = ["monday", "<null>"] if field else ["french", "dutch"]
    probe = ClassProbe("prompt", classes, [[4.0, 0.0], [-4.0, 0.0]], [0.0, 0.0], field=field)
    final = Calibrator("platt", [probe.signal], [0.0], [1.0], [1.0], 0.0, threshold=0.5, task="t")
    final.extra = {"class_probes": [probe.to_dict()]}
    if fallback:
        final.extra["fallback"] = Calibrator("isotonic", ["mean_logprob"], knots=[(-100.0, 0.42)]).to_dict()
    return final


def _said(*texts, state=(1.0, 0.0)):
    from types import SimpleNamespace

    import numpy as np

    first = SimpleNamespace(logprob=-0.1, top=(), token_id=1, text=texts[0], hidden=np.array(state))
    return [first, *(SimpleNamespace(logprob=-0.1, top=(), token_id=1, text=text) for text in texts[1:])]


def test_the_server_reads_the_class_probe_on_the_whole_answer_cut_at_its_stop():
    """The final decision scores the whole answer's words against the prompt state's class (the last token may
    carry the stop sequence; the answer returned does not); a calibration whose only probe is a class probe,
    whole or per JSON field, still asks the leg for the prompt's state."""
    from fallback.early_request import answer_text, needs_hidden

    final = _class_calibrator()
    cascade = Cascade(FakeLocalLeg(), None, PolicyConfig(threshold=0.5), None, final)
    request = CascadeRequest(prompt="q", task="t", stop=["."])
    assert answer_text(_said(" Fr", "ench", "."), ["."]) == " French"
    assert cascade.confidence_of_tokens(_said(" Fr", "ench", "."), request) > 0.99
    assert cascade.confidence_of_tokens(_said(" Dutch", "."), request) < 0.01
    assert needs_hidden(final) and needs_hidden(_class_calibrator("day")) and cascade.record_hidden == 4
    day = Cascade(FakeLocalLeg(), None, PolicyConfig(threshold=0.5), None, _class_calibrator("day"))
    assert day.confidence_of_tokens(_said('{"day": "Monday"}'), request) > 0.99
    assert day.confidence_of_tokens(_said('{"day": null}'), request) < 0.01


def test_a_streams_held_tokens_are_not_judged_by_the_class_of_a_cut_answer():
    """A stream's hold judges the first tokens: their words are not the answer's class yet, so the class probe is
    not read there; the file's probabilities-only fallback judges them, or, without one, no confidence (the hold
    then waits for the whole answer)."""
    request = CascadeRequest(prompt="q", task="t")
    held = _said(" Fr")
    with_fallback = Cascade(FakeLocalLeg(), None, PolicyConfig(threshold=0.5), None, _class_calibrator())
    assert with_fallback.confidence_of_tokens(held, request, whole=False) == 0.42
    assert with_fallback.confidence_of_tokens(held, request) < 0.01  # were it the whole answer: "fr" is no class
    without = Cascade(FakeLocalLeg(), None, PolicyConfig(threshold=0.5), None, _class_calibrator(fallback=False))
    assert without.confidence_of_tokens(held, request, whole=False) is None


def test_a_stream_is_held_on_its_first_words_by_the_fallback_not_by_their_class(cloud, ledger):
    """Through the cascade: a stream whose first token carries the prompt's state. Its held words (" French is
    ...") are not a whole answer; judged by the class probe as if they were, they would look wrong and go to the
    cloud. The hold judges them by the probabilities-only fallback (0.9 here) and commits the stream locally."""
    import math
    from dataclasses import dataclass

    import numpy as np

    from fallback.calibration import Calibrator
    from tests.fallback.test_cascade import Answer, FakeStream, Piece, Token, Usage

    @dataclass(frozen=True)
    class StateToken(Token):
        hidden: object = None

    class StateStream(FakeStream):
        def __iter__(self):
            self.tokens = tokens = []
            for index, word in enumerate(self.leg.words):
                state = np.array([1.0, 0.0]) if index == 0 else None
                tokens.append(StateToken(index + 1, word, math.log(self.leg.probability), hidden=state))
                yield Piece(word, tokens[-1])
            self.result = Answer("".join(self.leg.words), "stop", tokens, Usage(5, len(tokens)))

    class StateLeg(FakeLocalLeg):
        def stream(self, request):
            self.asked.append(request)
            return StateStream(self)

    final = _class_calibrator()
    final.extra["fallback"] = Calibrator("isotonic", ["mean_logprob"], knots=[(-100.0, 0.9)]).to_dict()
    local = StateLeg([" French", " is", *LONG])
    cascade = Cascade(local, gateway_for(cloud), PolicyConfig(threshold=0.5), ledger, final)
    route, text, _ = stream(cascade, "q")
    assert route == "local" and text.startswith(" French is w0") and local.asked[0].record_hidden == 4
