"""edge_runtime.backends.onnx on tiny builds: greedy equality with torch, log-probabilities, sampling, errors,
and the backend contract (no grammar: a constrained request is refused by name, over HTTP a 400; counters).

Each behaviour runs on both layouts: a GenAI folder (``fp32``, through onnxruntime-genai) and the portable
explicit-KV graph (``portable-fp32``, through onnxruntime). The tiny builds come from the converters' session
fixture ``tiny`` (``tests/conftest.py``); this tests ``edge_runtime/backends/onnx.py`` and ``onnx_genai.py``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.backends import Backend, load_backend
from edge_runtime.backends.base import SamplingParams
from edge_runtime.backends.onnx import OnnxBackend
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import ModelFileError

SETTINGS = LoadSettings(n_ctx=256, n_threads=1)
PROMPT = "The quick brown fox jumps over the"


def _never() -> bool:
    return False


@pytest.fixture(scope="module", params=["fp32", "portable-fp32"])
def backends(tiny, request):
    loaded = {arch: OnnxBackend.load(tiny.build(arch, "onnx", request.param), SETTINGS)
              for arch in ("llama", "gemma3")}
    expected = "OnnxGenaiBackend" if request.param == "fp32" else "OnnxBackend"
    assert {type(backend).__name__ for backend in loaded.values()} == {expected}
    yield loaded
    for backend in loaded.values():
        backend.close()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_greedy_matches_the_torch_reference(tiny, backends, arch):
    from converters.model import greedy_tokens

    backend = backends[arch]
    ids = backend.tokenize(PROMPT)
    steps = list(backend.generate_tokens(ids, SamplingParams(max_tokens=12), _never))
    expected = greedy_tokens(tiny.source(arch).reference_model(), ids, 12)
    assert [s.token_id for s in steps if not s.is_end_of_generation] == expected[:len(steps)]
    assert len(steps) == 12 or steps[-1].is_end_of_generation


def test_logprobs_come_from_the_last_logits_row(tiny, backends):
    import torch

    from converters.model import full_logits

    backend = backends["llama"]
    ids = backend.tokenize(PROMPT)
    step = next(iter(backend.generate_tokens(ids, SamplingParams(max_tokens=1, top_logprobs=3), _never)))
    expected = torch.log_softmax(full_logits(tiny.source("llama").reference_model(), ids)[-1], -1)
    assert step.logprob == pytest.approx(float(expected[step.token_id]), abs=1e-4)
    assert [t for t, _ in step.top] == expected.topk(3).indices.tolist()
    assert step.top[0][0] == step.token_id and step.top[0][1] >= step.top[1][1] >= step.top[2][1]


def test_sampling_is_reproducible_with_a_seed(backends):
    backend = backends["gemma3"]
    ids = backend.tokenize(PROMPT)
    run = lambda seed: [s.token_id for s in backend.generate_tokens(  # noqa: E731
        ids, SamplingParams(temperature=1.5, top_p=0.95, top_k=50, seed=seed, max_tokens=16), _never)]
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_should_abort_stops_between_tokens(backends):
    calls = []

    def abort_after_three() -> bool:
        calls.append(1)
        return len(calls) > 3

    backend = backends["llama"]
    steps = list(backend.generate_tokens(backend.tokenize(PROMPT), SamplingParams(max_tokens=50), abort_after_three))
    assert 1 <= len(steps) <= 3


def test_prefix_reuse_keeps_results_identical(backends):
    backend = backends["llama"]
    ids = backend.tokenize(PROMPT)
    first = [s.token_id for s in backend.generate_tokens(ids, SamplingParams(max_tokens=5), _never)]
    assert len(backend.cached_tokens) > len(ids)
    second = [s.token_id for s in backend.generate_tokens(ids, SamplingParams(max_tokens=5), _never)]
    assert first == second


def test_score_continuations_matches_torch(tiny, backends):
    import torch

    from converters.model import full_logits

    backend = backends["gemma3"]
    prefix, continuation = backend.tokenize("The capital of"), backend.tokenize(" France is", add_special=False)
    scores = backend.score_continuations(prefix, [continuation, continuation[:1]])
    logprobs = torch.log_softmax(full_logits(tiny.source("gemma3").reference_model(), prefix + continuation), -1)
    expected = [float(logprobs[len(prefix) - 1 + i, t]) for i, t in enumerate(continuation)]
    assert np.allclose(scores[0], expected, atol=1e-4) and np.allclose(scores[1], expected[:1], atol=1e-4)


def test_token_pieces_rebuild_the_text(backends):
    for backend in backends.values():
        ids = backend.tokenize("héllo wörld, the fox", add_special=False)
        assert b"".join(backend.token_piece(i) for i in ids).decode() == "héllo wörld, the fox"
        assert backend.token_piece(backend.tokenizer.bos_token_id) == b""


def test_protocol_registry_and_int8_build_load(tiny):
    backend = load_backend("onnx", tiny.build("gemma3", "onnx", "int8") / "model.onnx", SETTINGS)
    assert isinstance(backend, Backend) and backend.format == "onnx" and backend.n_vocab == 400
    assert len(list(backend.generate_tokens(backend.tokenize(PROMPT), SamplingParams(max_tokens=3), _never))) == 3
    backend.close()


def test_missing_and_corrupt_files_raise_model_file_error(tiny, tmp_path):
    import shutil

    with pytest.raises(ModelFileError, match="no such file"):
        OnnxBackend.load(tmp_path / "nothing", SETTINGS)
    broken = tmp_path / "broken"
    for preset in ("fp32", "portable-fp32"):
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(tiny.build("llama", "onnx", preset), broken)
        (broken / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
        with pytest.raises(ModelFileError, match=r"onnxruntime(-genai)? cannot load"):
            OnnxBackend.load(broken, SETTINGS)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match="tokenizer.json"):
        OnnxBackend.load(broken, SETTINGS)


def test_backend_module_does_not_import_torch():
    code = "import edge_runtime.backends.onnx, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# -- the backend contract ----------------------------------------------------------------------------------------
def test_declares_no_grammar_no_prefix_store_one_request_at_a_time(backends):
    from edge_runtime.backends.base import Capabilities

    for backend in backends.values():
        assert backend.capabilities == Capabilities() and backend.ready
        assert not backend.capabilities.grammar and not backend.capabilities.concurrent


def test_stats_after_a_real_generation_name_this_process_and_no_counters(backends):
    import os

    backend = backends["llama"]
    assert len(list(backend.generate_tokens(backend.tokenize(PROMPT), SamplingParams(max_tokens=2), _never))) == 2
    stats = backend.stats()
    assert stats.queue_depth is None and stats.prefix_cache is None
    assert (stats.engine_pid, stats.engine_state, dict(stats.engine_restarts)) == (os.getpid(), "ready", {})


@pytest.fixture(scope="module")
def onnx_runtime(tiny):
    from edge_runtime.runtime import Runtime

    with Runtime.load(tiny.build("llama", "onnx", "fp32"), settings=SETTINGS, backend="onnx") as runtime:
        yield runtime


def test_the_runtime_refuses_a_grammar_naming_the_backend(onnx_runtime):
    from edge_runtime.errors import UnsupportedCapabilityError

    with pytest.raises(UnsupportedCapabilityError, match="the onnx backend does not support grammar") as refused:
        onnx_runtime.generate(PROMPT, max_tokens=3, grammar='root ::= "yes" | "no"')
    assert (refused.value.backend, refused.value.capability) == ("onnx", "grammar")
    assert onnx_runtime.cache_prefix(PROMPT) == 0
    assert onnx_runtime.generate(PROMPT, max_tokens=3).usage.completion_tokens >= 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_response_format_on_onnx_is_a_400_over_http(onnx_runtime, stream):
    """The server turns the JSON response format into a grammar; ONNX cannot honour one: a clear 400, not an
    unconstrained answer."""
    import httpx

    from benchmarks.served import build_server, running

    built = build_server(onnx_runtime, base_url=None)
    with running(built.app) as url, httpx.Client(base_url=url, timeout=60) as http:
        response = http.post("/v1/chat/completions", headers={"X-Edge-Route": "local"}, json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": stream,
            "response_format": {"type": "json_object"}})
        assert response.status_code == 400
        error = response.json()["error"]
        assert "onnx backend does not support grammar" in error["message"]
        assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_capability"
        plain = http.post("/v1/chat/completions", headers={"X-Edge-Route": "local"}, json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert plain.status_code == 200
