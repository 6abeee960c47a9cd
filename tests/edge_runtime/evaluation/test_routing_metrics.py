"""Routing metrics against hand-computed curves: accuracy curve, APGR, oracle, random, share for accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.evaluation.routing_metrics import (accuracy_curve, apgr, oracle_confidences, random_curve,
                                                     routing_report, share_for_accuracy)


def test_accuracy_curve_escalates_the_least_confident_first():
    confidences = [0.9, 0.1, 0.5, 0.7]
    local = [True, False, False, True]
    cloud = [True, True, True, False]
    # order by confidence: item1 (fixes), item2 (fixes), item3 (breaks), item0 (same)
    assert accuracy_curve(confidences, local, cloud).tolist() == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.75])


def test_apgr_of_a_straight_line_is_a_half_and_of_an_instant_jump_is_one():
    assert apgr(np.array([0.2, 0.4, 0.6, 0.8, 1.0])) == pytest.approx(0.5)
    assert apgr(np.array([0.0, 1.0, 1.0, 1.0, 1.0])) == pytest.approx(1 - 0.125)
    assert np.isnan(apgr(np.array([0.8, 0.8, 0.8])))  # cloud no better than local: undefined


@pytest.mark.parametrize("local_accuracy", [0.25, 0.5, 0.75])
def test_oracle_apgr_with_a_perfect_cloud_is_one_plus_local_accuracy_over_two(local_accuracy):
    n = 400
    local = [i < local_accuracy * n for i in range(n)]
    cloud = [True] * n
    curve = accuracy_curve(oracle_confidences(local, cloud), local, cloud)
    assert apgr(curve) == pytest.approx((1 + local_accuracy) / 2, abs=1 / n)


def test_a_random_router_averages_an_apgr_of_a_half():
    rng = np.random.default_rng(0)
    local = rng.random(500) < 0.6
    cloud = rng.random(500) < 0.95
    values = [apgr(accuracy_curve(rng.random(500), local, cloud)) for _ in range(200)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.02)


def test_random_curve_is_the_line_from_local_to_cloud():
    line = random_curve([True, False, False, False], [True, True, True, False], points=5)
    assert line.tolist() == pytest.approx([0.25, 0.375, 0.5, 0.625, 0.75])


def test_share_for_accuracy_is_the_first_share_that_reaches_the_target():
    curve = np.array([0.5, 0.6, 0.9, 0.95, 1.0])
    assert share_for_accuracy(curve, 0.9) == 0.5
    assert share_for_accuracy(curve, 0.5) == 0.0
    assert share_for_accuracy(curve, 1.0) == 1.0
    assert share_for_accuracy(curve, 1.1) == 1.0  # never reached: everything goes to the cloud


def test_routing_report_of_a_perfect_router_captures_all_of_the_oracle_gain():
    local = [True, True, False, True, False, True, True, False]
    cloud = [True] * len(local)
    report = routing_report([0.9 if ok else 0.1 for ok in local], local, cloud)
    assert report["n"] == 8
    assert report["local_accuracy"] == pytest.approx(5 / 8)
    assert report["auroc"] == pytest.approx(1.0)
    assert report["apgr"] == pytest.approx(report["apgr_oracle"])
    assert report["oracle_gain_captured"] == pytest.approx(1.0)
    assert report["escalated_for_95"] == report["escalated_for_95_oracle"] == pytest.approx(3 / 8)
