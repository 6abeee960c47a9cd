"""The fallback's subcommand of ``edge-runtime``: ``ledger`` (where requests went, what they cost).

``edge_runtime.cli`` calls ``add_parsers``; each handler imports what it needs when it runs, so
``edge-runtime --help`` stays instant. A ``FallbackError`` becomes one line on stderr and exit status 2.
(``eval`` needs the runtime, so it lives in ``edge_runtime.evaluation.cli``.)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from fallback.errors import FallbackError

EXIT_ERROR = 2


def add_parsers(subparsers) -> None:
    _add_ledger(subparsers)


def guarded(handler):
    """``handler`` with a ``FallbackError`` turned into one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except FallbackError as exc:
            print(f"edge-runtime: error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _add_ledger(subparsers) -> None:
    parser = subparsers.add_parser("ledger", help="summarise the request ledger (where requests went, cost)")
    parser.add_argument("--path", type=Path, default=None, help="ledger database (default: $EDGE_LEDGER_PATH or "
                                                               "~/.cache/edge-runtime/ledger.sqlite3)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=guarded(ledger_command))


def ledger_command(args: argparse.Namespace) -> int:
    from fallback.ledger import Ledger, LedgerError, default_ledger_path, format_summary

    path = args.path or default_ledger_path()
    if not path.exists():
        raise LedgerError(f"no ledger at {path}")
    with Ledger(path) as ledger:
        summary = ledger.summary()
    print(json.dumps(asdict(summary), indent=2) if args.json else format_summary(summary))
    return 0
