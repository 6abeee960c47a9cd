"""The running decision: checkpoints, the first one below its threshold, early thresholds, the file round trip."""

from __future__ import annotations

from fallback.calibration import Calibrator
from fallback.early import RunningCalibration, checkpoint_tokens, decide_running, early_threshold


def running_on(feature: str, threshold: float) -> RunningCalibration:
    calibrator = Calibrator("platt", [feature], means=[0.0], scales=[1.0], weights=[1.0], threshold=threshold)
    return RunningCalibration(4, {1: calibrator})


def test_checkpoints_are_the_prompt_then_after_the_prefill_then_every_few_tokens_before_the_end():
    assert checkpoint_tokens(14, 4) == [-1, 0, 1, 5, 9, 13]
    assert checkpoint_tokens(1, 4) == [-1, 0]  # a one-token answer: judged from its query and prompt, then whole


def test_a_prompt_checkpoint_decides_before_any_token():
    prompt_only = Calibrator("platt", ["probe_prompt"], means=[0.0], scales=[1.0], weights=[1.0], threshold=0.5)
    running = RunningCalibration(4, {0: prompt_only, 1: running_on("score", 0.5).by_tokens[1]})
    seen = []

    def signals(tokens, calibrator):
        seen.append((tokens, calibrator.features[0]))
        return {"probe_prompt": -2.0, "score": 5.0}

    decision = decide_running(running, 12, signals)
    assert decision is not None and decision.tokens == 0 and seen == [(0, "probe_prompt")]
    assert running.at(0) is prompt_only and running.at(3).features == ["score"]


def test_the_answer_is_escalated_at_the_first_checkpoint_below_its_threshold():
    running = running_on("score", 0.5)
    scores = {1: 2.0, 5: -3.0, 9: -5.0}
    decision = decide_running(running, 12, lambda tokens, _: {"score": scores[tokens]})
    assert decision is not None and decision.tokens == 5 and decision.confidence < 0.5


def test_an_answer_never_below_threshold_runs_to_its_end():
    assert decide_running(running_on("score", 0.5), 12, lambda tokens, _: {"score": 1.0}) is None


def test_early_threshold_escalates_only_what_is_no_more_often_right_than_the_cap():
    confidences = [0.1, 0.2, 0.3, 0.4, 0.8, 0.9]
    correct = [False, False, True, False, True, True]
    threshold = early_threshold(confidences, correct, accuracy_cap=0.25, ceiling=0.7)
    assert threshold == 0.7  # the next confidence up is 0.8, capped at the ceiling
    assert sum(c < threshold for c in confidences) == 4  # the four least confident: 1 of 4 right
    assert early_threshold(confidences, correct, accuracy_cap=0.25, ceiling=0.35) == 0.35
    assert early_threshold([0.1, 0.2], [True, True], accuracy_cap=0.5, ceiling=1.0) == 0.0


def test_the_running_calibration_travels_in_the_calibration_file(tmp_path):
    final = Calibrator("platt", ["value_min_logprob"], [0.0], [1.0], [1.0], threshold=0.6)
    final.extra["running"] = running_on("first_logprob", 0.3).to_dict()
    loaded = Calibrator.load(final.save(tmp_path / "atis.json"))
    running = RunningCalibration.of(loaded)
    assert running.every == 4 and running.at(9).features == ["first_logprob"] and running.at(9).threshold == 0.3
    assert RunningCalibration.of(Calibrator("platt", [])) is None
