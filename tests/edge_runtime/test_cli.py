"""The ``edge-runtime`` command as a user runs it: a fresh process, real model, output parsed back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROMPT = "Q: What is the capital of France?\nA:"


def edge_runtime(*args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], input=stdin, capture_output=True,
                          timeout=timeout)


def test_run_json_record_has_the_documented_fields(bundled_path):
    completed = edge_runtime("run", PROMPT, "--model", str(bundled_path), "--max-tokens", "6", "--json")
    assert completed.returncode == 0, completed.stderr.decode()
    record = json.loads(completed.stdout)
    assert record["finish_reason"] in ("stop", "length")
    assert record["text"] == "".join(token["text"] for token in record["tokens"])
    assert all(token["logprob"] <= 0 for token in record["tokens"])
    assert record["usage"]["completion_tokens"] == len(record["tokens"]) <= 6
    assert record["usage"]["prompt_tokens"] > 5
    assert record["timings"]["time_to_first_token_s"] > 0
    assert "decode_tokens_per_s" in record["timings"]
    assert 0 < record["confidence"] <= 1


def test_run_streams_text_and_ends_with_a_summary(bundled_path):
    completed = edge_runtime("run", PROMPT, "--model", str(bundled_path), "--max-tokens", "4", "--stop", "\n")
    assert completed.returncode == 0
    assert "Paris" in completed.stdout.decode()
    summary = completed.stderr.decode().strip().splitlines()[-1]
    assert "tokens/s" in summary and "TTFT" in summary and "mean confidence" in summary


def test_run_reads_the_prompt_from_stdin_and_rejects_bad_utf8(bundled_path):
    good = edge_runtime("run", "-", "--model", str(bundled_path), "--max-tokens", "2", "--json", stdin=PROMPT.encode())
    assert good.returncode == 0 and json.loads(good.stdout)["usage"]["completion_tokens"] == 2
    bad = edge_runtime("run", "-", "--model", str(bundled_path), "--max-tokens", "2", stdin=b"caf\xc3(")
    assert bad.returncode == 2
    assert b"UTF-8" in bad.stderr and b"Traceback" not in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--max-tokens", "0"], b"max_tokens"), (["--temperature", "-1"], b"temperature"),
    (["--memory-budget", "1000"], b"memory budget"),
])
def test_bad_options_exit_2_with_one_line(bundled_path, args, message):
    completed = edge_runtime("run", PROMPT, "--model", str(bundled_path), *args)
    assert completed.returncode == 2
    assert message in completed.stderr and len(completed.stderr.strip().splitlines()) == 1


def test_plan_prints_the_fit_without_loading(bundled_path):
    completed = edge_runtime("plan", str(bundled_path), "--ctx", "4096", "--memory-budget", "400000000")
    plan = json.loads(completed.stdout)
    assert plan["model_bytes"] == bundled_path.stat().st_size
    assert plan["kv_cache_bytes"] > 0
    assert plan["total_bytes"] == sum(plan[part] for part in ("weights_bytes", "kv_cache_bytes", "compute_bytes",
                                                              "output_bytes", "runtime_bytes", "prefix_cache_bytes"))
    assert plan["prefix_cache_bytes"] == 0  # the budget leaves nothing for the prefix store
    assert plan["fits"] is False and plan["reasons"]
    bigger = json.loads(edge_runtime("plan", str(bundled_path), "--ctx", "8192").stdout)
    assert bigger["kv_cache_bytes"] == 2 * plan["kv_cache_bytes"] and bigger["fits"] is True
    assert bigger["prefix_cache_bytes"] == 64 * 2**20
    without_store = json.loads(edge_runtime("plan", str(bundled_path), "--ctx", "8192", "--no-prefix-cache").stdout)
    assert without_store["total_bytes"] == bigger["total_bytes"] - bigger["prefix_cache_bytes"]


def test_models_lists_the_bundled_default():
    completed = edge_runtime("models", "--json")
    models = json.loads(completed.stdout)
    default = [model for model in models if model["default"]]
    assert len(default) == 1 and default[0]["format"] == "gguf" and default[0]["bytes"] > 200_000_000
