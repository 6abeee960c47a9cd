"""Unit tests of the pure parts: stop scanning, request checks, sampling maths, chat rendering, deadlines."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_runtime import requests as checks
from edge_runtime import sampling
from edge_runtime.backends.base import SamplingParams
from edge_runtime.chat import render_chat, render_plain
from edge_runtime.deadlines import Deadlines
from edge_runtime.errors import InvalidRequestError
from edge_runtime.stopping import StopScanner


def _scan(pieces: list[bytes], stops: tuple[str, ...]) -> tuple[str, bool]:
    scanner = StopScanner(stops)
    text = "".join(scanner.feed(piece) for piece in pieces)
    return text + scanner.flush(), scanner.stopped


def test_stop_sequence_spanning_tokens_is_cut_and_never_released():
    scanner = StopScanner(("END",))
    released = [scanner.feed(piece) for piece in [b"abc E", b"N", b"D tail"]]
    assert released == ["abc ", "", ""]
    assert scanner.stopped


def test_partial_stop_prefix_is_released_when_it_cannot_complete():
    assert _scan([b"a\xe2\x82", b"\xac E", b"x"], ("END",)) == ("a\u20ac Ex", False)


def test_earliest_of_several_stops_wins():
    assert _scan([b"one two three"], ("three", "two")) == ("one ", True)


def test_utf8_split_across_tokens_is_joined():
    euro = "\u20ac".encode()
    assert _scan([euro[:1], euro[1:2], euro[2:]], ()) == ("\u20ac", False)


@pytest.mark.parametrize("prompt", ["", b"\xff\xfeabc", "\ud800 lone surrogate", 42, None])
def test_bad_prompts_are_rejected(prompt):
    with pytest.raises(InvalidRequestError):
        checks.prompt_text(prompt)


def test_bytes_prompt_decodes():
    assert checks.prompt_text("caf\u00e9".encode()) == "caf\u00e9"


@pytest.mark.parametrize("max_tokens", [0, -5, 10**9, 1.5, True, "8"])
def test_bad_max_tokens(max_tokens):
    with pytest.raises(InvalidRequestError):
        checks.max_tokens_value(max_tokens, 2048)


@pytest.mark.parametrize("stop", [5, [1], [""], b"x", ["a"] * 17])
def test_bad_stop(stop):
    with pytest.raises(InvalidRequestError):
        checks.stop_sequences(stop)


@pytest.mark.parametrize("values", [(-0.1, 1.0, 0, 0), (0.5, 0.0, 0, 0), (0.5, 1.5, 0, 0), (0.5, 1.0, -1, 0),
                                    (0.5, 1.0, 0, 21), (float("nan"), 1.0, 0, 0)])
def test_bad_sampling_values(values):
    with pytest.raises(InvalidRequestError):
        checks.sampling_values(*values)


def test_log_softmax_matches_definition():
    logits = np.random.default_rng(0).normal(size=1000).astype(np.float32) * 5
    expected = logits - np.log(np.exp(logits.astype(np.float64)).sum())
    np.testing.assert_allclose(sampling.log_softmax(logits), expected, atol=1e-5)


def test_greedy_step_returns_argmax_and_its_logprob_and_sorted_alternatives():
    logits = np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32)
    token, logprob, top = sampling.step(logits, SamplingParams(top_logprobs=2), np.random.default_rng(0))
    normaliser = np.log(np.exp(logits.astype(np.float64)).sum())
    assert token == 1 and logprob == pytest.approx(3.0 - normaliser)
    assert [tid for tid, _ in top] == [1, 3]


def test_sampling_respects_top_k_and_seed():
    logits = np.linspace(0, 1, 50).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_k=3)
    draws = {sampling.choose_token(logits, params, np.random.default_rng(seed)) for seed in range(200)}
    assert draws <= {47, 48, 49} and len(draws) == 3
    first = [sampling.choose_token(logits, params, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(first)) == 1


def test_top_p_keeps_only_the_nucleus():
    logits = np.array([10.0, 9.0, 0.0, 0.0], dtype=np.float32)
    params = SamplingParams(temperature=1.0, top_p=0.5)
    assert {sampling.choose_token(logits, params, np.random.default_rng(s)) for s in range(100)} == {0}


def test_plain_chat_template():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_chat(messages, None) == "System: Be brief.\n\nUser: Hi\n\nAssistant:"


def test_model_template_is_used_and_bos_left_to_tokenizer():
    template = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    assert render_chat([{"role": "user", "content": "Hi"}], template, "<s>") == "<user>Hi<assistant>"


def test_template_cannot_escape_the_sandbox_and_falls_back():
    template = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    messages = [{"role": "user", "content": "Hi"}]
    assert render_chat(messages, template) == render_plain([{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize("messages", [[], "hi", [{"content": "x"}], [{"role": "wizard", "content": "x"}],
                                      [{"role": "user", "content": 5}]])
def test_bad_messages(messages):
    with pytest.raises(InvalidRequestError):
        render_chat(messages, None)


def test_deadlines_expire_and_first_token_deadline_stops_applying():
    deadlines = Deadlines.start(0.05, None)
    assert not deadlines.expired()
    deadlines.saw_first_token()
    time.sleep(0.06)
    assert not deadlines.expired()
    late = Deadlines.start(0.01, None)
    time.sleep(0.02)
    assert late.expired()
    late.saw_first_token()
    assert late.expired(), "a first token after its deadline still ends the generation"


def test_deadlines_say_how_long_a_waiter_may_sleep():
    assert Deadlines.start(None, None).seconds_left() is None
    both = Deadlines.start(0.5, 2.0)
    assert 0.4 < both.seconds_left() <= 0.5, "the first-token deadline is the nearer one"
    both.saw_first_token()
    assert 1.8 < both.seconds_left() <= 2.0, "once the first token exists, only the total deadline applies"
    late = Deadlines.start(0.01, 5.0)
    time.sleep(0.02)
    assert late.seconds_left() == 0.0 and late(), "a passed deadline: no sleep, and the ShouldAbort call says so"


def test_engine_wait_between_polls_follows_the_deadline():
    from edge_runtime.engine.client import MAX_WAIT_S, POLL_S, _wait_for

    assert _wait_for(None) == MAX_WAIT_S
    assert _wait_for(0.0) == POLL_S and _wait_for(0.1) == 0.1 and _wait_for(30.0) == MAX_WAIT_S


@pytest.mark.parametrize("shift", [-200.0, -59.0, 0.0, 59.0, 200.0])
def test_log_sum_exp_with_scratch_row_is_exact_at_any_peak(shift):
    logits = (np.random.default_rng(1).standard_normal(262_144) * 4 + shift).astype(np.float32)
    expected = float(np.logaddexp.reduce(logits.astype(np.float64)))
    scratch = np.empty_like(logits)
    assert sampling.log_sum_exp(logits, scratch) == pytest.approx(expected, abs=1e-5)
    assert sampling.log_sum_exp(logits, scratch, float(logits.max())) == pytest.approx(expected, abs=1e-5)


def test_importing_the_package_loads_no_heavy_library():
    import subprocess
    import sys

    script = ("import sys, edge_runtime\nheavy = {'llama_cpp', 'numpy', 'torch', 'onnxruntime', 'coremltools', "
              "'pydantic'} & set(sys.modules)\nprint(sorted(heavy))")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip() == "[]"
