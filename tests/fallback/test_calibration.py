"""Calibration: Platt recovers a known logistic relation, isotonic is monotone, thresholds, AUROC, selection."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fallback.calibration import (Calibrator, Candidate, auroc, cross_validated_auroc, fit_isotonic, fit_platt,
                                  select_calibrator, signal_value, threshold_for_accuracy, threshold_for_share)
from fallback.errors import ConfigError


def _logistic_sample(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(0.5 + 2.0 * x)))
    return [{"x": float(v), "noise": float(rng.normal())} for v in x], (rng.random(n) < p).tolist()


def test_platt_recovers_a_known_logistic_relation():
    rows, correct = _logistic_sample(20000)
    calibrator = fit_platt(rows, correct, ["x"], l2=0.0)
    slope = calibrator.weights[0] / calibrator.scales[0]
    intercept = calibrator.bias - slope * calibrator.means[0]
    assert slope == pytest.approx(2.0, rel=0.05)
    assert intercept == pytest.approx(0.5, abs=0.06)
    assert calibrator.predict({"x": 0.0}) == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.02)


def test_isotonic_is_monotone_and_matches_block_means():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    correct = [False, True, False, True, True, True]
    calibrator = fit_isotonic(scores, correct, "s")
    predictions = [calibrator.predict({"s": s}) for s in np.linspace(0, 0.7, 50)]
    assert all(b >= a for a, b in itertools.pairwise(predictions))
    assert calibrator.predict({"s": 0.1}) == pytest.approx(0.0)
    assert calibrator.predict({"s": 0.3}) == pytest.approx(0.5)  # 0.2 and 0.3 pooled
    assert calibrator.predict({"s": 0.6}) == pytest.approx(1.0)


def test_threshold_for_share_escalates_that_share():
    confidences = [0.1 * i for i in range(10)]
    threshold = threshold_for_share(confidences, 0.3)
    assert sum(c < threshold for c in confidences) == 3
    assert threshold_for_share(confidences, 0.0) == 0.0
    assert all(c < threshold_for_share(confidences, 1.0) for c in confidences)


def test_threshold_for_accuracy_is_the_lowest_that_reaches_the_target():
    confidences = [0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [True, True, False, True, False]
    assert threshold_for_accuracy(confidences, correct, 1.0) == 0.8
    assert threshold_for_accuracy(confidences, correct, 0.75) == 0.6
    assert threshold_for_accuracy(confidences, correct, 0.5) == 0.5
    assert threshold_for_accuracy([0.5], [False], 0.9) > 1.0  # never reached: escalate everything


def _brute_force_auroc(scores, positives):
    pairs = [(p, n) for p, ok_p in zip(scores, positives) if ok_p for n, ok_n in zip(scores, positives) if not ok_n]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=40).astype(float)  # many ties
    positives = (rng.random(40) < 0.5).tolist()
    assert auroc(scores, positives) == pytest.approx(_brute_force_auroc(scores, positives))
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_save_and_load_round_trip(tmp_path):
    rows, correct = _logistic_sample(300)
    platt = fit_platt(rows, correct, ["x", "x*noise"])
    platt.threshold, platt.task, platt.extra = 0.42, "demo", {"candidate": "x"}
    isotonic = fit_isotonic([r["x"] for r in rows], correct, "x")
    for calibrator in (platt, isotonic):
        loaded = Calibrator.load(calibrator.save(tmp_path / f"{calibrator.kind}.json"))
        assert loaded == calibrator
        assert loaded.predict(rows[0]) == pytest.approx(calibrator.predict(rows[0]))


def test_load_refuses_another_schema_and_garbage(tmp_path):
    (tmp_path / "old.json").write_text('{"schema_version": 0, "kind": "platt", "features": []}')
    (tmp_path / "bad.json").write_text("not json")
    for name in ("old.json", "bad.json", "missing.json"):
        with pytest.raises(ConfigError):
            Calibrator.load(tmp_path / name)


def test_product_features_multiply_signals_and_name_a_missing_one():
    assert signal_value({"label_1": 1.0, "max_prob": 0.7}, "label_1*max_prob") == pytest.approx(0.7)
    assert signal_value({"label_1": 0.0, "max_prob": 0.7}, "label_1*max_prob") == 0.0
    with pytest.raises(ConfigError, match="max_prob"):
        signal_value({"label_1": 1.0}, "label_1*max_prob")


def test_selection_prefers_the_informative_feature_by_cross_validation():
    rows, correct = _logistic_sample(400, seed=3)
    candidates = [Candidate("noise", "platt", ("noise",)), Candidate("x", "platt", ("x",))]
    assert cross_validated_auroc(candidates[1], rows, correct) > 0.8
    chosen = select_calibrator(candidates, rows, correct)
    assert chosen.features == ["x"]
    assert chosen.extra["candidate"] == "x"
    assert set(chosen.extra["cv_scores"]) == {"noise", "x"}


def test_selection_with_one_class_gives_a_constant_calibrator():
    chosen = select_calibrator([Candidate("x", "platt", ("x",))], [{"x": 1.0}, {"x": 2.0}], [True, True])
    assert chosen.predict({"x": -5.0}) == chosen.predict({"x": 5.0}) == pytest.approx(0.75)


def test_isotonic_pools_ties_into_one_knot_and_is_a_step_function():
    from fallback.calibration import fit_isotonic

    scores = [0.1, 0.2, 0.2, 0.2, 0.5, 0.5, 0.9, 0.9]
    correct = [False, False, True, True, False, True, True, True]
    calibrator = fit_isotonic(scores, correct, "s")
    positions = [x for x, _ in calibrator.knots]
    assert positions == sorted(set(positions)), "one knot per tied score, strictly increasing"
    levels = [level for _, level in calibrator.knots]
    assert levels == sorted(levels)  # monotone
    # a step function: between two knots the lower knot's level holds (no interpolation)
    (x0, y0), (x1, _) = calibrator.knots[0], calibrator.knots[1]
    assert calibrator.predict({"s": (x0 + x1) / 2}) == y0
    assert calibrator.predict({"s": -5.0}) == y0 and calibrator.predict({"s": 5.0}) == levels[-1]


def test_cross_validation_folds_keep_the_class_balance():
    from fallback.calibration import fold_indices

    labels = [True] * 10 + [False] * 40
    folds = fold_indices(labels, 5, seed=3)
    assert sorted(index for fold in folds for index in fold) == list(range(50))
    assert [sum(labels[i] for i in fold) for fold in folds] == [2, 2, 2, 2, 2]
