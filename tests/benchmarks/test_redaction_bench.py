"""``benchmarks.redaction`` on a small seeded corpus: the recall and false-positive targets of issue #19 hold.

A detector that stops finding a kind, or starts redacting clean text, fails here. The corpus is built
without the dev sets (``data_dir=None``), as on a machine that lacks them. Speed is only bounded loosely
(a regex gone quadratic, not a busy CI machine, should fail it); the measured figure is in
``docs/bench/redaction.json``.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("faker", reason="the benchmark corpus is generated with faker (test extra)")

from benchmarks.redaction import TARGETS, main, run, to_json  # noqa: E402
from benchmarks.redaction_corpus import KINDS  # noqa: E402


@pytest.fixture(scope="module")
def report():
    return run(seed=7, per_kind=15, clean=800, data_dir=None)


def test_every_kind_of_the_corpus_was_measured(report):
    assert len(KINDS) >= 25
    assert all(report.kinds[spec.name].samples == 15 for spec in KINDS)


@pytest.mark.parametrize("group", sorted(TARGETS))
def test_recall_targets_hold(report, group):
    below = {r.kind: (r.recall, r.misses) for r in report.kinds.values()
             if r.group == group and r.recall < TARGETS[group]}
    assert below == {}


def test_checked_kinds_are_caught_as_the_kind_they_are(report):
    for result in report.kinds.values():
        if result.group in ("checked", "key"):
            assert result.right_kind >= 0.85 * result.caught, result.kind


def test_clean_text_is_left_alone(report):
    assert report.fp_per_1000 <= 1.0, report.fp_examples


def test_speed_is_bounded(report):
    assert 0 < report.ms_per_kb < 20, report.ms_per_kb


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "redaction.json"
    main(["--per-kind", "2", "--clean", "50", "--data-dir", str(tmp_path / "absent"), "--json", str(out)])
    data = json.loads(out.read_text())
    assert "recall" in capsys.readouterr().out
    assert set(data["recall"]) >= {spec.name for spec in KINDS} and data["clean_texts"] == 50
    assert to_json.__name__ and data["ms_per_kb"] > 0
