"""``edge-runtime ledger``: the summary of a real SQLite ledger, as text and JSON, and a missing ledger."""

from __future__ import annotations

import json

import pytest

from edge_runtime.cli import main
from fallback.ledger import Ledger, LedgerEntry


@pytest.fixture
def ledger_path(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.record(LedgerEntry(route="local", reason="confident", local_tokens_in=100, local_tokens_out=2,
                                  price_input_per_mtok=2.5, price_output_per_mtok=10.0, correct=True))
        ledger.record(LedgerEntry(route="cloud", reason="low_confidence", cloud_tokens_in=100, cloud_tokens_out=2,
                                  cloud_cost_usd=0.00027, price_input_per_mtok=2.5, price_output_per_mtok=10.0,
                                  correct=True))
        ledger.record(LedgerEntry(route="cloud", reason="input_too_long", cloud_tokens_in=200, cloud_cost_usd=0.0005,
                                  price_input_per_mtok=2.5, price_output_per_mtok=10.0, correct=False))
    return path


def test_text_summary_shows_routes_reasons_and_costs(ledger_path, capsys):
    assert main(["ledger", "--path", str(ledger_path)]) == 0
    out = capsys.readouterr().out
    assert "served locally" in out and "1 (33.3%)" in out
    assert "low_confidence" in out and "input_too_long" in out
    assert "cost per correct" in out and "$0.000385" in out  # (0.00027 + 0.0005) / 2 correct
    assert "saving vs cloud-only" in out


def test_json_summary_has_the_numbers(ledger_path, capsys):
    assert main(["ledger", "--path", str(ledger_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 3 and summary["escalated"] == 2
    assert summary["escalation_rate_by_reason"] == {"input_too_long": pytest.approx(1 / 3),
                                                    "low_confidence": pytest.approx(1 / 3)}
    assert summary["total_cost_usd"] == pytest.approx(0.00077)
    assert summary["saving_usd"] == pytest.approx(100 * 2.5e-6 + 2 * 1e-5)  # the local request's cloud price


def test_default_path_comes_from_the_environment(ledger_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGE_LEDGER_PATH", str(ledger_path))
    assert main(["ledger", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == 3


def test_a_missing_ledger_is_one_error_line(tmp_path, capsys):
    assert main(["ledger", "--path", str(tmp_path / "none.sqlite3")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-runtime: error: no ledger at") and len(err.splitlines()) == 1
