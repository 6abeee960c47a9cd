"""``Runtime.load(..., isolation="process")``: the same answers as in-process, and a crash is a typed error."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.errors import EngineCrashedError, PromptTooLongError
from edge_runtime.runtime import Runtime

PROMPT = "Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Italy?\nA:"
SETTINGS = LoadSettings(n_ctx=1024, speculative=False)


@pytest.fixture(scope="module")
def isolated(bundled_path):
    with Runtime.load(bundled_path, settings=SETTINGS, isolation="process") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def in_process(bundled_path):
    with Runtime.load(bundled_path, settings=SETTINGS) as loaded:
        yield loaded


def wait_ready(runtime, timeout_s: float = 60.0) -> None:
    """Waits for the engine, then lets it decode past its early window (a kill then is not blamed on its
    native configuration)."""
    deadline = time.monotonic() + timeout_s
    while not runtime.ready:
        assert time.monotonic() < deadline, "the engine did not come back"
        time.sleep(0.05)
    if runtime.backend.engine().steps_served < 12:
        runtime.generate("Once upon a time", max_tokens=12)


def test_the_engine_runs_in_a_child_process(isolated):
    pid = isolated.backend.engine_pid
    assert pid is not None and pid != os.getpid()
    os.kill(pid, 0)  # it exists


def test_greedy_tokens_and_logprobs_match_in_process(isolated, in_process):
    ours = isolated.generate(PROMPT, max_tokens=8, top_logprobs=3, stop=["\n"])
    theirs = in_process.generate(PROMPT, max_tokens=8, top_logprobs=3, stop=["\n"])
    assert ours.text == theirs.text and ours.finish_reason == theirs.finish_reason
    assert [t.token_id for t in ours.tokens] == [t.token_id for t in theirs.tokens]
    assert [t.logprob for t in ours.tokens] == pytest.approx([t.logprob for t in theirs.tokens], abs=1e-5)
    assert [[a.text for a in t.top] for t in ours.tokens] == [[a.text for a in t.top] for t in theirs.tokens]


def test_score_choices_and_caps_cross_the_process_boundary(isolated, in_process):
    prompt = "Review: a wonderful film.\nSentiment:"
    ours = isolated.score_choices(prompt, ["positive", "negative"])
    assert ours.probabilities == pytest.approx(in_process.score_choices(prompt, ["positive", "negative"]).probabilities,
                                               abs=1e-5)
    capped = Runtime(isolated.backend, isolated.model, isolated.caps.model_copy(update={"max_input_tokens": 4}), 0)
    with pytest.raises(PromptTooLongError):
        capped.generate(PROMPT, max_tokens=2)


def test_a_deadline_stops_the_child_and_the_next_request_is_served(isolated):
    started = time.perf_counter()
    result = isolated.generate("Once upon a time", max_tokens=400, total_deadline_s=0.3)
    assert result.finish_reason == "deadline" and time.perf_counter() - started < 2.0
    # a stream closed early (cancellation) leaves the engine usable
    stream = isolated.stream("Once upon a time", max_tokens=400)
    next(iter(stream))
    stream.close()
    assert isolated.generate(PROMPT, max_tokens=3).usage.completion_tokens == 3


def test_a_crash_mid_generation_is_a_typed_error_and_the_engine_comes_back(isolated):
    wait_ready(isolated)
    pid = isolated.backend.engine_pid
    stream = isolated.stream("Once upon a time", max_tokens=400)
    events = iter(stream)
    next(events)
    os.kill(pid, signal.SIGSEGV)
    with pytest.raises(EngineCrashedError, match="SIGSEGV") as caught:
        for _ in events:
            pass
    assert caught.value.cause == "SIGSEGV"
    wait_ready(isolated)
    assert isolated.backend.engine_pid != pid and isolated.backend.restarts["SIGSEGV"] >= 1
    assert isolated.generate(PROMPT, max_tokens=3).usage.completion_tokens == 3


def test_requests_arriving_during_a_restart_wait_for_it(isolated):
    wait_ready(isolated)
    os.kill(isolated.backend.engine_pid, signal.SIGKILL)
    while isolated.ready:
        time.sleep(0.01)
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(isolated.generate(PROMPT, max_tokens=2)))
    waiter.start()
    waiter.join(timeout=60)
    assert answers and answers[0].usage.completion_tokens == 2


def test_a_fresh_engine_that_crashes_restarts_one_step_down_and_remembers(bundled_path, native_verdicts):
    from edge_runtime.engine.probe import cached_choice

    settings = LoadSettings(n_ctx=512, n_parallel=2, prefix_cache=False)
    with Runtime.load(bundled_path, settings=settings, isolation="process") as fresh:
        before = fresh.backend.settings
        os.kill(fresh.backend.engine_pid, signal.SIGSEGV)  # before any decode: blamed on the configuration
        while fresh.ready:
            time.sleep(0.01)
        wait_ready(fresh)
        after = fresh.backend.settings
        assert (after.extra_buffers, after.flash_attn) != (before.extra_buffers, before.flash_attn)
        assert any("SIGSEGV" in note for note in fresh.notes)
        assert any("SIGSEGV" in note for note in fresh.generate(PROMPT, max_tokens=2).notes)
    # the verdict is kept (in this session's verdict file): plan / models read it without probing
    remembered = cached_choice(bundled_path, settings)
    assert any("SIGSEGV" in note for note in remembered["notes"]) and remembered["status"] == "probe passed"


def test_hidden_states_cross_the_process_boundary(isolated, bundled_path):
    """A request that records hidden states gets the same vectors from the engine's child process as in
    process (a probe's calibration reads them in the server), on the tokens they were chosen from."""
    import numpy as np

    assert isolated.backend.capabilities.hidden_states
    # weights as stored on both sides: repacked ones make a state depend on the batch's shape, and the batched
    # engine decodes the recorded rows in batches of their own (0.3 apart on an AVX-512 Xeon without AMX)
    same = SETTINGS.model_copy(update={"extra_buffers": False})
    with Runtime.load(bundled_path, settings=same) as local, \
            Runtime.load(bundled_path, settings=same, isolation="process") as child:
        here = local.generate(PROMPT, max_tokens=5, record_hidden=2).tokens
        there = child.generate(PROMPT, max_tokens=5, record_hidden=2).tokens
    assert [t.token_id for t in there] == [t.token_id for t in here]
    assert [t.hidden is not None for t in there] == [True, True, True, False, False]
    for mine, theirs in zip(here[:3], there[:3]):
        assert theirs.hidden.shape == (640,) and np.allclose(theirs.hidden, mine.hidden, atol=1e-3)
    assert isolated.generate(PROMPT, max_tokens=3).tokens[0].hidden is None  # nothing unless asked


