"""GenAI folders: what the converter writes loads in onnxruntime-genai, and its own loop agrees with our backend.

The interop tests drive onnxruntime-genai directly (``og.Model`` / ``og.Generator`` / ``generate_next_token``)
next to ``edge_runtime.backends.onnx``, on the tiny models here and on the bundled model (``slow``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters import onnx_genai
from edge_runtime.backends import onnx as onnx_backend
from edge_runtime.backends.base import SamplingParams
from edge_runtime.backends.onnx import OnnxBackend
from edge_runtime.backends.onnx_providers import choose_genai_name, choose_ort_providers, wanted_provider
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendUnavailableError, InvalidRequestError

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (the onnx extra has it)")

SETTINGS = LoadSettings(n_ctx=256, n_threads=1)
PROMPT = "The quick brown fox jumps over the lazy dog near the quiet river bank."


def _never() -> bool:
    return False


def genai_greedy(folder, prompt_ids: list[int], count: int) -> list[int]:
    """onnxruntime-genai's own greedy loop, as an app on the GenAI SDK would run it."""
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    window = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"].get("sliding_window", {})
    params.set_search_options(max_length=max(len(prompt_ids) + count, window.get("window_size", 0)), do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    out = []
    while len(out) < count and not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def our_greedy(folder, prompt_ids: list[int], count: int, settings: LoadSettings = SETTINGS) -> list[int]:
    backend = OnnxBackend.load(folder, settings)
    try:
        return [s.token_id for s in backend.generate_tokens(prompt_ids, SamplingParams(max_tokens=count), _never)]
    finally:
        backend.close()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("preset", ["int4", "int8", "fp32"])
def test_folder_loads_in_genai_and_its_loop_matches_our_backend(tiny, arch, preset):
    folder = tiny.build(arch, "onnx", preset)
    config = json.loads((folder / "genai_config.json").read_text())
    assert config["model"]["type"] == {"llama": "llama", "gemma3": "gemma3_text"}[arch]
    assert {"model.onnx", "model.onnx.data", "tokenizer.json", "edge_model.json"} <= {p.name for p in folder.iterdir()}
    ids = tiny.tokenizer(arch).tokenize(PROMPT)
    theirs = genai_greedy(folder, ids, 16)
    assert len(theirs) == 16 and our_greedy(folder, ids, 16) == theirs


def test_logprobs_are_genai_logits_log_softmaxed(tiny):
    folder = tiny.build("llama", "onnx", "int4")
    ids = tiny.tokenizer("llama").tokenize(PROMPT)
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=64)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    logits = generator.get_logits()[0, -1].astype(np.float64)
    expected = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    backend = OnnxBackend.load(folder, SETTINGS)
    step = next(iter(backend.generate_tokens(ids, SamplingParams(max_tokens=1, top_logprobs=3), _never)))
    backend.close()
    assert np.isfinite(step.logprob) and step.token_id == int(np.argmax(logits))
    assert step.logprob == pytest.approx(expected[step.token_id], abs=1e-5)
    assert [t for t, _ in step.top] == list(np.argsort(-expected)[:3])


def test_fp32_folder_is_the_torch_reference_and_gated_accepted(tiny):
    from converters.gate import evaluate
    from converters.manifest import GateThresholds
    from converters.onnx import scorer

    for arch in ("llama", "gemma3"):
        candidate = scorer(tiny.build(arch, "onnx", "fp32"), tiny.source(arch))
        result = evaluate(candidate, tiny.gate_set(arch), GateThresholds())
        candidate.close()
        assert result.failures == [] and result.top1_agreement == 1.0 and result.mean_kl < 1e-6


def test_rewinding_past_a_sliding_window_restarts_with_identical_results(tiny):
    """Gemma 3's windowed cache cannot rewind to a position it evicted: the backend prefills afresh."""
    folder = tiny.build("gemma3", "onnx", "fp32")
    tokenizer = tiny.tokenizer("gemma3")
    first, second = tokenizer.tokenize(PROMPT), tokenizer.tokenize("The quick brown fox sat by the fire.")
    backend = OnnxBackend.load(folder, SETTINGS)

    def greedy(ids):
        return [s.token_id for s in backend.generate_tokens(ids, SamplingParams(max_tokens=6), _never)]

    greedy(first)
    assert len(backend.cached_tokens) > 24  # beyond window (8) + the CPU cache's slack
    evicted = backend.generator
    reused = greedy(second)
    assert backend.generator is not evicted  # rewinding failed, a fresh generator prefilled again
    scores = backend.score_continuations(first, [second[1:6], second[1:2]])
    backend.close()
    assert reused == our_greedy(folder, second, 6)
    fresh = OnnxBackend.load(folder, SETTINGS)
    expected = fresh.score_continuations(first, [second[1:6], second[1:2]])
    assert [len(row) for row in scores] == [5, 1]
    assert all(np.allclose(got, want, atol=1e-5) for got, want in zip(scores, expected))
    fresh.close()


def test_plain_onnxruntime_runs_a_genai_folder_when_genai_is_missing(tiny, monkeypatch):
    """The fallback feeds the GenAI graph's attention mask itself; a sliding-window graph needs GenAI."""
    monkeypatch.setattr(onnx_backend, "genai_available", lambda: False)
    llama = tiny.build("llama", "onnx", "fp32")
    ids = tiny.tokenizer("llama").tokenize(PROMPT)
    backend = OnnxBackend.load(llama, SETTINGS)
    assert type(backend) is OnnxBackend and backend.execution_provider == "CPUExecutionProvider"
    backend.close()
    assert our_greedy(llama, ids, 12) == genai_greedy(llama, ids, 12)
    with pytest.raises(BackendUnavailableError, match="sliding-window KV cache is managed by onnxruntime-genai"):
        OnnxBackend.load(tiny.build("gemma3", "onnx", "fp32"), SETTINGS)


