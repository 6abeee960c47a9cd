"""A local SQLite record of where each request was served and what it cost, to prove the fallback pays off.

One row per request: route, reason, confidence, token counts and latencies on each side, cloud cost,
provider, the provider's prices at the time, an optional task label and a correctness label that can be
set later. Prompt and answer text are never stored. A request that was accepted but ended in an error
(neither leg could answer, or a cloud stream broke after content reached the client) is recorded too, with
route ``failed`` and the error's type in ``error``; a streamed request the client abandoned has route
``cancelled``; so the ledger counts every request exactly once.

Definitions used by ``summary``:

* served locally: route ``local`` or ``local-degraded`` (the cloud was wanted but failed);
  escalated: ``cloud``, ``both`` or ``local-degraded``; failed (route ``failed``) and cancelled (route
  ``cancelled``) are counted apart: in ``requests`` and their own counts, in neither of the others.
* actual cost: the sum of ``cloud_cost_usd``; local inference is counted as free.
* cloud-only estimate: what sending every request to the cloud would have cost. Tokens are the cloud
  tokens when the request reached the cloud, else the local tokens (an estimate: tokenizers differ).
  Prices are ``cloud_only_price=(in, out)`` in USD per million tokens when given, else the row's stored
  prices; rows with neither are left out of both sides of the saving and counted in ``unpriced_requests``.
* saving: cloud-only estimate minus actual cost, over the same rows.
* cost per correct: the actual cost of the labelled rows divided by how many of them are correct.

The schema version lives in ``PRAGMA user_version``; the database runs in WAL mode and one connection is
shared behind a lock, so the ledger may be used from several threads.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fallback.errors import LedgerError
from fallback.policy import RouteTaken

SCHEMA_VERSION = 2
ROUTES = tuple(route.value for route in RouteTaken)
LOCAL_ROUTES = frozenset({RouteTaken.LOCAL.value, RouteTaken.LOCAL_DEGRADED.value})

_SCHEMA = """
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    route TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    confidence REAL,
    local_tokens_in INTEGER NOT NULL DEFAULT 0,
    local_tokens_out INTEGER NOT NULL DEFAULT 0,
    local_latency_s REAL,
    cloud_tokens_in INTEGER NOT NULL DEFAULT 0,
    cloud_tokens_out INTEGER NOT NULL DEFAULT 0,
    cloud_latency_s REAL,
    cloud_cost_usd REAL NOT NULL DEFAULT 0,
    provider TEXT,
    price_input_per_mtok REAL,
    price_output_per_mtok REAL,
    task TEXT,
    correct INTEGER,
    redaction_count INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX requests_created_at ON requests (created_at);
"""
# each step takes the schema from the version in its key to the next one
_MIGRATIONS = {1: "ALTER TABLE requests ADD COLUMN error TEXT;"}


@dataclass(frozen=True)
class LedgerEntry:
    """One served request; ``created_at`` is Unix time in seconds, prices are USD per million tokens."""

    route: str
    reason: str = ""
    confidence: float | None = None
    local_tokens_in: int = 0
    local_tokens_out: int = 0
    local_latency_s: float | None = None
    cloud_tokens_in: int = 0
    cloud_tokens_out: int = 0
    cloud_latency_s: float | None = None
    cloud_cost_usd: float = 0.0
    provider: str | None = None
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    task: str | None = None
    correct: bool | None = None
    redaction_count: int = 0
    error: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise LedgerError(f"route must be one of {list(ROUTES)}; got {self.route!r}")
        if (self.route == RouteTaken.FAILED) != (self.error is not None):
            raise LedgerError("a failed request names its error, and only a failed request has one")

    @property
    def escalated(self) -> bool:
        return self.route not in (RouteTaken.LOCAL, RouteTaken.FAILED, RouteTaken.CANCELLED)

    def cloud_only_cost_usd(self, price: tuple[float, float] | None) -> float | None:
        """Estimated cost had this request gone to the cloud; None when no price is known."""
        price_in, price_out = price or (self.price_input_per_mtok, self.price_output_per_mtok)
        if price_in is None or price_out is None:
            return None
        reached_cloud = self.cloud_tokens_in or self.cloud_tokens_out
        tokens_in = self.cloud_tokens_in if reached_cloud else self.local_tokens_in
        tokens_out = self.cloud_tokens_out if reached_cloud else self.local_tokens_out
        return (tokens_in * price_in + tokens_out * price_out) / 1e6


def request_entry(route: str, reason: str, *, task: str | None = None, confidence: float | None = None,
                  local=None, local_latency_s: float | None = None, cloud=None, prices=None,
                  provider: str | None = None, error: str | None = None) -> LedgerEntry:
    """The one place a request's row is built from what its legs produced: ``local`` is the local answer
    (its usage), ``cloud`` the cloud's response (usage, latency, cost, redactions), ``prices`` the provider
    configuration whose prices held; ``provider`` defaults to the one that answered."""
    (local_in, local_out), (cloud_in, cloud_out) = _tokens(local), _tokens(cloud)
    return LedgerEntry(
        route=str(route), reason=reason, confidence=confidence, task=task, error=error,
        local_tokens_in=local_in, local_tokens_out=local_out, local_latency_s=local_latency_s,
        cloud_tokens_in=cloud_in, cloud_tokens_out=cloud_out,
        cloud_latency_s=cloud.latency_s if cloud is not None else None,
        cloud_cost_usd=cloud.cost_usd if cloud is not None else 0.0,
        provider=provider if provider is not None or cloud is None else cloud.provider,
        price_input_per_mtok=prices.price_input_per_mtok if prices is not None else None,
        price_output_per_mtok=prices.price_output_per_mtok if prices is not None else None,
        redaction_count=sum((cloud.redaction_counts or {}).values()) if cloud is not None else 0)


def _tokens(answer) -> tuple[int, int]:
    """(tokens in, tokens out) of a leg's answer; (0, 0) for a leg that did not answer."""
    return (answer.usage.prompt_tokens, answer.usage.completion_tokens) if answer is not None else (0, 0)


