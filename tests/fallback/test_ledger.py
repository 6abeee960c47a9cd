"""The SQLite ledger: schema, round trips, labels, and summary numbers checked by hand."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from fallback.errors import LedgerError
from fallback.ledger import (
    SCHEMA_VERSION, Ledger, LedgerEntry, default_ledger_path, format_summary,
)

PRICE = {"price_input_per_mtok": 1.0, "price_output_per_mtok": 2.0}


def sample_entries() -> list[LedgerEntry]:
    """Six requests; the expected summary numbers are worked out in the tests below."""
    return [
        LedgerEntry("local", local_tokens_in=100, local_tokens_out=50, correct=True, **PRICE),
        LedgerEntry("local", local_tokens_in=200, local_tokens_out=100, correct=False, **PRICE),
        LedgerEntry("cloud", reason="low_confidence", cloud_tokens_in=300, cloud_tokens_out=150,
                    cloud_cost_usd=0.0006, provider="p", correct=True, **PRICE),
        LedgerEntry("both", reason="low_confidence", local_tokens_in=120, local_tokens_out=60,
                    cloud_tokens_in=130, cloud_tokens_out=70, cloud_cost_usd=0.00027, provider="p", **PRICE),
        LedgerEntry("local-degraded", reason="schema_invalid", local_tokens_in=80, local_tokens_out=40, **PRICE),
        LedgerEntry("cloud", reason="user_requested", cloud_tokens_in=1000, cloud_tokens_out=1000,
                    cloud_cost_usd=0.01, provider="q", correct=True),  # no prices recorded
    ]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / "sub" / "ledger.sqlite3") as opened:
        yield opened


def test_new_ledger_has_schema_version_and_wal(ledger: Ledger) -> None:
    assert ledger.schema_version() == SCHEMA_VERSION == 2
    with sqlite3.connect(ledger.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {row[1] for row in raw.execute("PRAGMA table_info(requests)")}
    assert not any("prompt" in c or "text" in c for c in columns)  # never stores prompt text
    assert {"route", "reason", "confidence", "cloud_cost_usd", "correct", "redaction_count", "error"} <= columns


V1_SCHEMA = """CREATE TABLE requests (id TEXT PRIMARY KEY, created_at REAL NOT NULL, route TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', confidence REAL, local_tokens_in INTEGER NOT NULL DEFAULT 0,
    local_tokens_out INTEGER NOT NULL DEFAULT 0, local_latency_s REAL, cloud_tokens_in INTEGER NOT NULL DEFAULT 0,
    cloud_tokens_out INTEGER NOT NULL DEFAULT 0, cloud_latency_s REAL, cloud_cost_usd REAL NOT NULL DEFAULT 0,
    provider TEXT, price_input_per_mtok REAL, price_output_per_mtok REAL, task TEXT, correct INTEGER,
    redaction_count INTEGER NOT NULL DEFAULT 0);
