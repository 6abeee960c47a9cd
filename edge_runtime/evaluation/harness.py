"""The cascade evaluation end to end: local answers, calibrated confidence, policy routing, an oracle cloud.

``run_eval(options)``:

1. loads the test and calibration items (``sets``), answers all of them on the local model, reusing
   answers cached on disk (``local_cache``);
2. fits one calibrator per task on the calibration items only, choosing its features by cross-validated
   AUROC (``task_calibration``), and picks the task's threshold on the same items (target kept-local accuracy
   or target cloud share), unless ``EDGE_CONFIDENCE_THRESHOLD`` overrides it; for generation tasks also the
   running decision's checkpoint calibrators (``fallback.early``), saved in the same file;
3. routes every test item with ``fallback.policy.decide``, as early as the running decision allows (the
   decision's time is reported as ``escalation_decision_fraction``); escalated items cross HTTP to the loopback oracle
   cloud through ``CloudGateway``; every other test item is sent once too, marked ``reference``, so cloud
   correctness and cloud-only cost are measured for every item; each routed request goes into the ledger;
4. writes ``report.json`` (``report``), ``routing.png`` (``plot``), ``items.jsonl``,
   ``cloud_requests.jsonl`` (what the server received), ``ledger.sqlite3`` and ``calibration/<task>.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.evaluation.answerer import ANSWERER_VERSION
from edge_runtime.evaluation.local_cache import LocalAnswerCache, answer_all, model_key
from edge_runtime.evaluation.report import json_safe, mean_numbers, targets, task_numbers
from edge_runtime.evaluation.routing import item_records, outcomes_of, record_ledger, route, run_cloud
from edge_runtime.evaluation.sets import EvalSets, build_sets, check_sizes
from fallback.calibration import Calibrator, select_calibrator, threshold_for_accuracy, threshold_for_share
from fallback.errors import ConfigError
from fallback.tasks import LocalAnswer, TaskItem, is_correct, write_jsonl

REPORT_SCHEMA = 1

THRESHOLD_ENV = "EDGE_CONFIDENCE_THRESHOLD"
DEFAULT_TARGET_ACCURACY = 0.9
MIN_SHARED_PREFIX_CHARS = 100


@dataclass
class EvalOptions:
    test_paths: list[Path]
    out_dir: Path
    calibrate_paths: list[Path] = field(default_factory=list)
    limit: int | None = None
    model: str | None = None
    threads: int | None = 1
    cache_path: Path | None = None
    price_in: float = 2.5
    price_out: float = 10.0
    latency_s: float = 0.3
    concurrency: int = 16
    target_accuracy: float | None = None
    target_cloud_share: float | None = None
    threshold_override: float | None = None
    seed: int = 0
    prefix_cache: bool = True

    def operating_rule(self) -> str:
        if self.threshold_override is not None:
            return f"{THRESHOLD_ENV}={self.threshold_override:g} (every task)"
        if self.target_cloud_share is not None:
            return f"target cloud share {self.target_cloud_share:g} on the calibration items"
        return f"target kept-local accuracy {self.accuracy_target():g} on the calibration items"

    def accuracy_target(self) -> float:
        return self.target_accuracy if self.target_accuracy is not None else DEFAULT_TARGET_ACCURACY


def threshold_from_env(environ=os.environ) -> float | None:
    """``EDGE_CONFIDENCE_THRESHOLD`` as a number in [0, 1], or None when unset; ConfigError otherwise."""
    raw = environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{THRESHOLD_ENV} must be a number in [0, 1]; got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{THRESHOLD_ENV} must be in [0, 1]; got {value:g}")
    return value


def _progress(label: str):
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"{label}: {done}/{total} items ({rate:.1f}/s)", file=sys.stderr, flush=True)

    return report


def shared_prefixes(items) -> list[str]:
    """Per task and first line, the text every such prompt starts with (cut after its last line break), when
    it is long enough to be worth keeping: the few-shot block (a task with several templates, such as one per
    relation, has one block per template, told apart by their first example)."""
    prompts: dict[tuple[str, str], list[str]] = {}
    for item in items:
        prompts.setdefault((item.task, item.prompt.partition("\n")[0]), []).append(item.prompt)
    shared = [os.path.commonprefix(texts) for texts in prompts.values() if len(texts) > 1]
    cut = [text[:text.rfind("\n") + 1] for text in shared]
    return [text for text in cut if len(text) >= MIN_SHARED_PREFIX_CHARS]


def local_answers(items: list[TaskItem], options: EvalOptions) -> tuple[dict[str, LocalAnswer], str]:
    """Every item's local answer by id (cached ones reused; the model loads only if one is missing)."""
    from edge_runtime.models import resolve_model

    key = model_key(resolve_model(options.model).path)
    cache = LocalAnswerCache(options.cache_path or options.out_dir / "local_answers.jsonl",
                             f"{key}|answerer-v{ANSWERER_VERSION}")
    if all(cache.get(item) is not None for item in items):
        return answer_all(items, cache.get, cache), key
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime
    from edge_runtime.evaluation.answerer import LocalAnswerer

    # the middle layer tapped: a "middle" probe is fitted beside the final-state ones, kept where it helps
    settings = LoadSettings(n_threads=options.threads, prefix_cache=options.prefix_cache, middle_layer=True)
    with Runtime.load(options.model, settings=settings) as runtime:
        missing = [item for item in items if cache.get(item) is None]
        # every task's few-shot block, so its items reuse it in any order
        kept = [runtime.cache_prefix(prefix) for prefix in (shared_prefixes(missing) if options.prefix_cache else [])]
        answerer = LocalAnswerer(runtime)
        answers = answer_all(items, answerer.answer, cache, _progress("local model"))
        _report_prefix_use(runtime, kept)
        return answers, key


