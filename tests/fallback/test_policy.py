"""The escalation policy, validity checks and confidence signals: pure functions, every branch."""

from __future__ import annotations

import math

import pytest

from fallback.confidence import contextual_calibrate, generation_signals, label_signals
from fallback.policy import Decision, LocalOutcome, PolicyConfig, Reason, decide, stop_early
from fallback.validity import Validity, check_output

CONFIG = PolicyConfig(threshold=0.6)


@pytest.mark.parametrize("outcome, escalate, reason", [
    (LocalOutcome(confidence=0.9, route="cloud"), True, Reason.FORCED_CLOUD),
    (LocalOutcome(confidence=0.1, route="local"), False, Reason.FORCED_LOCAL),
    (LocalOutcome(input_too_long=True, error="prompt is 9 tokens; cap is 4"), True, Reason.INPUT_TOO_LONG),
    (LocalOutcome(error="BackendError: boom"), True, Reason.LOCAL_ERROR),
    (LocalOutcome(confidence=0.9, stopped_early=True), True, Reason.EARLY_LOW_CONFIDENCE),
    (LocalOutcome(confidence=0.9, finish_reason="deadline"), True, Reason.DEADLINE),
    (LocalOutcome(confidence=0.9, validity=Validity(False, "not valid JSON")), True, Reason.INVALID_OUTPUT),
    (LocalOutcome(confidence=0.59), True, Reason.LOW_CONFIDENCE),
    (LocalOutcome(confidence=None), True, Reason.LOW_CONFIDENCE),
    (LocalOutcome(confidence=0.6, finish_reason="length"), False, Reason.CONFIDENT),
])
def test_each_branch_carries_its_reason(outcome, escalate, reason):
    decision = decide(outcome, CONFIG)
    assert isinstance(decision, Decision)
    assert (decision.escalate, decision.reason) == (escalate, reason)
    assert decision.detail


def test_truncated_answers_escalate_only_when_configured():
    outcome = LocalOutcome(confidence=0.9, finish_reason="length")
    assert decide(outcome, PolicyConfig(threshold=0.5, escalate_on_length=True)).reason == Reason.TRUNCATED


def test_thresholds_zero_and_one():
    assert not decide(LocalOutcome(confidence=0.0), PolicyConfig(threshold=0.0)).escalate
    assert decide(LocalOutcome(confidence=0.999), PolicyConfig(threshold=1.0)).escalate


def test_early_stop_uses_running_geometric_mean():
    config = PolicyConfig(early_floor=0.5, early_min_tokens=3)
    assert not stop_early([math.log(0.1)] * 2, config), "too few tokens to judge"
    assert stop_early([math.log(0.4)] * 3, config)
    assert not stop_early([math.log(0.6)] * 3, config)
    assert not stop_early([math.log(0.01)] * 9, PolicyConfig())


@pytest.mark.parametrize("text, response_format, ok", [
    ("", None, False), ("   ", None, False), ("hello", None, True),
    ('{"a": 1}', {"type": "json_object"}, True), ("[1]", {"type": "json_object"}, False),
    ("{oops", {"type": "json_object"}, False),
    ('{"a": 1}', {"type": "json_schema", "json_schema": {"schema": {"type": "object", "required": ["b"]}}}, False),
    ('{"b": 2}', {"type": "json_schema", "json_schema": {"schema": {"type": "object", "required": ["b"]}}}, True),
])
def test_validity(text, response_format, ok):
    validity = check_output(text, response_format)
    assert validity.ok is ok and (ok or validity.reason)


def test_label_signals_and_contextual_calibration():
    signals = label_signals([0.7, 0.2, 0.1])
    assert signals["max_prob"] == pytest.approx(0.7) and signals["margin"] == pytest.approx(0.5)
    assert -1.0 <= signals["neg_entropy"] <= 0.0
    assert label_signals([0.5, 0.5])["neg_entropy"] == pytest.approx(-1.0)
    assert contextual_calibrate([0.6, 0.4], [0.75, 0.25]) == pytest.approx([1 / 3, 2 / 3])


def test_generation_signals_are_length_aware():
    signals = generation_signals([-0.1, -2.0, -0.3])
    assert signals["mean_logprob"] == pytest.approx(-0.8) and signals["min_logprob"] == -2.0
    assert signals["first_logprob"] == -0.1
    assert generation_signals([])["mean_logprob"] < -10
