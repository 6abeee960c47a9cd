"""The middle layer's hidden state beside the final one (``LoadSettings.middle_layer``): a tapped engine records
both in the decodes that record hidden states, changes neither the tokens nor the final states, reads the layer
it names (checked against a whole-prompt prefill of another context), and hands the pair through the engine's
child process, the batched backend, eval's answers and the server's probe signals alike."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime

PROMPT = "Q: What is the capital of France?\nA: Paris\n\nQ: Which language did Goethe write in?\nA:"
BASE = dict(flash_attn=False, speculative=False, prefix_cache=False, n_threads=1)


@pytest.fixture(scope="module")
def tapped(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(middle_layer=True, **BASE), isolation="none") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def plain(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(**BASE), isolation="none") as loaded:
        yield loaded


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def apart(a: np.ndarray, b: np.ndarray) -> float:
    """How far ``a`` is from ``b``, relative to ``b``'s size (a middle layer's states share a few huge
    dimensions, so their cosines are all near 1)."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def prefill_states(backend, prompt_ids) -> np.ndarray:
    """Every prompt position's middle-layer output from a separate tapped context, whole prompt in one batch."""
    import llama_cpp

    from edge_runtime.backends.hidden_state import middle_tap, set_embeddings
    from edge_runtime.backends.llamacpp_native import NativeBatch, NativeContext

    context = NativeContext(backend.model, n_ctx=256, n_batch=128, n_threads=1, flash_attn=False,
                            n_outputs_max=128, tap=middle_tap(backend.model))
    batch = NativeBatch(128)
    try:
        set_embeddings(context, True)
        batch.fill(list(prompt_ids), 0)
        context.decode(batch)
        set_embeddings(context, False)
        assert llama_cpp.llama_get_embeddings_ith(context.pointer, -1)
        return context.tap.rows
    finally:
        batch.close()
        context.close()


def test_the_tap_reads_the_layer_at_sixty_percent_depth():
    from edge_runtime.backends.hidden_state import middle_layer

    assert middle_layer(18) == 10 and middle_layer(26) == 15 and middle_layer(1) == 0


def test_a_llama_cpp_build_without_ggmls_symbols_is_a_clear_error(monkeypatch):
    import ctypes
    import ctypes.util

    from edge_runtime.backends import hidden_state
    from edge_runtime.backends.llama_bindings import llama_cpp
    from edge_runtime.errors import BackendError

    monkeypatch.setattr(llama_cpp, "_lib", ctypes.CDLL(ctypes.util.find_library("m")))  # libm: no ggml in it
    with pytest.raises(BackendError, match="middle_layer"):
        hidden_state.LayerTap(10, 640)


def test_a_tapped_engine_records_both_states_and_changes_neither_tokens_nor_final_states(tapped, plain):
    with_tap = tapped.generate(PROMPT, max_tokens=6, top_logprobs=2, record_hidden=3).tokens
    without = plain.generate(PROMPT, max_tokens=6, top_logprobs=2, record_hidden=3).tokens
    assert [t.token_id for t in with_tap] == [t.token_id for t in without]
    assert np.allclose([t.logprob for t in with_tap], [t.logprob for t in without], atol=1e-3)
    recorded = [t.hidden for t in with_tap if t.hidden is not None]
    assert len(recorded) == 4 and all(np.shape(state) == (2, 640) for state in recorded)
    assert all(np.shape(t.hidden) == (640,) for t in without if t.hidden is not None)
    for state, final in zip(recorded, [t.hidden for t in without if t.hidden is not None]):
        assert cosine(state[0], final) > 0.999  # the final state is the untapped engine's
        assert cosine(state[1], state[0]) < 0.9  # the middle layer's is another state
    assert tapped.generate(PROMPT, max_tokens=2).tokens[0].hidden is None  # nothing recorded unless asked


def test_the_middle_state_is_the_models_own_at_that_layer(tapped):
    backend = tapped.backend
    ids = backend.tokenize(PROMPT)
    state = backend.hidden_after(ids)
    reference = prefill_states(backend, ids)
    other = prefill_states(backend, backend.tokenize(PROMPT.replace("Goethe", "Dante")))
    assert state.shape == (2, 640) and reference.shape == (len(ids), 640)
    assert apart(state[1], reference[-1]) < 0.01 < 0.02 < apart(state[1], other[-1])  # Goethe -> Dante: 0.046
    assert apart(state[1], reference[-2]) > 0.1  # the last position's, not its neighbour's


