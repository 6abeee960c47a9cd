"""``edge-runtime bench``: argument forms, which builds of a manifest run here, clean errors, and one real
quick run on the bundled model in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cli as bench_cli
from converters.manifest import Manifest
from edge_runtime.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
GATE = {"top1_agreement": 1.0, "mean_kl": 0.0, "greedy_agreement": 1.0, "perplexity": 1.0,
        "reference_perplexity": 1.0, "perplexity_ratio": 1.0, "method": "runtime", "prompts": 1,
        "greedy_tokens": 1, "thresholds": {}}


def build(target, preset, status="accepted", failures=()):
    return {"target": target, "preset": preset, "entry": f"{target}-{preset}", "files": [], "bytes": 10,
            "sha256": {}, "status": status, "conversion_s": 0.0, "gate": {**GATE, "failures": list(failures)}}


MANIFEST = Manifest.model_validate({
    "created_at": "now", "tool_versions": {}, "source": {"path": "s", "kind": "gguf", "arch": "gemma3", "sha256": ""},
    "builds": [build("gguf", "Q4_K_M"), build("onnx", "int8"), build("coreml", "int8"),
               build("gguf", "Q2_K", "rejected", ["mean_kl 0.4 > 0.15"])]})


def test_model_and_options_parse_in_any_order():
    parser = build_parser()
    before = parser.parse_args(["bench", "--quick", "--runs", "3", "model.gguf", "--out", "dir"])
    after = parser.parse_args(["bench", "model.gguf", "--quick"])
    bare = parser.parse_args(["bench", "--prompt-lengths", "256,64", "--out", "dir"])
    assert (before.model, before.quick, before.runs, str(before.out)) == ("model.gguf", True, 3, "dir")
    assert (after.model, after.quick, after.handler) == ("model.gguf", True, bench_cli.bench_command)
    assert bare.model is None and bare.prompt_lengths == [64, 256]


def test_bench_eval_is_the_top_level_eval_command():
    parser = build_parser()
    alias = parser.parse_args(["bench", "eval", "tasks.jsonl", "--out", "o", "--limit", "3"])
    direct = parser.parse_args(["eval", "tasks.jsonl", "--out", "o", "--limit", "3"])
    assert alias.handler is direct.handler and alias.limit == 3 and alias.test == direct.test


def test_manifest_builds_that_cannot_run_here_are_skipped_with_reasons():
    reason_for = lambda fmt: bench_cli.unavailable_reason(fmt, "linux", {"llama_cpp"})  # noqa: E731
    targets, skipped = bench_cli.manifest_targets(MANIFEST, Path("/builds"), reason_for)
    assert [(t.backend, t.build, t.path) for t in targets] == [("gguf", "Q4_K_M", Path("/builds/gguf-Q4_K_M"))]
    reasons = {(s.backend, s.build): s.reason for s in skipped}
    assert reasons[("onnx", "int8")] == "onnxruntime, tokenizers not installed"
    assert reasons[("coreml", "int8")] == "Core ML prediction runs only on macOS"
    assert reasons[("gguf", "Q2_K")] == "rejected by the quality gate: mean_kl 0.4 > 0.15"


def test_coreml_runs_on_macos_when_coremltools_is_there():
    assert bench_cli.unavailable_reason("coreml", "darwin", {"coremltools"}) is None
    assert bench_cli.unavailable_reason("onnx", "linux", {"onnxruntime", "tokenizers"}) is None


@pytest.mark.parametrize("make_model, message", [
    (lambda tmp: tmp / "missing.gguf", "no such file"),
    (lambda tmp: (tmp / "notes.gguf").write_text("hello") and tmp / "notes.gguf", "not a GGUF file"),
    (lambda tmp: (tmp / "manifest.json").write_text("{}") and tmp / "manifest.json", "not a valid manifest"),
])
def test_unusable_models_exit_2_with_one_line(tmp_path, capsys, make_model, message):
    assert main(["bench", str(make_model(tmp_path)), "--quick", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("edge-runtime: error:") and message in error and error.count("\n") == 1


@pytest.mark.parametrize("option, value, message", [("--decode-tokens", "1", "--decode-tokens must be at least 2"),
                                                     ("--runs", "0", "--runs must be at least 1"),
                                                     ("--threads", "0", "--threads must be at least 1")])
def test_bad_option_values_exit_2(tmp_path, capsys, option, value, message):
    assert main(["bench", option, value, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_progress_bar_draws_one_line_per_build_off_a_terminal(capsys):
    import io

    stream = io.StringIO()
    bar = bench_cli.ProgressBar(4, stream=stream, width=4)
    for label in ("gguf a: load", "gguf a: cold", "onnx b: load", "onnx b: cold"):
        bar.advance(label)
    bar.finish()
    assert stream.getvalue().splitlines() == ["[#...] 1/4 gguf a: load", "[###.] 3/4 onnx b: load"]


def test_quick_bench_of_the_bundled_model(tmp_path, bundled_path):
    out = tmp_path / "bench"
    completed = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "bench", "--quick", "--threads", "1",
                                "--label", "ci", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads((out / "bench.json").read_text())
    assert report["schema_version"] == 1 and report["device"]["label"] == "ci"
    assert {"cpu", "ram_bytes", "gpus", "os", "python", "libraries", "llama_cpp"} <= set(report["device"])
    (result,) = report["results"]
    assert result["backend"] == "gguf"
    for key in ("load_s", "ttft_s", "cold_ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s",
                "token_latency_p50_s", "token_latency_p95_s", "peak_rss_bytes", "model_bytes"):
        assert result[key] > 0, key
    assert result["model_bytes"] == bundled_path.stat().st_size
    assert result["roofline"]["share_of_limit"] > 0 and report["bandwidth_bytes_per_s"] > 0
    assert [point["prompt_tokens"] for point in result["prefill"]] == [16, 64]
    assert result["token_latency"]["n"] == len(result["token_latency"]["samples"]) > 0
    assert "| gguf |" in (out / "bench.md").read_text()
    for name in ("tokens_per_s.png", "latency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
