"""``edge-runtime eval`` on structured and open-answer items with the bundled model: 8 atis items (JSON under a
schema) and 8 languages items, through the real CLI. Checks the structured path end to end (grammar, parse,
schema, field equality), the new report keys and the running decision's record per item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.edge_runtime.evaluation.test_harness import PER_TASK_KEYS, read_jsonl, run_eval

TINY = Path(__file__).parents[2] / "data" / "tiny_structured.jsonl"


@pytest.fixture(scope="module")
def structured_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("structured")
    result = run_eval(out, str(TINY), cache=out / "local_answers.jsonl")
    assert result.returncode == 0, result.stderr
    return out


def test_report_keeps_todays_keys_and_adds_the_decision_fraction_and_the_valid_rate(structured_run):
    report = json.loads((structured_run / "report.json").read_text())
    atis, languages = report["tasks"]["atis"], report["tasks"]["languages"]
    for numbers in (atis, languages):
        assert PER_TASK_KEYS | {"escalation_decision_fraction"} <= set(numbers)
        fraction = numbers["escalation_decision_fraction"]
        assert fraction is None or 0.0 <= fraction <= 1.5
    assert "schema_valid_rate" in atis and "schema_valid_rate" not in languages
    items = [item for item in read_jsonl(structured_run / "items.jsonl") if item["task"] == "atis"]
    assert atis["schema_valid_rate"] == sum(not item["invalid"] for item in items) / len(items)


def test_structured_answers_are_json_judged_field_by_field(structured_run):
    gold = {item["id"]: item["answer"] for item in read_jsonl(TINY)}
    for item in read_jsonl(structured_run / "items.jsonl"):
        if item["task"] != "atis" or item["invalid"]:
            continue
        answer = json.loads(item["local_answer"])
        assert set(answer) == {"from", "to", "day"}
        expected = all((answer[k].strip().casefold() if isinstance(answer[k], str) else answer[k])
                       == (v.casefold() if isinstance(v, str) else v) for k, v in gold[item["id"]].items())
        assert item["local_correct"] == expected


def test_each_decision_is_timed_within_its_local_answer(structured_run):
    for item in read_jsonl(structured_run / "items.jsonl"):
        assert 0.0 <= item["decision_s"] <= item["local_latency_s"] + 1e-9
        assert item["decision_s"] > 0.0 or item["decided_after_tokens"] == -1  # the text's: before the model runs
        if item["decided_after_tokens"] is not None:
            assert item["escalated"] and item["reason"] == "early_low_confidence"
    calibration = json.loads((structured_run / "calibration" / "atis.json").read_text())
    assert "running" in calibration["extra"]  # the running decision's checkpoints, in the file the server loads
