"""The whole conversion on a tiny model, through the CLI entry the lead wires in, and the light imports."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from converters.cli import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, add_parsers, parse_quant, run_convert
from converters.errors import UnknownPresetError
from converters.manifest import read_manifest


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["convert", *argv])


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert-out")
    code = run_convert(_args(str(tiny.hf_folder("gemma3")), "--out", str(out), "--targets", "gguf,onnx",
                             "--quant", "gguf=Q8_0", "--quant", "onnx=int8", "--no-progress"))
    return code, out


def test_convert_writes_gated_builds_and_a_manifest(converted, tiny):
    code, out = converted
    manifest = read_manifest(out / "manifest.json")
    assert code == EXIT_OK
    assert [(b.target, b.preset, b.status) for b in manifest.builds] == [("gguf", "Q8_0", "accepted"),
                                                                       ("onnx", "int8", "accepted")]
    assert manifest.source.kind == "hf" and manifest.source.arch == "gemma3" and len(manifest.source.sha256) == 64
    assert {"torch", "onnxruntime", "gguf", "llama-cpp-python"} <= set(manifest.tool_versions)
    for build in manifest.builds:
        assert build.bytes == sum((out / f).stat().st_size for f in build.files) > 0
        assert set(build.sha256) == set(build.files) and build.conversion_s > 0
        assert build.gate.method == "runtime" and build.gate.prompts == 8


def test_choose_build_reads_the_written_manifest(converted):
    from converters import choose_build

    _, out = converted
    assert choose_build(out / "manifest.json", {"gguf", "onnx"}, 10**9)[0] == "gguf"
    assert choose_build(out / "manifest.json", {"onnx"}, 10**9) == ("onnx", out / "onnx-int8")


def test_rejection_sets_the_exit_code_unless_degraded_is_allowed(tiny, tmp_path):
    strict = ("--targets", "onnx", "--quant", "onnx=int8", "--max-kl", "0", "--no-progress")
    folder = str(tiny.hf_folder("gemma3"))  # its int8 build passes the default gate (see above)
    assert run_convert(_args(folder, "--out", str(tmp_path / "a"), *strict)) == EXIT_REJECTED
    assert run_convert(_args(folder, "--out", str(tmp_path / "b"), *strict, "--allow-degraded")) == EXIT_OK
    build = read_manifest(tmp_path / "b").builds[0]
    assert build.status == "rejected" and build.gate.failures == [f"mean KL {build.gate.mean_kl:.4f} > 0.0"]


def test_bad_arguments_fail_cleanly(tiny, tmp_path, capsys):
    folder = str(tiny.hf_folder("llama"))
    assert run_convert(_args(folder, "--out", str(tmp_path), "--targets", "tflite")) == EXIT_FAILED
    assert "unknown target 'tflite'; known: gguf, onnx, coreml" in capsys.readouterr().err
    assert run_convert(_args(str(tmp_path / "missing"), "--out", str(tmp_path))) == EXIT_FAILED
    assert "not a Hugging Face folder or a .gguf file" in capsys.readouterr().err


def test_parse_quant_accepts_repeats_and_semicolons():
    assert parse_quant(["gguf=Q8_0,Q4_K_M;onnx=int8", "onnx=fp32"]) == {"gguf": ["Q8_0", "Q4_K_M"],
                                                                       "onnx": ["int8", "fp32"]}
    with pytest.raises(UnknownPresetError):
        parse_quant(["gguf"])


def test_importing_converters_stays_light():
    code = ("import converters, converters.cli, sys; "
            "print(json.dumps(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'coremltools', 'llama_cpp', "
            "'transformers') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True)
    assert json.loads(result.stdout) == []


def test_run_uses_the_best_accepted_build_of_a_manifest(converted):
    _, out = converted
    completed = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", "hello", "--model",
                                str(out / "manifest.json"), "--max-tokens", "4", "--json"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    record = json.loads(completed.stdout)
    assert 1 <= record["usage"]["completion_tokens"] <= 4
    assert all(token["logprob"] <= 0 for token in record["tokens"])
    too_small = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", "hello", "--model",
                                str(out / "manifest.json"), "--memory-budget", "1000"],
                               capture_output=True, text=True, timeout=120)
    assert too_small.returncode == 2 and "manifest.json" in too_small.stderr
    assert "Traceback" not in too_small.stderr
