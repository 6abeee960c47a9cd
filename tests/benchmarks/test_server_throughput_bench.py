"""The server-throughput benchmark's pure parts: its client-count option and the ratios it prints."""

from __future__ import annotations

import pytest

from benchmarks import server_throughput as bench


def test_client_counts_option():
    assert bench.parse([]).clients == (1, 4, 8)
    assert bench.parse(["--clients", "1"]).clients == (1,)
    assert bench.parse(["--clients", "1,8"]).clients == (1, 8)
    with pytest.raises(SystemExit):
        bench.parse(["--clients", "0"])


def _row(server: str, round_: int, tokens_per_s: float, p95: float) -> dict:
    return {"server": server, "round": round_, "mode": "plain", "clients": 1, "tokens_per_s": tokens_per_s,
            "latency_p95_s": p95, "latency_p50_s": p95 / 2}


def test_ratios_are_ours_over_cpp_per_round_and_median_over_rounds():
    rows = [_row(bench.OURS, 1, 40.0, 1.0), _row(bench.CPP, 1, 38.0, 1.1),
            _row(bench.OURS, 2, 36.0, 1.2), _row(bench.CPP, 2, 40.0, 1.0),
            _row(bench.OURS, 3, 39.0, 1.0), _row(bench.CPP, 3, 39.0, 1.0)]
    per_round = bench.ratios(rows)["ours_over_cpp"]
    assert per_round["round 2 plain x1"]["tokens_per_s"] == pytest.approx(0.9)
    assert bench.summarise(rows)["plain x1"]["tokens_per_s"] == pytest.approx(1.0)
