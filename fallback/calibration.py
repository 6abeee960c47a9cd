"""Maps confidence signals to P(correct) for one model and task, and picks the escalation threshold.

A calibrator is fitted on labelled items (Platt scaling: logistic regression on standardised signals, or
isotonic regression on one signal) and saved as a small JSON file the runtime loads. A feature named ``a*b``
is the product of signals ``a`` and ``b`` (e.g. ``label_2*max_prob``: the top probability, counted only when
label 2 was predicted, for a model whose reliability differs by predicted label). ``select_calibrator`` picks
among candidate feature sets by cross-validated AUROC on the calibration data. The threshold is chosen on the
same calibration data, from a target accuracy of the answers kept local or a target share of cloud calls. Pure
numpy; no model, no I/O except ``save``/``load``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fallback.errors import ConfigError

SCHEMA_VERSION = 1


@dataclass
class Calibrator:
    """P(correct) = sigmoid(bias + sum(weight * (signal - mean) / scale)) for ``kind == "platt"``;
    a step function through ``knots`` for ``kind == "isotonic"``."""

    kind: str
    features: list[str]
    means: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0
    knots: list[tuple[float, float]] = field(default_factory=list)
    threshold: float = 0.5
    task: str = ""
    model: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def signal_names(self) -> set[str]:
        """The signals its features read (each factor of a product feature ``a*b``)."""
        return {name for feature in self.features for name in feature.split("*")}

    def has_signals(self, signals: dict[str, float]) -> bool:
        """Whether ``signals`` holds every signal its own features read."""
        return self.signal_names <= signals.keys()

    def reads(self, signals: dict[str, float]) -> bool:
        """Whether ``predict`` can judge ``signals``: every signal its features need, or a fallback to ask."""
        return bool(self.extra.get("fallback")) or self.has_signals(signals)

    def predict(self, signals: dict[str, float]) -> float:
        """P(correct) from ``signals``; a caller without some signal the features need (a runtime that records
        no hidden state, a server that does not know the task's question words) gets ``extra["fallback"]``'s
        prediction, a calibrator of the same task on token probabilities alone, when the file carries one. Its
        prediction is mapped (monotonically) so that its own threshold lands on this one's: the caller compares
        every confidence with this threshold, and the fallback keeps its own operating point that way."""
        fallback = self.extra.get("fallback")
        if fallback and not self.has_signals(signals):
            backup = Calibrator.from_dict(fallback)
            return aligned(backup.predict(signals), backup.threshold, self.threshold)
        values = [signal_value(signals, name) for name in self.features]
        if self.kind == "isotonic":
            return _step(self.knots, values[0])
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, values, self.means, self.scales))
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def from_dict(cls, record: dict) -> "Calibrator":
        record = {key: value for key, value in record.items() if key != "schema_version"}
        record["knots"] = [tuple(knot) for knot in record.get("knots", [])]
        return cls(**record)

    @classmethod
    def load(cls, path: str | Path) -> "Calibrator":
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read calibration file: {exc}") from exc
        if record.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(f"{path}: calibration schema version is not {SCHEMA_VERSION}")
        return cls.from_dict(record)


def aligned(probability: float, own_threshold: float, threshold: float) -> float:
    """``probability`` mapped piecewise-linearly (0 -> 0, ``own_threshold`` -> ``threshold``, 1 -> 1): the same
    decision against ``threshold`` as the probability against its own."""
    if not 0.0 < own_threshold < 1.0 or not 0.0 < threshold < 1.0:
        return probability
    if probability <= own_threshold:
        return probability * threshold / own_threshold
    return threshold + (probability - own_threshold) * (1.0 - threshold) / (1.0 - own_threshold)


def _step(knots: Sequence[tuple[float, float]], value: float) -> float:
    """The isotonic map at ``value``: the level of the last knot at or below it (the first level below all)."""
    if not knots:
        return 0.5
    index = bisect.bisect_right([x for x, _ in knots], value) - 1
    return float(knots[max(index, 0)][1])


def signal_value(signals: dict[str, float], feature: str) -> float:
    """One feature of a signals dict: a signal by name, or ``a*b``, the product of two or more signals."""
    try:
        return math.prod(float(signals[name]) for name in feature.split("*"))
    except KeyError as exc:
        raise ConfigError(f"calibration feature {feature!r} needs signal {exc.args[0]!r}, "
                          f"which this answer lacks (has: {sorted(signals)})") from None


def feature_matrix(rows: Sequence[dict[str, float]], features: Sequence[str]) -> np.ndarray:
    return np.array([[signal_value(row, name) for name in features] for row in rows], dtype=np.float64)


def fit_platt(rows: Sequence[dict[str, float]], correct: Sequence[bool], features: Sequence[str],
              l2: float = 1e-2, iterations: int = 50) -> Calibrator:
    """Logistic regression by Newton's method on standardised features, lightly L2-regularised."""
    x = feature_matrix(rows, features)
    y = np.asarray(correct, dtype=np.float64)
    means, scales = x.mean(axis=0), x.std(axis=0)
    scales[scales < 1e-9] = 1.0
    design = np.hstack([np.ones((len(x), 1)), (x - means) / scales])
    beta = np.zeros(design.shape[1])
    penalty = np.eye(design.shape[1]) * l2
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -40, 40)))
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + np.eye(len(beta)) * 1e-9
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return Calibrator("platt", list(features), means.tolist(), scales.tolist(), beta[1:].tolist(), float(beta[0]))


