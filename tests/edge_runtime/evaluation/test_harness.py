"""``edge-runtime eval`` end to end on the bundled model: 32 items of two tasks, the real CLI in a subprocess.

The first run answers the items on the local model and caches them; later runs reuse that cache, so the
threshold and calibration-file variants cost only the routing and the loopback cloud.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

TINY = Path(__file__).parents[2] / "data" / "tiny_tasks.jsonl"
PER_TASK_KEYS = {"n", "local_accuracy", "auroc", "apgr", "apgr_oracle", "oracle_gain_captured",
                 "escalated_for_95", "escalated_for_95_oracle"}


def run_eval(out: Path, *args: str, cache: Path, threshold: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "EDGE_CONFIDENCE_THRESHOLD"}
    if threshold is not None:
        env["EDGE_CONFIDENCE_THRESHOLD"] = threshold
    command = [sys.executable, "-m", "edge_runtime.cli", "eval", *args, "--out", str(out), "--cache", str(cache),
               "--cloud-latency", "0.05", "--threads", "1"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "local_answers.jsonl"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("eval")
    result = run_eval(out, str(TINY), cache=cache)
    assert result.returncode == 0, result.stderr
    (out / "stderr.log").write_text(result.stderr)
    return out


def test_the_local_pass_keeps_each_tasks_few_shot_block_and_reuses_it(default_run):
    line = next(line for line in (default_run / "stderr.log").read_text().splitlines()
                if line.startswith("local model: prefix cache"))
    kept = int(line.split("kept ")[1].split()[0])
    reused = int(line.split("; ")[1].split("%")[0])
    assert kept == 2, line  # two tasks in the tiny file, each with a shared few-shot block
    assert reused >= 50, line


def test_report_has_the_keys_outside_checks_read(default_run):
    report = json.loads((default_run / "report.json").read_text())
    assert set(report["tasks"]) == {"sst2", "capitals"}
    for numbers in [*report["tasks"].values(), report["mean"]]:
        assert PER_TASK_KEYS <= set(numbers)
    assert report["tasks"]["sst2"]["n"] == 8 and report["mean"]["n"] == 16  # half of each task is calibration
    assert "split 50/50" in report["calibration"]["note"]
    assert (default_run / "routing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (default_run / "calibration").iterdir()} == {"sst2.json", "capitals.json"}


def test_the_cloud_received_exactly_the_escalated_items_and_the_ledger_has_every_routed_item(default_run):
    items = read_jsonl(default_run / "items.jsonl")
    received = read_jsonl(default_run / "cloud_requests.jsonl")
    escalated = sorted(item["id"] for item in items if item["escalated"])
    assert sorted(r["item_id"] for r in received if r["purpose"] == "routed") == escalated
    assert sorted(r["item_id"] for r in received if r["purpose"] == "reference") == sorted(
        item["id"] for item in items if not item["escalated"])
    with sqlite3.connect(default_run / "ledger.sqlite3") as db:
        routes = dict(db.execute("SELECT route, COUNT(*) FROM requests GROUP BY route").fetchall())
    assert sum(routes.values()) == len(items) == 16
    assert routes.get("cloud", 0) == len(escalated)
    assert all(item["cloud_correct"] for item in items)  # the oracle cloud is always right


def test_a_rerun_reuses_the_cached_local_answers(tmp_path, default_run, cache):
    lines = len(cache.read_text().splitlines())
    result = run_eval(tmp_path, str(TINY), cache=cache)
    assert result.returncode == 0, result.stderr
    assert "local model:" not in result.stderr  # no progress lines: nothing was answered afresh
    assert len(cache.read_text().splitlines()) == lines


@pytest.mark.parametrize(("threshold", "escalated"), [("1", 16), ("0", 0)])
def test_the_threshold_override_escalates_everything_or_nothing(tmp_path, default_run, cache, threshold, escalated):
    result = run_eval(tmp_path, str(TINY), cache=cache, threshold=threshold)
    assert result.returncode == 0, result.stderr
    received = read_jsonl(tmp_path / "cloud_requests.jsonl")
    assert sum(r["purpose"] == "routed" for r in received) == escalated
    report = json.loads((tmp_path / "report.json").read_text())
    assert "EDGE_CONFIDENCE_THRESHOLD" in report["operating_point"]
    assert report["mean"]["escalated_share"] == escalated / 16


def test_calibration_files_are_matched_by_task(tmp_path, default_run, cache):
    lines = TINY.read_text().splitlines()
    (tmp_path / "cal.jsonl").write_text("\n".join(lines[0::2]) + "\n")
    (tmp_path / "test.jsonl").write_text("\n".join(lines[1::2]) + "\n")
    out = tmp_path / "out"
    result = run_eval(out, str(tmp_path / "test.jsonl"), "--calibrate", str(tmp_path / "cal.jsonl"), cache=cache)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["note"].startswith("calibrated on the --calibrate files")
    assert report["mean"]["n"] == 16


def test_a_calibration_file_without_the_tasks_is_one_error_line(tmp_path, cache):
    sst2_only = [line for line in TINY.read_text().splitlines() if '"task": "sst2"' in line]
    (tmp_path / "cal.jsonl").write_text("\n".join(sst2_only) + "\n")
    capitals = [line for line in TINY.read_text().splitlines() if '"task": "capitals"' in line]
    (tmp_path / "test.jsonl").write_text("\n".join(capitals) + "\n")
    result = run_eval(tmp_path / "out", str(tmp_path / "test.jsonl"), "--calibrate", str(tmp_path / "cal.jsonl"),
                      cache=cache)
    assert result.returncode == 2
    assert result.stderr.startswith("edge-runtime: error: no calibration items for task(s) ['capitals']")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (["missing.jsonl"], None, "missing.jsonl: no such file"),
    ([str(TINY)], "1.5", "EDGE_CONFIDENCE_THRESHOLD must be in [0, 1]"),
    ([str(TINY), "--target-accuracy", "2"], None, "--target-accuracy must be in [0, 1]"),
])
def test_bad_inputs_fail_fast_with_one_line(tmp_path, args, env, message):
    result = run_eval(tmp_path, *args, cache=tmp_path / "cache.jsonl", threshold=env)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
