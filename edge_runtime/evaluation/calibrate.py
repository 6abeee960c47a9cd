"""``edge-runtime calibrate``: the calibration file the server (``serve --calibration``) and the API load.

The evaluation fits one calibrator per task on its calibration items (``harness.task_calibrator``: the per-task
feature choice, the hidden-state probes where they help, the threshold, the running decision's checkpoints
with the prompt-only one); this command does the same on every item of the given files, which must be of one
task (the server serves one), and writes that one file. Local answers are cached next to it, so a second run
with another threshold target costs no model time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from fallback.errors import ConfigError

MIN_ITEMS = 10  # five cross-validation folds of two


@dataclass
class CalibrateOptions:
    paths: list[Path]
    out: Path
    task: str | None = None
    model: str | None = None
    threads: int | None = 1
    cache_path: Path | None = None
    target_accuracy: float | None = None
    target_cloud_share: float | None = None
    seed: int = 0


def task_items(paths: list[Path], task: str | None):
    """The items of ``task`` in ``paths`` (of their only task when None); ConfigError when that is ambiguous."""
    from fallback.tasks import load_items

    items = [item for path in paths for item in load_items(path)]
    tasks = sorted({item.task for item in items})
    if task is None and len(tasks) != 1:
        raise ConfigError(f"the files hold {len(tasks)} tasks ({', '.join(tasks)}); name one with --task")
    chosen = [item for item in items if item.task == (task or tasks[0])]
    if len(chosen) < MIN_ITEMS:
        raise ConfigError(f"task {task or tasks[0]!r} has {len(chosen)} items; calibrating needs at least {MIN_ITEMS}")
    return chosen


def run_calibrate(options: CalibrateOptions):
    """Answers the items locally (cached), fits the task's calibrator and writes it to ``options.out``."""
    from edge_runtime.evaluation.harness import EvalOptions, local_answers, task_calibrator

    items = task_items(options.paths, options.task)
    settings = EvalOptions(test_paths=[], out_dir=options.out.parent, model=options.model, threads=options.threads,
                           cache_path=options.cache_path or options.out.with_suffix(".answers.jsonl"),
                           target_accuracy=options.target_accuracy, target_cloud_share=options.target_cloud_share,
                           seed=options.seed)
    answers, model = local_answers(items, settings)
    calibrator = task_calibrator(items[0].task, items, answers, model, settings)
    calibrator.save(options.out)
    print(f"wrote {options.out}: task {calibrator.task}, {calibrator.extra.get('candidate')} "
          f"(cv AUROC {calibrator.extra.get('cv_auroc', float('nan')):.3f}), threshold {calibrator.threshold:.3f}, "
          f"{len(calibrator.extra.get('probes', []))} probe(s), {len(calibrator.extra.get('class_probes', []))} "
          f"class probe(s)", file=sys.stderr)
    return calibrator
