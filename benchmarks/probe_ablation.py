"""Ablation of the escalation signals per task: token probabilities only, the hidden-state probe only, both.

Reads the local answers ``edge-runtime eval`` cached (with their hidden states) for the items of the given
JSONL files and, per task, runs an outer stratified cross-validation: on each training part the calibration
does what ``edge-runtime eval --calibrate`` does (out-of-fold probe scores, per-task feature choice by inner
cross-validation, probes fitted on the whole part), restricted to one signal family; the held-out part is
scored. The pooled held-out scores give AUROC, the share of the oracle router's gain, and the share escalated
to reach 95 % of cloud accuracy against the oracle's. With ``both``, the running decision (prompt-only
checkpoint 0, then every few tokens) and the final threshold (kept-local accuracy 0.9 on the training part)
route the held-out items too, which gives ``escalation_decision_fraction`` as the report defines it. The cloud
is the oracle (always right), as in the evaluation.

    python -m benchmarks.probe_ablation ../shared/data/atis_dev.jsonl ../shared/data/languages_dev.jsonl \\
        --cache OUT/local_answers.jsonl [--json ablation.json] [--without-middle]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

MODES = {"probabilities": ("probs",), "probe": ("probe",), "both": ("probs", "probe")}


def cached_answers(paths: list[Path], caches: list[Path], middle: bool = True):
    """The items of ``paths`` (by task) that have a cached local answer, with it (without its middle-layer
    states unless ``middle``: the same answers as an engine without the tap would give)."""
    from edge_runtime.evaluation.answerer import ANSWERER_VERSION
    from edge_runtime.evaluation.local_cache import item_key
    from fallback.tasks import LocalAnswer, load_items

    answers = {}
    for cache in caches:
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if f"answerer-v{ANSWERER_VERSION}" in record.get("model", ""):
                fields = record["answer"] | ({} if middle else {"hidden_middle": [], "hidden_answer_middle": ""})
                answers[record["item"]] = LocalAnswer(**fields)
    by_task: dict[str, list] = {}
    for path in paths:
        for item in load_items(path):
            if item_key(item) in answers:
                by_task.setdefault(item.task, []).append((item, answers[item_key(item)]))
    return by_task


def held_out_scores(pairs, correct: np.ndarray, use, folds: int, seed: int) -> tuple[np.ndarray, list[float]]:
    """Held-out confidences (outer CV) and, for ``use`` with both families, each item's decision time."""
    from edge_runtime.evaluation.routing import effective_threshold, route_item
    from edge_runtime.evaluation.task_calibration import calibrate_running, calibrator_signals, fit_calibrator
    from fallback.calibration import fold_indices, threshold_for_accuracy
    from fallback.policy import PolicyConfig

    scores, decided = np.zeros(len(pairs)), [float("nan")] * len(pairs)
    escalated, both = [False] * len(pairs), len(use) == 2
    for held_out in fold_indices(correct, folds, seed + 7):
        train = np.setdiff1d(np.arange(len(pairs)), held_out)
        items, answers = [pairs[i][0] for i in train], [pairs[i][1] for i in train]
        labels = correct[train].tolist()
        calibrator, rows = fit_calibrator(items[0].task, items, answers, labels, "", use=use, seed=seed)
        calibrator.threshold = threshold_for_accuracy([calibrator.predict(r) for r in rows], labels, 0.9)
        running = calibrate_running(items[0].task, items, answers, labels, calibrator, rows, seed=seed) if both \
            else None
        config = PolicyConfig(threshold=effective_threshold(calibrator.threshold))
        for i in held_out:
            item, answer = pairs[i]
            scores[i] = 0.0 if answer.invalid else calibrator.predict(calibrator_signals(item, answer, calibrator))
            if both:
                routed = route_item(item, answer, calibrator, running, config)
                decided[i], escalated[i] = routed.decision_s, routed.escalated
    times = [d if e else float("nan") for d, e in zip(decided, escalated)]
    return scores, times


def task_row(pairs, use, folds: int, seed: int) -> dict:
    from edge_runtime.evaluation.routing_metrics import routing_report
    from fallback.tasks import is_correct

    correct = np.array([is_correct(item, answer.answer) for item, answer in pairs])
    scores, times = held_out_scores(pairs, correct, use, folds, seed)
    report = routing_report(scores.tolist(), correct.tolist(), [True] * len(pairs))
    row = {key: report[key] for key in ("n", "local_accuracy", "auroc", "oracle_gain_captured", "escalated_for_95",
                                        "escalated_for_95_oracle")}
    row["esc95_vs_oracle"] = row["escalated_for_95"] / max(row["escalated_for_95_oracle"], 1e-9)
    decided = [t for t in times if t == t]
    if decided:
        full = statistics.median(answer.latency_s for _, answer in pairs)
        row["escalation_decision_fraction"] = statistics.median(decided) / full
        row["escalated_share"] = len(decided) / len(pairs)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", type=Path, help="JSONL task files")
    parser.add_argument("--cache", nargs="+", type=Path, required=True, help="local_answers.jsonl of eval runs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--without-middle", action="store_true",
                        help="drop the middle layer's states (the probes on the final states only)")
    args = parser.parse_args(argv)
    table = {}
    for task, pairs in cached_answers(args.data, args.cache, middle=not args.without_middle).items():
        table[task] = {}
        for mode, use in MODES.items():
            row = table[task][mode] = task_row(pairs, use, args.folds, args.seed)
            print(f"{task:10s} {mode:13s} " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
