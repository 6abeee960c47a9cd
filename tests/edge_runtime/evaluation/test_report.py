"""Report numbers: cost per correct answer against cloud-only, the mean over tasks, the targets, strict JSON."""

from __future__ import annotations

import json
import math

import pytest

from edge_runtime.evaluation.report import (ItemOutcome, cost_numbers, json_safe, mean_numbers, targets,
                                           task_numbers)


def _outcome(local: bool, escalated: bool, confidence: float, cost: float = 0.001) -> ItemOutcome:
    return ItemOutcome("i", "t", confidence, local, True, escalated, "r", cost if escalated else 0.0, cost)


def test_cost_per_correct_against_cloud_only():
    outcomes = [_outcome(True, False, 0.9), _outcome(True, False, 0.8), _outcome(False, True, 0.1),
                _outcome(False, False, 0.7)]
    numbers = cost_numbers(outcomes)
    assert numbers["routed_cost_usd"] == pytest.approx(0.001)
    assert numbers["cost_per_correct_usd"] == pytest.approx(0.001 / 3)
    assert numbers["cloud_only_cost_per_correct_usd"] == pytest.approx(0.004 / 4)
    assert numbers["cost_per_correct_vs_cloud_only"] == pytest.approx(1 / 3)


def test_task_numbers_include_the_operating_point():
    outcomes = [_outcome(True, False, 0.9), _outcome(False, True, 0.1)]
    numbers = task_numbers(outcomes)
    assert numbers["escalated_share"] == 0.5 and numbers["routed_accuracy"] == 1.0
    assert numbers["auroc"] == 1.0 and numbers["oracle_gain_captured"] == pytest.approx(1.0)


def test_mean_skips_missing_values_and_sums_n():
    mean = mean_numbers({"a": {"n": 10, "auroc": 0.8, "x": None, "calibration": {}},
                         "b": {"n": 20, "auroc": float("nan"), "x": 1.0, "calibration": {}}})
    assert mean == {"n": 30, "auroc": 0.8, "x": 1.0}


def test_targets_use_the_worst_task_for_the_escalation_ratio():
    per_task = {"a": {"escalated_for_95": 0.3, "escalated_for_95_oracle": 0.2},
                "b": {"escalated_for_95": 0.1, "escalated_for_95_oracle": 0.1}}
    result = targets({"auroc": 0.9, "oracle_gain_captured": 0.6}, per_task)
    assert result["mean_auroc"]["met"] and not result["mean_oracle_gain_captured"]["met"]
    assert result["escalated_for_95_over_oracle"] == {"target": "<= 1.5", "value": pytest.approx(1.5), "met": True}


def test_json_safe_turns_nan_into_null():
    text = json.dumps(json_safe({"a": [math.nan, 1.0], "b": {"c": math.inf}}), allow_nan=False)
    assert json.loads(text) == {"a": [None, 1.0], "b": {"c": None}}