def fit_isotonic(scores: Sequence[float], correct: Sequence[bool], feature: str) -> Calibrator:
    """Pool-adjacent-violators on one signal: a monotone, non-decreasing step map to P(correct).

    Tied scores are pooled first (one score, one level), so knots have strictly increasing positions; each
    knot is where its level begins."""
    values, labels = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    blocks: list[list[float]] = []  # [sum of y, count, first x]
    for x, tied in itertools.groupby(order, key=lambda index: values[index]):
        members = list(tied)
        blocks.append([float(labels[members].sum()), float(len(members)), float(x)])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1], blocks[-1][2]]
    knots = [(x, total / count) for total, count, x in blocks]
    return Calibrator("isotonic", [feature], knots=knots)


def threshold_for_share(confidences: Sequence[float], cloud_share: float) -> float:
    """The threshold that sends ``cloud_share`` of the items (the least confident) to the cloud."""
    if cloud_share <= 0:
        return 0.0
    if cloud_share >= 1:
        return 1.0 + 1e-9
    ordered = sorted(confidences)
    cut = int(round(cloud_share * len(ordered)))
    return ordered[min(cut, len(ordered) - 1)] if cut < len(ordered) else 1.0 + 1e-9


def threshold_for_accuracy(confidences: Sequence[float], correct: Sequence[bool], target: float) -> float:
    """The lowest threshold whose kept-local answers reach ``target`` accuracy (1.0+ if none does)."""
    pairs = sorted(zip(confidences, correct), reverse=True)
    kept_correct, best = 0, 1.0 + 1e-9
    for count, (confidence, is_correct) in enumerate(pairs, start=1):
        kept_correct += bool(is_correct)
        if kept_correct / count >= target:
            best = confidence
    return best


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve (probability a correct item outranks a wrong one; ties count half)."""
    scores_array = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores_array.argsort(kind="mergesort")
    ranks = np.empty(len(scores_array), dtype=np.float64)
    sorted_scores = scores_array[order]
    start = 0
    while start < len(sorted_scores):
        end = start
        while end + 1 < len(sorted_scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class Candidate:
    """One way to calibrate: Platt on ``features`` with L2 strength ``l2``, or isotonic on ``features[0]``."""

    name: str
    kind: str
    features: tuple[str, ...]
    l2: float = 1e-2

    def fit(self, rows: Sequence[dict[str, float]], correct: Sequence[bool]) -> Calibrator:
        if self.kind == "isotonic":
            return fit_isotonic(feature_matrix(rows, self.features[:1])[:, 0], correct, self.features[0])
        return fit_platt(rows, correct, self.features, l2=self.l2)


def constant_calibrator(correct: Sequence[bool]) -> Calibrator:
    """No signal to rank by (all items right, or all wrong): P(correct) is the smoothed rate, (k + 1) / (n + 2)."""
    rate = (sum(map(bool, correct)) + 1) / (len(correct) + 2)
    return Calibrator("platt", [], bias=math.log(rate / (1 - rate)),
                      extra={"candidate": "constant (one class only)", "cv_auroc": float("nan"), "n": len(correct),
                             "positives": int(sum(map(bool, correct)))})


def fold_indices(labels: Sequence[bool], folds: int, seed: int) -> list[np.ndarray]:
    """Stratified folds: each class shuffled and dealt round-robin, so every fold keeps the class balance."""
    labels = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    dealt = [rng.permutation(np.flatnonzero(labels == value)) for value in (True, False)]
    order = np.concatenate(dealt)
    return [np.sort(order[fold::folds]) for fold in range(folds)]


def cross_validated_auroc(candidate: Candidate, rows: Sequence[dict[str, float]], correct: Sequence[bool],
                          folds: int = 5, seed: int = 0) -> float:
    """AUROC of the out-of-fold predictions pooled over ``folds`` folds (nan when a class is missing)."""
    labels = np.asarray(correct, dtype=bool)
    predictions = np.zeros(len(rows))
    for held_out in fold_indices(labels, folds, seed):
        train = np.setdiff1d(np.arange(len(rows)), held_out)
        if labels[train].all() or not labels[train].any():
            return float("nan")
        calibrator = candidate.fit([rows[i] for i in train], labels[train])
        predictions[held_out] = [calibrator.predict(rows[i]) for i in held_out]
    return auroc(predictions, labels)


def select_calibrator(candidates: Sequence[Candidate], rows: Sequence[dict[str, float]],
                      correct: Sequence[bool], folds: int = 5, seed: int = 0) -> Calibrator:
    """The candidate with the best cross-validated AUROC, refitted on all rows; the scores go in ``extra``.

    Ties go to the earlier candidate, so list simple ones first. Never give this the test data."""
    if not candidates:
        raise ConfigError("select_calibrator needs at least one candidate")
    if len(set(map(bool, correct))) < 2:
        return constant_calibrator(correct)
    scores = {c.name: cross_validated_auroc(c, rows, correct, folds, seed) for c in candidates}
    ranked = [c for c in candidates if not math.isnan(scores[c.name])]
    best = max(ranked, key=lambda c: scores[c.name]) if ranked else candidates[0]
    calibrator = best.fit(rows, correct)
    calibrator.extra = {"candidate": best.name, "cv_auroc": scores[best.name], "cv_folds": folds,
                        "cv_scores": scores, "n": len(rows), "positives": int(np.sum(correct))}
    return calibrator
