"""The numbers of an evaluation report: routing quality per task and on average, plus cost per correct answer.

Routing quality comes from ``routing_metrics.routing_report`` on the test items' calibrated confidences,
local correctness and cloud correctness. Cost compares the routed run (local answers are free, escalated ones
pay the cloud's price) with sending every item to the cloud, each divided by its number of correct answers.
``escalation_decision_fraction`` says how early escalations were decided: the median, over escalated items, of
the time from the request's start to the decision, over the median whole local answer time of all the task's
items; ``early_decided_share`` is the share of items the running decision escalated before their end. The
ranking metrics (AUROC, APGR, escalated_for_95) judge each item's whole-answer confidence.
``schema_valid_rate`` (structured tasks): the share of local answers that parse and fit the schema.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edge_runtime.evaluation.routing_metrics import routing_report

TARGETS = {"mean_auroc": 0.85, "mean_oracle_gain_captured": 0.7, "escalated_for_95_over_oracle": 1.5}


@dataclass(frozen=True)
class ItemOutcome:
    """One test item after the routed run, with its reference cloud answer when it stayed local."""

    item_id: str
    task: str
    confidence: float
    local_correct: bool
    cloud_correct: bool
    escalated: bool
    reason: str
    routed_cost_usd: float  # what the routed run paid (0 when served locally)
    cloud_cost_usd: float  # what the cloud charged for this item (routed or reference call)
    decision_s: float = 0.0  # from the request's start to the routing decision
    decision_confidence: float | None = None  # the confidence the decision was taken on, when it was early
    local_latency_s: float = 0.0  # the whole local answer's time
    schema_valid: bool | None = None  # structured items: did the local answer parse and fit the schema

    @property
    def routed_correct(self) -> bool:
        return self.cloud_correct if self.escalated else self.local_correct


def _per_correct(cost: float, correct: int) -> float | None:
    return cost / correct if correct else None


def cost_numbers(outcomes: Sequence[ItemOutcome]) -> dict[str, float | None]:
    routed_cost = sum(o.routed_cost_usd for o in outcomes)
    cloud_cost = sum(o.cloud_cost_usd for o in outcomes)
    routed = _per_correct(routed_cost, sum(o.routed_correct for o in outcomes))
    cloud = _per_correct(cloud_cost, sum(o.cloud_correct for o in outcomes))
    return {"routed_cost_usd": routed_cost, "cloud_only_cost_usd": cloud_cost,
            "cost_per_correct_usd": routed, "cloud_only_cost_per_correct_usd": cloud,
            "cost_per_correct_vs_cloud_only": routed / cloud if routed is not None and cloud else None}


def task_numbers(outcomes: Sequence[ItemOutcome]) -> dict[str, float | None]:
    """Routing quality, the operating point's share and accuracy, and the costs of one task's test items."""
    numbers: dict[str, float | None] = dict(routing_report([o.confidence for o in outcomes],
                                                           [o.local_correct for o in outcomes],
                                                           [o.cloud_correct for o in outcomes]))
    numbers["escalated_share"] = sum(o.escalated for o in outcomes) / len(outcomes)
    numbers["routed_accuracy"] = sum(o.routed_correct for o in outcomes) / len(outcomes)
    numbers["escalation_decision_fraction"] = decision_fraction(outcomes)
    numbers["early_decided_share"] = sum(o.escalated and o.reason == "early_low_confidence"
                                         for o in outcomes) / len(outcomes)
    valid = [o.schema_valid for o in outcomes if o.schema_valid is not None]
    if valid:
        numbers["schema_valid_rate"] = sum(valid) / len(valid)
    numbers.update(cost_numbers(outcomes))
    return numbers


def decision_fraction(outcomes: Sequence[ItemOutcome]) -> float | None:
    """Median decision time of the escalated items over the median whole local answer time (None when none
    was escalated or the times are missing)."""
    decided = [o.decision_s for o in outcomes if o.escalated]
    full = statistics.median(o.local_latency_s for o in outcomes)
    return statistics.median(decided) / full if decided and full > 0 else None


def mean_numbers(per_task: dict[str, dict]) -> dict[str, float | None]:
    """Unweighted mean over tasks of every numeric key (``n`` is the total); nan/None values are left out."""
    keys = [key for key, value in next(iter(per_task.values())).items() if not isinstance(value, (dict, str))]
    mean: dict[str, float | None] = {}
    for key in keys:
        values = [t[key] for t in per_task.values() if t.get(key) is not None and not _is_nan(t[key])]
        mean[key] = (sum(values) if key == "n" else sum(values) / len(values)) if values else None
    return mean


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def targets(mean: dict, per_task: dict[str, dict]) -> dict[str, dict]:
    """The issue's targets, each with the measured value and whether it is met."""
    ratios = [t["escalated_for_95"] / t["escalated_for_95_oracle"] for t in per_task.values()
              if t["escalated_for_95_oracle"]]
    worst_ratio = max(ratios) if ratios else None
    measured = {"mean_auroc": mean.get("auroc"), "mean_oracle_gain_captured": mean.get("oracle_gain_captured"),
                "escalated_for_95_over_oracle": worst_ratio}
    return {name: {"target": (">= " if name.startswith("mean") else "<= ") + f"{TARGETS[name]:g}",
                   "value": value,
                   "met": value is not None and (value >= TARGETS[name] if name.startswith("mean")
                                                 else value <= TARGETS[name])}
            for name, value in measured.items()}


def json_safe(value):
    """NaN and infinities become None, so report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
