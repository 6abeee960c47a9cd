"""Raw samples to a report: medians and spreads, the markdown table, plots, and merging machines."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_report
from benchmarks.bench_report import BenchReport, BenchSettings, Spread
from edge_runtime.cli import main

DEVICE = {"label": "laptop", "cpu": {"model": "Test CPU", "usable_cores": 4, "flags": {"avx2": True}},
          "ram_bytes": 16 * 2**30, "gpus": [], "os": {"system": "Linux", "release": "6"},
          "python": {"version": "3.11"}, "libraries": {"llama-cpp-python": "0.3.36"},
          "llama_cpp": {"system_info": "CPU : AVX2 = 1 |", "gpu_offload": False, "gpu_backend": None, "blas": False},
          "onnxruntime_providers": [], "accelerator": {"n_gpu_layers": 0}, "load_average": [1.0, 1.0, 1.0]}


def raw_full(decode=(80.0, 90.0, 100.0)):
    return {"load_s": 0.5, "cold_ttft_s": 0.05, "peak_rss_bytes": 400_000_000, "n_ctx": 512, "notes": [],
            "n_threads": 2, "n_gpu_layers": 0, "execution_providers": [], "prompt_lengths": [16, 64],
            "prefill": {"64": [900.0, 1000.0, 1100.0], "16": [400.0, 500.0, 600.0]},
            "prefill_tokens": {"16": 16, "64": 65}, "warm_ttft_s": [0.03, 0.02, 0.04],
            "decode_tokens_per_s": list(decode), "decoded_tokens": [8, 8, 8],
            "token_gaps_s": [0.010, 0.011, 0.012, 0.013, 0.050]}


def make_report(label="laptop", decode=(80.0, 90.0, 100.0)):
    colds = [{"load_s": 0.7, "cold_ttft_s": 0.07, "peak_rss_bytes": 410_000_000}]
    result = bench_report.summarise("gguf", "Q4_K_M", "/m.gguf", 250_000_000, raw_full(decode), colds)
    return BenchReport(created_at="2026-01-01T00:00:00+00:00", model="bundled", device={**DEVICE, "label": label},
                       settings=BenchSettings(runs=3, prompt_lengths=[16, 64], decode_tokens=8, threads=2, quick=True),
                       bandwidth_bytes_per_s=20e9, results=[result])


def test_summary_takes_medians_spreads_and_the_longest_prompt():
    result = make_report().results[0]
    assert result.decode_tokens_per_s == 90.0 and (result.decode.min, result.decode.max) == (80.0, 100.0)
    assert result.prefill_tokens_per_s == 1000.0 and result.prefill[-1].prompt_tokens == 65
    assert [point.prompt_tokens for point in result.prefill] == [16, 65]
    assert result.load_s == pytest.approx(0.6) and result.load.n == 2
    assert result.ttft_s == 0.03 and result.cold_ttft_s == pytest.approx(0.06)
    assert result.peak_rss_bytes == 410_000_000
    assert result.token_latency_p50_s == 0.012 and result.token_latency_p95_s > 0.013


def test_percentile_interpolates():
    assert bench_report.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert bench_report.percentile([], 0.95) == 0.0
    assert Spread.of([]).n == 0


def test_markdown_has_the_device_and_one_row_per_build():
    text = bench_report.markdown_report(make_report())
    assert "Test CPU" in text and "load average 1.0" in text
    row = next(line for line in text.splitlines() if line.startswith("| gguf"))
    assert "90.0 (80.0–100.0)" in row and "1000 (900–1100) @65" in row


def test_files_are_written_and_read_back(tmp_path):
    report = make_report()
    written = bench_report.write_report(report, tmp_path)
    assert {path.name for path in written} == {"bench.json", "bench.md", "tokens_per_s.png", "latency.png"}
    assert bench_report.read_report(tmp_path).results[0].decode_tokens_per_s == 90.0
    assert json.loads((tmp_path / "bench.json").read_text())["schema_version"] == bench_report.SCHEMA_VERSION


def test_a_file_that_is_not_a_report_is_one_line_error(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(ValueError, match="not a bench report"):
        bench_report.read_report(tmp_path / "bench.json")


def test_compare_merges_machines_into_one_table_and_plot(tmp_path, capsys):
    for name, label, decode in (("a", "laptop", (50.0,)), ("b", "phone", (20.0,)), ("c", "laptop", (60.0,))):
        bench_report.write_report(make_report(label, decode), tmp_path / name)
    code = main(["bench", "compare", str(tmp_path / "a" / "bench.json"), str(tmp_path / "b"),
                 str(tmp_path / "c"), "--out", str(tmp_path / "merged")])
    assert code == 0
    merged = json.loads((tmp_path / "merged" / "compare.json").read_text())
    assert [machine["label"] for machine in merged["machines"]] == ["laptop", "phone", "laptop #2"]
    table = (tmp_path / "merged" / "compare.md").read_text()
    assert "| phone | gguf | Q4_K_M" in table and "| laptop #2 | gguf" in table
    assert (tmp_path / "merged" / "compare.png").stat().st_size > 0
    assert (tmp_path / "merged" / "compare_latency.png").stat().st_size > 0
    assert "| machine | backend" in capsys.readouterr().out


def test_compare_of_a_missing_file_exits_2_with_one_line(tmp_path, capsys):
    assert main(["bench", "compare", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("edge-runtime: error:") and error.count("\n") == 1