def test_a_genai_folder_without_our_metadata_still_loads(tiny, tmp_path):
    import shutil

    folder = tmp_path / "foreign"
    shutil.copytree(tiny.build("llama", "onnx", "int8"), folder)
    (folder / "edge_model.json").unlink()
    ids = tiny.tokenizer("llama").tokenize(PROMPT)
    assert our_greedy(folder, ids, 8) == genai_greedy(folder, ids, 8)


def test_hf_intermediate_reloads_as_the_same_model(tiny, tmp_path):
    import torch

    from converters.source import load_source

    for arch in ("llama", "gemma3"):
        source = tiny.source(arch)
        again = load_source(onnx_genai.write_hf_intermediate(source, tmp_path / arch), tmp_path / "work")
        assert again.config == source.config
        weights = again.weights()
        assert weights.keys() == source.weights().keys()
        assert all(torch.equal(weights[name], tensor) for name, tensor in source.weights().items())


def genai_sequence_logprob(folder, ids: list[int], start: int) -> float:
    """log P(ids[start:] | ids[:start]) from onnxruntime-genai's logits, one token at a time."""
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 1)  # llama: no sliding window
    generator = og.Generator(model, params)
    total = 0.0
    for position, token in enumerate(ids):
        if position >= start:
            logits = generator.get_logits()[0, -1].astype(np.float64)
            total += logits[token] - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        generator.append_tokens(np.asarray([token], dtype=np.int32))
    return total


def test_runtime_policy_on_a_genai_build(tiny):
    """Stop strings, the output cap, deadlines and label scoring through ``Runtime`` on a GenAI folder."""
    from edge_runtime.runtime import Runtime

    folder = tiny.build("llama", "onnx", "int8")
    with Runtime.load(str(folder), settings=SETTINGS) as runtime:
        assert type(runtime.backend).__name__ == "OnnxGenaiBackend"
        full = runtime.generate(PROMPT, max_tokens=12)
        assert full.finish_reason == "length" and len(full.tokens) == 12
        assert all(np.isfinite(token.logprob) and token.logprob <= 0 for token in full.tokens)
        stop = next(token.text for token in full.tokens[2:] if token.text.strip())
        stopped = runtime.generate(PROMPT, max_tokens=12, stop=[stop])
        assert stopped.finish_reason == "stop" and stopped.text == full.text[:full.text.index(stop)]
        assert runtime.generate(PROMPT, max_tokens=50, total_deadline_s=1e-6).finish_reason == "deadline"
        choices = ["Paris", "Rome", "a city"]
        scores = runtime.score_choices("The capital of France is", choices)
        ids = [runtime.backend.tokenize("The capital of France is " + choice) for choice in choices]
        shared = len(runtime.backend.tokenize("The capital of France is"))
    assert sum(scores.probabilities) == pytest.approx(1.0)
    assert all(ids_[:shared] == ids[0][:shared] for ids_ in ids)
    expected = [genai_sequence_logprob(folder, ids_, shared) for ids_ in ids]
    assert np.allclose(scores.logprobs, expected, atol=1e-4)


def test_execution_provider_choice():
    assert choose_ort_providers(["CPUExecutionProvider"], "linux", "") == ["CPUExecutionProvider"]
    assert choose_ort_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], "linux", "") == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_ort_providers(["DmlExecutionProvider", "CPUExecutionProvider"], "linux", "") == \
        ["CPUExecutionProvider"]
    assert choose_ort_providers(["CPUExecutionProvider"], "linux", "cpu") == ["CPUExecutionProvider"]
    # onnxruntime-genai's CPU wheel reports WebGPU as available without a GPU: never picked automatically
    assert choose_genai_name(cuda=False, dml=False, ort_available=["CPUExecutionProvider"], platform="linux",
                             override="") == "cpu"
    assert choose_genai_name(True, False, ["CUDAExecutionProvider", "CPUExecutionProvider"], "linux", "") == "cuda"
    assert choose_genai_name(True, False, ["CPUExecutionProvider"], "linux", "") == "cpu"
    assert choose_genai_name(False, True, ["CPUExecutionProvider"], "win32", "") == "dml"
    assert choose_genai_name(False, False, [], "linux", "webgpu") == "WebGPU"
    with pytest.raises(InvalidRequestError, match="known providers: cuda, dml"):
        wanted_provider("tpu")


# --- the bundled model (slow) ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled_int8(tmp_path_factory):
    from converters import onnx as onnx_target
    from converters.source import load_source
    from edge_runtime.models import bundled_model_path

    work = tmp_path_factory.mktemp("bundled-genai")
    source = load_source(bundled_model_path(), work)
    folder, _ = onnx_target.build(source, "int8", work / "onnx-int8", work)
    return folder


@pytest.mark.slow
def test_bundled_int8_folder_genai_loop_matches_our_backend(bundled_int8):
    from edge_runtime.backends.json_tokenizer import JsonTokenizer, read_edge_metadata

    assert og.Model(str(bundled_int8)).type == "gemma3_text"
    tokenizer = JsonTokenizer(bundled_int8 / "tokenizer.json", read_edge_metadata(bundled_int8))
    ids = tokenizer.tokenize("The capital of France is Paris. The capital of Italy is")
    theirs = genai_greedy(bundled_int8, ids, 24)
    ours = our_greedy(bundled_int8, ids, 24, LoadSettings(n_ctx=256, n_threads=2))  # below the 512 window
    assert len(theirs) == 24 and ours == theirs
