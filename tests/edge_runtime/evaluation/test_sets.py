"""Evaluation sets: per-file limits, grouping by task, the seeded 50/50 split, and the errors."""

from __future__ import annotations

import json

import pytest

from edge_runtime.evaluation.sets import build_sets, split_half
from fallback.errors import ConfigError
from fallback.tasks import TaskItem


def _write(path, task, count, prefix=None):
    items = [{"id": f"{prefix or task}-{i}", "task": task, "prompt": f"Q{i}:", "answer": "a"} for i in range(count)]
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def test_split_half_is_seeded_disjoint_and_keeps_file_order():
    items = [TaskItem(id=str(i), task="t", prompt="p", answer="a") for i in range(11)]
    calibration, test = split_half(items, seed=0)
    assert len(calibration) == 5 and len(test) == 6
    assert {i.id for i in calibration}.isdisjoint(i.id for i in test)
    assert [int(i.id) for i in test] == sorted(int(i.id) for i in test)
    assert split_half(items, seed=0) == (calibration, test)
    assert split_half(items, seed=1) != (calibration, test)


def test_without_calibration_files_each_task_is_split(tmp_path):
    sets = build_sets([_write(tmp_path / "a.jsonl", "a", 10), _write(tmp_path / "b.jsonl", "b", 20)], [], limit=8,
                      seed=0)
    assert {t: len(v) for t, v in sets.test.items()} == {"a": 4, "b": 4}
    assert {t: len(v) for t, v in sets.calibration.items()} == {"a": 4, "b": 4}
    assert "50/50" in sets.note


def test_calibration_files_are_matched_by_task(tmp_path):
    test = _write(tmp_path / "t.jsonl", "a", 6)
    calibration = _write(tmp_path / "c.jsonl", "a", 5, prefix="cal")
    sets = build_sets([test], [calibration], limit=None, seed=0)
    assert len(sets.test["a"]) == 6 and len(sets.calibration["a"]) == 5
    assert [item.id for item in sets.all_items()][:2] == ["cal-0", "cal-1"]


@pytest.mark.parametrize(("calibration_task", "prefix", "message"), [
    ("other", "cal", r"no calibration items for task\(s\) \['a'\]"),
    ("a", None, "calibration and test items overlap"),
])
def test_bad_calibration_files(tmp_path, calibration_task, prefix, message):
    test = _write(tmp_path / "t.jsonl", "a", 6)
    calibration = _write(tmp_path / "c.jsonl", calibration_task, 6, prefix=prefix)
    with pytest.raises(ConfigError, match=message):
        build_sets([test], [calibration], limit=None, seed=0)


def test_missing_file_and_repeated_ids(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        build_sets([tmp_path / "nope.jsonl"], [], limit=None, seed=0)
    first = _write(tmp_path / "1.jsonl", "a", 3)
    with pytest.raises(ConfigError, match="repeated"):
        build_sets([first, first], [], limit=None, seed=0)