@dataclass(frozen=True)
class LedgerSummary:
    requests: int
    served_locally: int
    local_share: float
    escalated: int
    escalation_rate: float
    failed: int
    failure_rate: float
    cancelled: int
    escalation_rate_by_reason: dict[str, float]
    total_cost_usd: float
    cost_per_request_usd: float
    labelled: int
    correct: int
    accuracy: float | None
    cost_per_correct_usd: float | None
    cloud_only_cost_usd: float | None
    saving_usd: float | None
    unpriced_requests: int


def default_ledger_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$EDGE_LEDGER_PATH``, else ``$XDG_CACHE_HOME/edge-runtime/ledger.sqlite3`` (default ``~/.cache``)."""
    env = os.environ if environ is None else environ
    if env.get("EDGE_LEDGER_PATH"):
        return Path(env["EDGE_LEDGER_PATH"]).expanduser()
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "edge-runtime" / "ledger.sqlite3"


_COLUMNS = tuple(f.name for f in fields(LedgerEntry))


class Ledger:
    """The request ledger; use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        self._lock = threading.Lock()
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            _migrate(db)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from exc
        return db

    def record(self, entry: LedgerEntry) -> str:
        """Store ``entry``; returns its id."""
        row = asdict(entry)
        row["correct"] = None if entry.correct is None else int(entry.correct)
        sql = f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        self._execute(sql, [row[c] for c in _COLUMNS])
        return entry.id

    def mark_correct(self, entry_id: str, correct: bool) -> None:
        """Set the correctness label of a stored request; LedgerError if the id is unknown."""
        cursor = self._execute("UPDATE requests SET correct = ? WHERE id = ?", (int(correct), entry_id))
        if cursor.rowcount == 0:
            raise LedgerError(f"no ledger entry with id {entry_id!r}")

    def get(self, entry_id: str) -> LedgerEntry:
        rows = self._entries("WHERE id = ?", (entry_id,))
        if not rows:
            raise LedgerError(f"no ledger entry with id {entry_id!r}")
        return rows[0]

    def entries(self) -> list[LedgerEntry]:
        return self._entries("ORDER BY created_at", ())

    def summary(self, cloud_only_price: tuple[float, float] | None = None) -> LedgerSummary:
        """Aggregate every row; see the module docstring for the definitions."""
        return summarize(self.entries(), cloud_only_price)

    def schema_version(self) -> int:
        return int(self._execute("PRAGMA user_version", ()).fetchone()[0])

    def _entries(self, clause: str, params: tuple[object, ...]) -> list[LedgerEntry]:
        rows = self._execute(f"SELECT {', '.join(_COLUMNS)} FROM requests {clause}", params).fetchall()
        return [_entry_from_row(row) for row in rows]

    def _execute(self, sql: str, params: Iterable[object]) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params))
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _migrate(db: sqlite3.Connection) -> None:
    """Creates or upgrades the schema inside one write transaction, so two processes opening the same old
    file at once do not both upgrade it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(f"ledger schema version {version} is newer than this code ({SCHEMA_VERSION})")
        statements = [_SCHEMA] if version == 0 else [_MIGRATIONS[step] for step in range(version, SCHEMA_VERSION)]
        for script in statements:
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _entry_from_row(row: tuple[object, ...]) -> LedgerEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["correct"] = None if values["correct"] is None else bool(values["correct"])
    return LedgerEntry(**values)  # type: ignore[arg-type]


def summarize(entries: list[LedgerEntry], cloud_only_price: tuple[float, float] | None = None) -> LedgerSummary:
    """Pure aggregation behind ``Ledger.summary``."""
    requests = len(entries)
    local = sum(e.route in LOCAL_ROUTES for e in entries)
    escalated = [e for e in entries if e.escalated]
    failed = sum(e.route == RouteTaken.FAILED for e in entries)
    cancelled = sum(e.route == RouteTaken.CANCELLED for e in entries)
    total_cost = sum(e.cloud_cost_usd for e in entries)
    labelled = [e for e in entries if e.correct is not None]
    correct = sum(bool(e.correct) for e in labelled)
    cloud_only, saving, unpriced = _saving(entries, cloud_only_price)
    return LedgerSummary(
        requests=requests, served_locally=local, local_share=_ratio(local, requests),
        escalated=len(escalated), escalation_rate=_ratio(len(escalated), requests),
        escalation_rate_by_reason=_by_reason(escalated, requests),
        failed=failed, failure_rate=_ratio(failed, requests), cancelled=cancelled,
        total_cost_usd=total_cost, cost_per_request_usd=_ratio(total_cost, requests),
        labelled=len(labelled), correct=correct,
        accuracy=correct / len(labelled) if labelled else None,
        cost_per_correct_usd=sum(e.cloud_cost_usd for e in labelled) / correct if correct else None,
        cloud_only_cost_usd=cloud_only, saving_usd=saving, unpriced_requests=unpriced)


def _ratio(numerator: float, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _by_reason(escalated: list[LedgerEntry], requests: int) -> dict[str, float]:
    counts: dict[str, int] = {}
    for entry in escalated:
        reason = entry.reason or "(none)"
        counts[reason] = counts.get(reason, 0) + 1
    return {reason: counts[reason] / requests for reason in sorted(counts, key=lambda r: (-counts[r], r))}


def _saving(entries: list[LedgerEntry],
            price: tuple[float, float] | None) -> tuple[float | None, float | None, int]:
    estimates = [(e.cloud_only_cost_usd(price), e.cloud_cost_usd) for e in entries]
    priced = [(estimate, actual) for estimate, actual in estimates if estimate is not None]
    unpriced = len(entries) - len(priced)
    if not priced:
        return None, None, unpriced
    cloud_only = sum(estimate for estimate, _ in priced)
    return cloud_only, cloud_only - sum(actual for _, actual in priced), unpriced


def format_summary(summary: LedgerSummary) -> str:
    """A plain-text table for the terminal."""
    rows = [("requests", f"{summary.requests:,}"),
            ("served locally", f"{summary.served_locally:,} ({summary.local_share:.1%})"),
            ("escalated", f"{summary.escalated:,} ({summary.escalation_rate:.1%})")]
    rows += [(f"  {reason}", f"{rate:.1%}") for reason, rate in summary.escalation_rate_by_reason.items()]
    rows += [("failed", f"{summary.failed:,} ({summary.failure_rate:.1%})"),
             ("cancelled by the client", f"{summary.cancelled:,}")]
    rows += [("cloud cost", _usd(summary.total_cost_usd)),
             ("cost per request", _usd(summary.cost_per_request_usd))]
    rows += _label_rows(summary) + _saving_rows(summary)
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join(f"{name:<{width}}{value}" for name, value in rows)


def _label_rows(summary: LedgerSummary) -> list[tuple[str, str]]:
    if not summary.labelled:
        return [("accuracy", "no labels yet")]
    per_correct = _usd(summary.cost_per_correct_usd) if summary.cost_per_correct_usd is not None else "n/a"
    return [("accuracy", f"{summary.accuracy:.1%} of {summary.labelled:,} labelled"),
            ("cost per correct", per_correct)]


def _saving_rows(summary: LedgerSummary) -> list[tuple[str, str]]:
    if summary.cloud_only_cost_usd is None or summary.saving_usd is None:
        return [("saving vs cloud-only", "unknown (no prices recorded)")]
    note = f" ({summary.unpriced_requests:,} unpriced requests left out)" if summary.unpriced_requests else ""
    return [("cloud-only estimate", _usd(summary.cloud_only_cost_usd)),
            ("saving vs cloud-only", _usd(summary.saving_usd) + note)]


def _usd(value: float) -> str:
    return f"${value:,.6f}" if abs(value) < 1 else f"${value:,.2f}"