def _report_prefix_use(runtime, kept: list[int]) -> None:
    stats = runtime.backend.stats().prefix_cache
    if stats is not None:
        print(f"local model: prefix cache kept {sum(1 for count in kept if count)} task prefixes "
              f"({sum(kept):,} tokens); {stats.hit_ratio:.0%} of prompt tokens reused", file=sys.stderr)


def fit_calibrators(sets: EvalSets, answers: dict[str, LocalAnswer], model: str,
                    options: EvalOptions) -> dict[str, Calibrator]:
    """One calibrator per task, fitted and thresholded on that task's calibration items only."""
    calibrators = {}
    for task, items in sets.calibration.items():
        calibrators[task] = task_calibrator(task, items, answers, model, options)
        calibrators[task].save(options.out_dir / "calibration" / f"{task}.json")
    return calibrators


def task_calibrator(task: str, items: list[TaskItem], answers: dict[str, LocalAnswer], model: str,
                    options: EvalOptions) -> Calibrator:
    """One task's calibrator (probes and running decision included), thresholded on its own items."""
    from edge_runtime.evaluation.task_calibration import calibrate_running, calibrate_task

    local = [answers[item.id] for item in items]
    correct = [is_correct(item, answer.answer) for item, answer in zip(items, local)]
    calibrator, rows = calibrate_task(task, items, local, correct, model, seed=options.seed)
    calibrator.threshold = _threshold(calibrator, rows, correct, options)
    running = calibrate_running(task, items, local, correct, calibrator, rows, seed=options.seed)
    if running is not None:
        calibrator.extra["running"] = running.to_dict()
    if (calibrator.extra.get("probes") or calibrator.extra.get("class_probes")
            or any(f.startswith("qword_") for f in calibrator.features)):
        calibrator.extra["fallback"] = probabilities_only(task, local, correct, model, options).to_dict()
    return calibrator


def probabilities_only(task: str, local: list[LocalAnswer], correct: list[bool], model: str,
                       options: EvalOptions) -> Calibrator:
    """The task's calibrator on the answer's token signals alone (what a server without hidden states or the
    task's question words has), thresholded the same way: the calibration file's ``extra["fallback"]``."""
    from edge_runtime.evaluation.task_calibration import candidates_for

    rows = [answer.signals_after() for answer in local]
    candidates = [c for c in candidates_for(rows[0], ("probs",))
                  if all(name in rows[0] for feature in c.features for name in feature.split("*"))]
    calibrator = select_calibrator(candidates, rows, correct, seed=options.seed)
    calibrator.task, calibrator.model = task, model
    calibrator.threshold = _threshold(calibrator, rows, correct, options)
    return calibrator


def _threshold(calibrator: Calibrator, rows: list[dict], correct: list[bool], options: EvalOptions) -> float:
    confidences = [calibrator.predict(row) for row in rows]
    if options.target_cloud_share is not None:
        return threshold_for_share(confidences, options.target_cloud_share)
    return threshold_for_accuracy(confidences, correct, options.accuracy_target())




