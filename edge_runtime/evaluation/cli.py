"""``edge-runtime eval`` (the cascade evaluation, ``harness.run_eval``, and its table) and ``edge-runtime calibrate``
(the calibration file the server loads, ``calibrate.run_calibrate``).

``edge_runtime.cli`` finds ``add_parsers`` by name; the handler imports the harness only when it runs, so
``edge-runtime --help`` stays instant. A ``FallbackError`` (bad option, bad data file) becomes one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fallback.cli import guarded


def add_parsers(subparsers) -> None:
    _add_eval(subparsers)
    _add_calibrate(subparsers)


def _add_calibrate(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="write the calibration file `serve --calibration` loads, from labelled JSONL items",
        description="Answers every item of one task on the local model (hidden states recorded), fits the task's "
                    "calibrator as `eval` does (per-task feature choice, hidden-state probes kept where they help "
                    "on cross-validation, threshold, running decision with a prompt-only checkpoint) on all of "
                    "them, and writes it as one JSON file.")
    parser.add_argument("data", nargs="+", type=Path, help="JSONL task files (items of one task, or name --task)")
    parser.add_argument("--out", type=Path, required=True, help="calibration file to write")
    parser.add_argument("--task", default=None, help="the task to calibrate when the files hold several")
    parser.add_argument("--model", default=None, help="local GGUF model (default: bundled)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the local model (default 1)")
    parser.add_argument("--cache", type=Path, default=None, help="local-answer cache (default OUT.answers.jsonl)")
    _add_threshold_target(parser, "the items")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    parser.set_defaults(handler=guarded(calibrate_command))


def _add_threshold_target(parser: argparse.ArgumentParser, items: str) -> None:
    """How the calibrated threshold is chosen: a kept-local accuracy, or a share of ``items`` escalated."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-accuracy", type=float, default=None,
                        help="threshold: lowest whose kept-local answers reach this accuracy (default 0.9)")
    target.add_argument("--target-cloud-share", type=float, default=None,
                        help=f"threshold: escalate this share of {items}")


def calibrate_command(args: argparse.Namespace) -> int:
    from edge_runtime.evaluation.calibrate import CalibrateOptions, run_calibrate

    _check_eval_args(args)
    run_calibrate(CalibrateOptions(args.data, args.out, args.task, args.model, args.threads, args.cache,
                                   args.target_accuracy, args.target_cloud_share, args.seed))
    return 0


def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate local answering + calibrated escalation to an oracle cloud on JSONL task files",
        description="Answers every item on the local model, calibrates confidence per task, routes with the "
                    "policy, sends escalated items to an oracle cloud on loopback, and writes report.json and "
                    "routing.png. Structured items (with a JSON 'schema') are decoded under the schema's grammar "
                    "and parsed; generated answers are also judged every few tokens (the running decision). "
                    "EDGE_CONFIDENCE_THRESHOLD (0..1) overrides the calibrated thresholds and turns the running "
                    "decision off.")
    parser.add_argument("test", nargs="+", type=Path, help="JSONL task files to report on")
    parser.add_argument("--calibrate", nargs="+", type=Path, default=[], metavar="CAL",
                        help="JSONL files to calibrate on, matched by task (default: split each test task 50/50)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--limit", type=int, default=None, help="use the first N items of each file")
    parser.add_argument("--model", default=None, help="local GGUF model (default: bundled)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for the local model (default 1: fastest on a busy machine)")
    parser.add_argument("--cache", type=Path, default=None, help="local-answer cache (default OUT/local_answers.jsonl)")
    parser.add_argument("--cloud-price-in", type=float, default=2.5, help="USD per 1M input tokens (default 2.5)")
    parser.add_argument("--cloud-price-out", type=float, default=10.0, help="USD per 1M output tokens (default 10)")
    parser.add_argument("--cloud-latency", type=float, default=0.3, help="cloud seconds per request (default 0.3)")
    parser.add_argument("--concurrency", type=int, default=16, help="cloud requests in flight (default 16)")
    _add_threshold_target(parser, "the calibration items")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 50/50 split and the CV folds")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="prefill every prompt from scratch (default: each task's few-shot block is kept)")
    parser.set_defaults(handler=guarded(eval_command))


def _check_eval_args(args: argparse.Namespace) -> None:
    from fallback.errors import ConfigError

    for name in ("target_accuracy", "target_cloud_share"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1]; got {value:g}")
    for name in ("limit", "threads", "concurrency"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be at least 1; got {value}")
    for name in ("cloud_price_in", "cloud_price_out", "cloud_latency"):
        if getattr(args, name, 0) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")


def eval_command(args: argparse.Namespace) -> int:
    from edge_runtime.evaluation.harness import EvalOptions, run_eval, threshold_from_env

    _check_eval_args(args)
    options = EvalOptions(
        test_paths=args.test, out_dir=args.out, calibrate_paths=args.calibrate, limit=args.limit,
        model=args.model, threads=args.threads, cache_path=args.cache, price_in=args.cloud_price_in,
        price_out=args.cloud_price_out, latency_s=args.cloud_latency, concurrency=args.concurrency,
        target_accuracy=args.target_accuracy, target_cloud_share=args.target_cloud_share,
        threshold_override=threshold_from_env(), seed=args.seed, prefix_cache=not args.no_prefix_cache)
    report = run_eval(options)
    print(format_table(report))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'routing.png'}", file=sys.stderr)
    return 0


COLUMNS = (("n", "n", "{:.0f}"), ("local_accuracy", "local acc", "{:.3f}"), ("auroc", "AUROC", "{:.3f}"),
           ("apgr", "APGR", "{:.3f}"), ("apgr_oracle", "oracle", "{:.3f}"),
           ("oracle_gain_captured", "captured", "{:.2f}"), ("escalated_for_95", "esc@95", "{:.2f}"),
           ("escalated_for_95_oracle", "oracle@95", "{:.2f}"), ("escalated_share", "escalated", "{:.2f}"),
           ("routed_accuracy", "routed acc", "{:.3f}"), ("cost_per_correct_vs_cloud_only", "cost/corr", "{:.2f}"),
           ("escalation_decision_fraction", "decided at", "{:.2f}"), ("schema_valid_rate", "valid", "{:.3f}"))


def format_table(report: dict) -> str:
    """The per-task numbers (and the mean) as a plain-text table."""
    rows = [("task", *(title for _, title, _ in COLUMNS))]
    for name, numbers in [*report["tasks"].items(), ("mean", report["mean"])]:
        rows.append((name, *(_cell(numbers.get(key), spec) for key, _, spec in COLUMNS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def _cell(value, spec: str) -> str:
    return "n/a" if value is None or value != value else spec.format(value)
