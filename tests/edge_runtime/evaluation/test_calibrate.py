"""``edge-runtime calibrate`` on the bundled model: one task's calibration file, as ``serve --calibration`` loads
it, with the running decision's checkpoints; files of several tasks need ``--task``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fallback.calibration import Calibrator
from fallback.early import PROMPT_CHECKPOINT, RunningCalibration

TINY = Path(__file__).parents[2] / "data" / "tiny_tasks.jsonl"


def calibrate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "calibrate", *args, "--threads", "1"],
                          capture_output=True, text=True, timeout=300)


def test_calibrate_writes_the_file_the_server_loads(tmp_path):
    out = tmp_path / "capitals.json"
    result = calibrate(str(TINY), "--task", "capitals", "--out", str(out))
    assert result.returncode == 0, result.stderr
    calibrator = Calibrator.load(out)
    assert calibrator.task == "capitals" and calibrator.model.startswith("gemma-3-270m")
    assert 0.0 <= calibrator.threshold <= 1.0 + 1e-9 and calibrator.extra["n"] == 16
    running = RunningCalibration.of(calibrator)
    assert running is not None and PROMPT_CHECKPOINT in running.by_tokens  # the prompt-only decision
    assert out.with_suffix(".answers.jsonl").exists()  # a rerun costs no model time


def test_several_tasks_need_a_task_name(tmp_path):
    result = calibrate(str(TINY), "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "name one with --task" in result.stderr