INSERT INTO requests (id, created_at, route, cloud_cost_usd) VALUES ('old', 1.0, 'cloud', 0.25);
PRAGMA user_version = 1;"""


def test_a_version_1_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.executescript(V1_SCHEMA)
    with Ledger(path) as migrated:
        assert migrated.schema_version() == 2
        old = migrated.get("old")
        assert (old.route, old.cloud_cost_usd, old.error) == ("cloud", 0.25, None)
        failed = migrated.record(LedgerEntry("failed", reason="forced_cloud", error="AllProvidersFailedError"))
        assert migrated.get(failed).error == "AllProvidersFailedError"


def test_failed_rows_name_their_error_and_are_counted_apart(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="names its error"):
        LedgerEntry("failed", reason="forced_cloud")
    with pytest.raises(LedgerError, match="names its error"):
        LedgerEntry("cloud", error="StreamInterruptedError")
    for entry in sample_entries():
        ledger.record(entry)
    ledger.record(LedgerEntry("failed", reason="forced_cloud", error="AllProvidersFailedError"))
    ledger.record(LedgerEntry("failed", reason="low_confidence", local_tokens_in=10, error="CloudUnavailableError"))
    summary = ledger.summary()
    assert summary.requests == 8 and summary.failed == 2 and summary.failure_rate == pytest.approx(2 / 8)
    assert summary.escalated == 4 and summary.served_locally == 3  # failed rows are in neither
    assert "2 (25.0%)" in format_summary(summary)


def test_record_and_get_round_trip(ledger: Ledger) -> None:
    entry = LedgerEntry("both", reason="low_confidence", confidence=0.31, local_tokens_in=12,
                        local_latency_s=0.4, cloud_latency_s=1.2, task="gsm8k", redaction_count=2, **PRICE)
    entry_id = ledger.record(entry)
    assert len(entry_id) == 32 and int(entry_id, 16) >= 0  # uuid hex
    assert ledger.get(entry_id) == entry


def test_mark_correct_later(ledger: Ledger) -> None:
    entry_id = ledger.record(LedgerEntry("local"))
    assert ledger.get(entry_id).correct is None
    ledger.mark_correct(entry_id, False)
    assert ledger.get(entry_id).correct is False
    ledger.mark_correct(entry_id, True)
    assert ledger.get(entry_id).correct is True


def test_unknown_id_and_bad_route_are_ledger_errors(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="no ledger entry"):
        ledger.mark_correct("deadbeef", True)
    with pytest.raises(LedgerError, match="route must be one of"):
        LedgerEntry("moon")


def test_reopening_keeps_rows_and_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as first:
        entry_id = first.record(LedgerEntry("cloud", cloud_cost_usd=0.5))
    with Ledger(path) as second:
        assert second.get(entry_id).cloud_cost_usd == 0.5
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError, match="schema version 99 is newer"):
        Ledger(path)


def test_summary_numbers_match_hand_computation(ledger: Ledger) -> None:
    entries = sample_entries()
    ids = [ledger.record(e) for e in entries]
    assert len(set(ids)) == 6
    summary = ledger.summary()
    assert summary.requests == 6
    assert summary.served_locally == 3 and summary.local_share == pytest.approx(0.5)
    assert summary.escalated == 4 and summary.escalation_rate == pytest.approx(4 / 6)
    assert summary.escalation_rate_by_reason == pytest.approx(
        {"low_confidence": 2 / 6, "schema_invalid": 1 / 6, "user_requested": 1 / 6})
    assert summary.total_cost_usd == pytest.approx(0.01087)
    assert summary.cost_per_request_usd == pytest.approx(0.01087 / 6)
    assert (summary.labelled, summary.correct, summary.accuracy) == (4, 3, 0.75)
    assert summary.cost_per_correct_usd == pytest.approx(0.0106 / 3)
    # cloud-only at each row's prices (1, 2 $/Mtok); the unpriced row is left out of both sides:
    # 0.0002 + 0.0004 + 0.0006 + 0.00027 (cloud tokens) + 0.00016 = 0.00163; actual 0.00087
    assert summary.unpriced_requests == 1
    assert summary.cloud_only_cost_usd == pytest.approx(0.00163)
    assert summary.saving_usd == pytest.approx(0.00076)


def test_summary_with_a_configured_cloud_price(ledger: Ledger) -> None:
    for entry in sample_entries():
        ledger.record(entry)
    summary = ledger.summary(cloud_only_price=(10.0, 20.0))
    # 0.002 + 0.004 + 0.006 + 0.0027 + 0.0016 + 0.03 = 0.0463; minus actual 0.01087
    assert summary.unpriced_requests == 0
    assert summary.cloud_only_cost_usd == pytest.approx(0.0463)
    assert summary.saving_usd == pytest.approx(0.0463 - 0.01087)


def test_empty_ledger_summary(ledger: Ledger) -> None:
    summary = ledger.summary()
    assert summary.requests == 0 and summary.local_share == 0.0
    assert summary.accuracy is None and summary.saving_usd is None
    assert "no labels yet" in format_summary(summary)


def test_format_summary_shows_the_key_numbers(ledger: Ledger) -> None:
    for entry in sample_entries():
        ledger.record(entry)
    table = format_summary(ledger.summary(cloud_only_price=(10.0, 20.0)))
    for expected in ("requests", "6", "3 (50.0%)", "4 (66.7%)", "low_confidence", "33.3%",
                     "$0.010870", "75.0% of 4 labelled", "$0.046300", "$0.035430"):
        assert expected in table, expected


def test_concurrent_records_from_threads(ledger: Ledger) -> None:
    def worker() -> None:
        for _ in range(25):
            ledger.record(LedgerEntry("cloud", cloud_cost_usd=0.001))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = ledger.summary()
    assert summary.requests == 100
    assert summary.total_cost_usd == pytest.approx(0.1)


def test_default_path_respects_env_and_xdg(tmp_path: Path) -> None:
    explicit = tmp_path / "x.sqlite3"
    assert default_ledger_path({"EDGE_LEDGER_PATH": str(explicit)}) == explicit
    assert default_ledger_path({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "edge-runtime" / "ledger.sqlite3"
    assert default_ledger_path({}) == Path.home() / ".cache" / "edge-runtime" / "ledger.sqlite3"