def test_the_engine_child_and_the_batched_backend_hand_both_states_through(bundled_path, tapped):
    from edge_runtime.backends.base import SamplingParams
    from edge_runtime.backends.llamacpp_batched import BatchedLlamaCppBackend

    alone = tapped.generate(PROMPT, max_tokens=3, record_hidden=1).tokens
    with Runtime.load(bundled_path, settings=LoadSettings(middle_layer=True, **BASE), isolation="process") as child:
        assert type(child.backend).__name__ != type(tapped.backend).__name__  # the engine's child process
        through_pipe = child.generate(PROMPT, max_tokens=3, record_hidden=1).tokens
    settings = LoadSettings(n_ctx=1024, n_parallel=2, middle_layer=True, **BASE)
    batched = BatchedLlamaCppBackend.load(bundled_path, settings)
    try:
        steps = list(batched.generate_tokens(batched.tokenize(PROMPT), SamplingParams(max_tokens=3, record_hidden=1),
                                             lambda: False))
    finally:
        batched.close()
    for tokens in (through_pipe, steps):
        states = [t.hidden for t in tokens if t.hidden is not None]
        assert len(states) == 2 and all(np.shape(state) == (2, 640) for state in states)
        assert all(cosine(s[1], a.hidden[1]) > 0.99 for s, a in zip(states, alone))


def test_eval_keeps_the_middle_states_and_reads_them_as_the_server_does(tapped):
    from edge_runtime.evaluation.answerer import LocalAnswerer
    from fallback.early_request import hidden_signals, needs_middle_layer
    from fallback.probe import Probe
    from fallback.tasks import TaskItem

    item = TaskItem(id="1", task="languages", prompt=PROMPT, answer="German", stop=["\n"])
    answer = LocalAnswerer(tapped).answer(item)
    tapped.backend.record_hidden(None)
    tokens = tapped.generate(PROMPT, max_tokens=64, stop=["\n"], record_hidden=4).tokens
    assert len(answer.hidden_middle) == len(answer.hidden_tokens) + 1
    rng = np.random.default_rng(2)
    probes = [Probe(source, list(rng.normal(size=640) / 25), 0.1) for source in ("last", "middle")]
    calibrator = SimpleNamespace(extra={"probes": [probe.to_dict() for probe in probes]})
    assert needs_middle_layer(calibrator)
    for count in (1, 2, None):
        served = hidden_signals(calibrator, tokens, count)
        evaluated = {probe.signal: probe.logit(answer.hidden(probe.source, count)) for probe in probes}
        # eval keeps states as float16: the middle layer's large values (hundreds) round to 1e-3 of themselves
        assert all(abs(served[name] - evaluated[name]) < 0.05 + 1e-3 * abs(served[name]) for name in evaluated), \
            (count, served, evaluated)
    assert abs(evaluated["probe_middle"] - evaluated["probe_last"]) > 1e-3  # two states, two readings
    untapped = [SimpleNamespace(hidden=t.hidden[0] if t.hidden is not None else None) for t in tokens]
    assert hidden_signals(calibrator, untapped) == {}  # an engine without the tap: no probe decision


def test_a_label_answer_keeps_the_middle_state_after_its_label(tapped):
    from edge_runtime.evaluation.answerer import LocalAnswerer
    from fallback.tasks import TaskItem

    item = TaskItem(id="2", task="lang", prompt=PROMPT, answer="German", choices=["German", "French"])
    answer = LocalAnswerer(tapped).answer(item)
    tapped.backend.record_hidden(None)
    said = tapped.backend.hidden_after(tapped.backend.tokenize(PROMPT + " " + answer.answer))
    assert cosine(answer.hidden("middle"), said[1]) > 0.99 and cosine(answer.hidden("answer"), said[0]) > 0.99
    assert cosine(answer.hidden("middle"), answer.hidden("answer")) < 0.9


def test_the_server_taps_the_engine_only_for_a_calibration_that_reads_the_middle_layer(tmp_path):
    from edge_runtime.server.build import _reads_middle_layer
    from edge_runtime.server.settings import ServerSettings
    from fallback.calibration import Calibrator

    from fallback.probe import Probe

    def calibration(sources):
        calibrator = Calibrator("platt", ["mean_logprob"], [0.0], [1.0], [1.0])
        calibrator.extra["probes"] = [Probe(source, [0.01] * 640, 0.0).to_dict() for source in sources]
        path = calibrator.save(tmp_path / f"{'-'.join(sources)}.json")
        assert json.loads(path.read_text())  # a real file, loaded as the server loads it
        return path

    assert _reads_middle_layer(ServerSettings(calibration=calibration(["last", "middle"])))
    assert not _reads_middle_layer(ServerSettings(calibration=calibration(["last"])))
    assert not _reads_middle_layer(ServerSettings())
