"""How good is a router? Accuracy as a function of the share sent to the cloud, and the numbers built on it.

A router ranks items by confidence and escalates the least confident first. Sweeping the share escalated from
0 to 1 gives an accuracy curve between local-only (share 0) and cloud-only (share 1). From it:

- APGR (RouteLLM): the mean over shares of the performance-gap recovered,
  (accuracy - local) / (cloud - local); 0.5 for a random router, (1 + local accuracy) / 2 for the oracle router
  with a perfect cloud.
- the oracle router escalates exactly the items the local model got wrong (and the cloud got right) first;
  ``oracle_gain_captured`` = (APGR - 0.5) / (APGR_oracle - 0.5) says how much of its advantage over random the
  router keeps.
- ``escalated_for_95``: the smallest share escalated whose accuracy reaches 95% of cloud-only accuracy.
Pure functions over lists; no model, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy_curve(confidences: Sequence[float], local_correct: Sequence[bool],
                   cloud_correct: Sequence[bool]) -> np.ndarray:
    """Accuracy after escalating the k least confident items, for k = 0..n (length n + 1)."""
    order = np.argsort(np.asarray(confidences, dtype=np.float64), kind="mergesort")
    local = np.asarray(local_correct, dtype=np.float64)[order]
    cloud = np.asarray(cloud_correct, dtype=np.float64)[order]
    gain = np.concatenate([[0.0], np.cumsum(cloud - local)])
    return (local.sum() + gain) / len(local)


def oracle_confidences(local_correct: Sequence[bool], cloud_correct: Sequence[bool]) -> list[float]:
    """Scores that make the curve the oracle's: items the cloud fixes first, items both get wrong next."""
    return [2.0 if local else (1.0 if not cloud else 0.0) for local, cloud in zip(local_correct, cloud_correct)]


def apgr(curve: np.ndarray) -> float:
    """Mean performance-gap recovered over the shares 0..1 (trapezoid rule over the n + 1 points)."""
    local, cloud = curve[0], curve[-1]
    if cloud <= local:
        return float("nan")
    recovered = (curve - local) / (cloud - local)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    return float(trapezoid(recovered, dx=1.0 / (len(curve) - 1)))


def share_for_accuracy(curve: np.ndarray, target: float) -> float:
    """The smallest share escalated whose accuracy reaches ``target`` (1.0 if only cloud-only does)."""
    reached = np.nonzero(curve >= target - 1e-12)[0]
    return float(reached[0] / (len(curve) - 1)) if len(reached) else 1.0


def random_curve(local_correct: Sequence[bool], cloud_correct: Sequence[bool], points: int = 101) -> np.ndarray:
    """The expected accuracy of a router that escalates a random share (a straight line)."""
    local = float(np.mean(local_correct))
    cloud = float(np.mean(cloud_correct))
    return local + (cloud - local) * np.linspace(0.0, 1.0, points)


def routing_report(confidences: Sequence[float], local_correct: Sequence[bool],
                   cloud_correct: Sequence[bool]) -> dict[str, float]:
    """The per-task numbers of the evaluation report."""
    from fallback.calibration import auroc

    curve = accuracy_curve(confidences, local_correct, cloud_correct)
    oracle = accuracy_curve(oracle_confidences(local_correct, cloud_correct), local_correct, cloud_correct)
    router_apgr, oracle_apgr = apgr(curve), apgr(oracle)
    target = 0.95 * curve[-1]
    return {"n": len(curve) - 1, "local_accuracy": float(curve[0]), "cloud_accuracy": float(curve[-1]),
            "auroc": auroc(confidences, local_correct), "apgr": router_apgr, "apgr_oracle": oracle_apgr,
            "oracle_gain_captured": (router_apgr - 0.5) / (oracle_apgr - 0.5) if oracle_apgr > 0.5 else float("nan"),
            "escalated_for_95": share_for_accuracy(curve, target),
            "escalated_for_95_oracle": share_for_accuracy(oracle, target)}