def run_eval(options: EvalOptions) -> dict:
    """Runs the whole evaluation and writes its files into ``options.out_dir``; returns the report."""
    started = time.perf_counter()
    options.out_dir.mkdir(parents=True, exist_ok=True)
    sets = build_sets(options.test_paths, options.calibrate_paths, options.limit, options.seed)
    check_sizes(sets)
    answers, model = local_answers(sets.all_items(), options)
    calibrators = fit_calibrators(sets, answers, model, options)
    routed = route(sets.test, answers, calibrators, options.threshold_override)
    calls, received, cloud_wall_s = run_cloud(routed, options.price_in, options.price_out, options.latency_s,
                                              options.concurrency)
    ledger = record_ledger(options.out_dir / "ledger.sqlite3", routed, calls, (options.price_in, options.price_out))
    write_jsonl(options.out_dir / "items.jsonl", item_records(routed, calls))
    write_jsonl(options.out_dir / "cloud_requests.jsonl", received)
    outcomes = outcomes_of(routed, calls)
    per_task = {task: [o for o in outcomes if o.task == task] for task in sets.test}
    report = build_report(options, sets, model, calibrators, per_task, ledger, received, cloud_wall_s)
    _write_plot(per_task, report, options.out_dir / "routing.png")
    report["wall_s"] = time.perf_counter() - started
    (options.out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    return report


def _calibration_summary(calibrator: Calibrator) -> dict:
    from fallback.early import RunningCalibration

    extra = calibrator.extra
    summary = {"candidate": extra.get("candidate"), "cv_auroc": extra.get("cv_auroc"), "n": extra.get("n"),
               "features": calibrator.features, "threshold": calibrator.threshold}
    running = RunningCalibration.of(calibrator)
    if running is not None:
        summary["running"] = {str(tokens): {"candidate": c.extra.get("candidate"), "cv_auroc": c.extra.get("cv_auroc"),
                                            "n": c.extra.get("n"), "threshold": c.threshold}
                              for tokens, c in running.by_tokens.items()}
    return summary


def build_report(options: EvalOptions, sets: EvalSets, model: str, calibrators: dict[str, Calibrator],
                 per_task: dict, ledger: dict, received: list[dict], cloud_wall_s: float) -> dict:
    tasks = {}
    for task, outcomes in per_task.items():
        tasks[task] = task_numbers(outcomes)
        tasks[task]["calibration"] = _calibration_summary(calibrators[task])
    mean = mean_numbers(tasks)
    purposes = [record["purpose"] for record in received]
    return {
        "schema_version": REPORT_SCHEMA, "model": model,
        "test_files": [str(path) for path in options.test_paths],
        "calibrate_files": [str(path) for path in options.calibrate_paths], "limit_per_file": options.limit,
        "calibration": {"note": sets.note, "items": {t: len(items) for t, items in sets.calibration.items()},
                        "method": "per task, the candidate feature set with the best 5-fold cross-validated "
                                  "AUROC on the calibration items; Platt or isotonic"},
        "operating_point": options.operating_rule(),
        "cloud": {"kind": "oracle (answers every item with its gold answer) on loopback, via CloudGateway",
                  "price_input_per_mtok": options.price_in, "price_output_per_mtok": options.price_out,
                  "latency_s": options.latency_s, "concurrency": options.concurrency, "wall_s": cloud_wall_s,
                  "routed_requests": purposes.count("routed"), "reference_requests": purposes.count("reference"),
                  "cloud_correct_from": "every test item is sent to the cloud once: escalated items in the routed "
                                        "run, the others as reference calls outside the ledger; tokens are the "
                                        "loopback server's word counts"},
        "tasks": tasks, "mean": mean, "targets": targets(mean, tasks), "ledger": ledger,
        "files": {"items": "items.jsonl", "cloud_requests": "cloud_requests.jsonl", "ledger": "ledger.sqlite3",
                  "plot": "routing.png", "calibration": [f"calibration/{task}.json" for task in tasks]},
    }


def _write_plot(per_task: dict, report: dict, path: Path) -> None:
    from edge_runtime.evaluation.plot import plot_routing

    operating = {task: numbers["escalated_share"] for task, numbers in report["tasks"].items()}
    plot_routing(per_task, operating, path)
