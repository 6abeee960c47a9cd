"""The evaluation's picture: accuracy against the share of items sent to the cloud, one panel per task.

Each panel shows the router (escalating the least confident first), the oracle router, a random router (the
straight line from local-only to cloud-only), and the local-only and cloud-only accuracies as dashed levels;
a last panel shows the mean over tasks on a common share grid. matplotlib is imported here only, with the
non-interactive Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_runtime.evaluation.report import ItemOutcome
from edge_runtime.evaluation.routing_metrics import accuracy_curve, oracle_confidences

GRID = np.linspace(0.0, 1.0, 101)


def task_curves(outcomes: Sequence[ItemOutcome]) -> dict[str, np.ndarray]:
    """Router, oracle and random accuracy on ``GRID`` (curves interpolated between item counts)."""
    local = [o.local_correct for o in outcomes]
    cloud = [o.cloud_correct for o in outcomes]
    router = accuracy_curve([o.confidence for o in outcomes], local, cloud)
    oracle = accuracy_curve(oracle_confidences(local, cloud), local, cloud)
    shares = np.linspace(0.0, 1.0, len(router))
    return {"router": np.interp(GRID, shares, router), "oracle": np.interp(GRID, shares, oracle),
            "random": router[0] + (router[-1] - router[0]) * GRID}


def _panel(axis, title: str, curves: dict[str, np.ndarray], operating_share: float | None) -> None:
    axis.plot(GRID, curves["oracle"], color="tab:green", label="oracle router")
    axis.plot(GRID, curves["router"], color="tab:blue", label="calibrated router")
    axis.plot(GRID, curves["random"], color="tab:gray", linestyle=":", label="random router")
    axis.axhline(curves["router"][0], color="tab:orange", linestyle="--", linewidth=1, label="local only")
    axis.axhline(curves["router"][-1], color="tab:red", linestyle="--", linewidth=1, label="cloud only")
    if operating_share is not None:
        axis.plot([operating_share], [np.interp(operating_share, GRID, curves["router"])], "o", color="black",
                  label="operating point")
    axis.set_title(title)
    axis.set_xlim(0, 1)
    axis.set_xlabel("share sent to the cloud")
    axis.set_ylabel("accuracy")
    axis.grid(alpha=0.3)


def plot_routing(per_task: dict[str, Sequence[ItemOutcome]], operating: dict[str, float], path: Path) -> Path:
    """Writes the PNG; ``operating`` maps task to the routed run's escalated share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {task: task_curves(outcomes) for task, outcomes in per_task.items()}
    panels = len(curves) + 1
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False)
    for axis, (task, task_curve) in zip(axes.flat, curves.items()):
        _panel(axis, f"{task} (n={len(per_task[task])})", task_curve, operating.get(task))
    mean = {name: np.mean([c[name] for c in curves.values()], axis=0) for name in ("router", "oracle", "random")}
    _panel(axes.flat[len(curves)], "mean over tasks", mean, None)
    for axis in list(axes.flat)[panels:]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
