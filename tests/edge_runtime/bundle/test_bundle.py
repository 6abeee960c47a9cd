"""The one-file executable, built for real and run the way a user without Python runs it: ``env -i`` (no PATH,
no Python, nothing inherited), a fresh empty HOME, nothing but loopback.

Slow: the build takes a few minutes on 2 cores (``make bundle`` does the same build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.ports import free_port

pytestmark = pytest.mark.slow

PROMPT = "Q: What is the capital of France?\nA:"


@pytest.fixture(scope="module")
def executable(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    subprocess.run([sys.executable, "-m", "edge_runtime.bundle.build", "--dist", str(root / "dist"),
                    "--work", str(root / "work")], check=True, timeout=1800)
    return root / "dist" / "edge-runtime"


@pytest.fixture()
def clean_env(tmp_path) -> dict:
    """What ``env -i HOME=$(mktemp -d)`` leaves: HOME and nothing else."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home)}


def _run(executable: Path, *args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(executable), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=env["HOME"])


def _comparable(record: dict) -> dict:
    """What must not differ between the bundle and the virtual environment (timings always do)."""
    return {key: value for key, value in record.items() if key != "timings"}


def test_run_json_is_the_virtual_environments(executable, clean_env):
    args = ["run", PROMPT, "--max-tokens", "4", "--json"]
    frozen = _run(executable, *args, env=clean_env)
    assert frozen.returncode == 0, frozen.stderr
    venv = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True,
                          timeout=300, check=True)
    frozen_record, venv_record = json.loads(frozen.stdout), json.loads(venv.stdout)
    assert frozen_record["text"].strip().startswith("Paris")
    assert _comparable(frozen_record) == _comparable(venv_record)
    assert [t["logprob"] for t in frozen_record["tokens"]] == [t["logprob"] for t in venv_record["tokens"]]


def test_leaves_nothing_behind_but_needs_nothing_beside_itself(executable, clean_env, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    before = sorted(os.listdir(executable.parent))
    env = {**clean_env, "TMPDIR": str(temporary)}
    models = _run(executable, "models", "--json", env=env)
    assert models.returncode == 0, models.stderr
    listed = json.loads(models.stdout)
    assert [model["name"] for model in listed if model["default"]] == ["gemma-3-270m-q4_k_m"]
    assert sorted(os.listdir(executable.parent)) == before
    assert list(temporary.iterdir()) == []  # the run's folder (with the model copied into it) is gone
    assert not any(Path(clean_env["HOME"]).rglob("*.gguf"))  # and no second copy went into the cache


def test_plan_reads_the_carried_model(executable, clean_env):
    plan = _run(executable, "plan", "--ctx", "1024", env=clean_env)
    assert plan.returncode == 0, plan.stderr
    plan = json.loads(plan.stdout)
    assert plan["fits"] is True and plan["architecture"] == "gemma3" and plan["model_bytes"] > 200_000_000


def _wait_healthy(base: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read()
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("the frozen server did not become healthy")


def test_serve_answers_chat_and_completion_requests(executable, clean_env):
    openai = pytest.importorskip("openai", reason="the real OpenAI client is in the test extra")
    port = free_port()
    server = subprocess.Popen([str(executable), "serve", "--port", str(port), "--no-ledger"], env=clean_env,
                              cwd=clean_env["HOME"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, server)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(model="default", max_tokens=16, stop=["\n"],
                                              messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert chat.choices[0].message.role == "assistant" and "Paris" in chat.choices[0].message.content
        completion = client.completions.create(model="default", prompt=PROMPT, max_tokens=16, stop=["\n"])
        assert "Paris" in completion.choices[0].text and completion.choices[0].finish_reason == "stop"
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode in (0, -15), server.stderr.read()


def test_bench_measures_in_frozen_children(executable, clean_env, tmp_path):
    out = tmp_path / "bench"
    bench = _run(executable, "bench", "--quick", "--runs", "1", "--out", str(out), env=clean_env, timeout=600)
    assert bench.returncode == 0, bench.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["results"][0]["decode"]["median"] > 0
