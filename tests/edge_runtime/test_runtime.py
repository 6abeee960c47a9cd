"""The runtime on the bundled model: generation, streaming, log-probabilities, label scoring, caps."""

from __future__ import annotations

import math
import threading
import time

import pytest

from edge_runtime.caps import Caps, LoadSettings
from edge_runtime.errors import InvalidRequestError, ModelTooLargeError, PromptTooLongError
from edge_runtime.runtime import Runtime

CAPITALS = ("Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Japan?\nA: Tokyo\n\n"
            "Q: What is the capital of Italy?\nA:")
SENTIMENT = ("Review: a delightful, moving film.\nSentiment: positive\n\nReview: dull and far too long.\n"
             "Sentiment: negative\n\nReview: one of the best performances of the year.\nSentiment:")


@pytest.fixture(scope="module")
def reference(bundled_path):
    """llama-cpp-python's own high-level API with ``logits_all=True``: the slow, trusted path."""
    from edge_runtime.backends.llamacpp_native import safe_high_level_llama

    model = safe_high_level_llama(model_path=str(bundled_path), n_ctx=1024, logits_all=True, verbose=False,
                                  n_threads=2, extra_buffers=False)
    yield model
    model.close()


def test_greedy_generation_has_text_tokens_usage_and_timings(runtime):
    result = runtime.generate(CAPITALS, max_tokens=6)
    assert result.text.strip().startswith("Rome")
    assert result.finish_reason == "length"
    assert len(result.tokens) == result.usage.completion_tokens == 6
    assert result.usage.prompt_tokens == len(runtime.backend.tokenize(CAPITALS))
    assert all(token.logprob <= 0 for token in result.tokens)
    assert result.timings.time_to_first_token_s > 0 and result.timings.decode_tokens_per_s > 0
    assert 0 < result.confidence <= 1


@pytest.fixture(scope="module")
def same_kernels(bundled_path):
    """Our runtime with the reference's kernel choices (no flash attention, weights not repacked on either
    side, no speculation) and no KV reuse, so the numbers can be compared exactly; each of these changes them
    by a few hundredths. Repacked weights make a token's logits depend on its batch's shape, and the two sides
    batch differently (whole text against prefix then continuations): 0.017 apart on one label on an AVX-512
    Xeon without AMX, where the CPU decision leaves the repack on."""
    settings = LoadSettings(flash_attn=False, speculative=False, extra_buffers=False)
    with Runtime.load(bundled_path, settings=settings) as loaded:
        loaded.backend.prefix_reuse = False
        yield loaded


def test_greedy_tokens_and_logprobs_match_llama_cpp_logits_all(same_kernels, reference):
    ours = same_kernels.generate(CAPITALS, max_tokens=8)
    theirs = reference.create_completion(CAPITALS, max_tokens=8, temperature=0.0, logprobs=1)
    their_logprobs = theirs["choices"][0]["logprobs"]["token_logprobs"]
    assert ours.text == theirs["choices"][0]["text"]
    assert [t.logprob for t in ours.tokens] == pytest.approx(their_logprobs, abs=1e-3)


def test_top_logprobs_are_sorted_and_start_with_the_greedy_choice(runtime):
    result = runtime.generate(CAPITALS, max_tokens=3, top_logprobs=4)
    for token in result.tokens:
        assert len(token.top) == 4
        assert [alt.logprob for alt in token.top] == sorted((alt.logprob for alt in token.top), reverse=True)
        assert token.top[0].token_id == token.token_id
        assert math.fsum(math.exp(alt.logprob) for alt in token.top) <= 1.0 + 1e-6


def test_stream_yields_the_same_text_as_generate(runtime):
    stream = runtime.stream(CAPITALS, max_tokens=10)
    pieces = [event.text for event in stream]
    assert "".join(pieces) == stream.result.text == runtime.generate(CAPITALS, max_tokens=10).text
    assert len(pieces) >= 2


def test_stop_sequence_ends_generation_without_the_stop_text(runtime):
    result = runtime.generate(CAPITALS, max_tokens=20, stop=["\n"])
    assert result.finish_reason == "stop"
    assert "\n" not in result.text and result.text.strip() == "Rome"


def test_seeded_sampling_is_reproducible(runtime):
    first = runtime.generate("Once upon a time", max_tokens=12, temperature=0.9, seed=11)
    second = runtime.generate("Once upon a time", max_tokens=12, temperature=0.9, seed=11)
    assert first.text == second.text


def test_chat_messages_use_a_template(runtime):
    result = runtime.generate(messages=[{"role": "user", "content": "Say hello."}], max_tokens=4)
    assert result.usage.prompt_tokens > 3 and result.usage.completion_tokens >= 1


def test_score_choices_is_normalised_and_scores_every_label_token(same_kernels, reference):
    runtime = same_kernels
    choices = ["positive", "negative", "absolutely wonderful"]
    scores = runtime.score_choices(SENTIMENT, choices)
    assert sum(scores.probabilities) == pytest.approx(1.0)
    assert scores.best == "positive"
    assert scores.token_counts[2] >= 2, "a multi-token label must be scored on all its tokens"
    expected = _reference_label_logprob(reference, runtime, SENTIMENT, " absolutely wonderful")
    assert scores.logprobs[2] == pytest.approx(expected, abs=5e-3)


def _reference_label_logprob(reference, runtime, prompt, label):
    prompt_ids = runtime.backend.tokenize(prompt)
    full_ids = runtime.backend.tokenize(prompt + label)
    assert full_ids[:len(prompt_ids)] == prompt_ids
    reference.reset()
    reference.eval(full_ids)
    import numpy as np

    total = 0.0
    for position in range(len(prompt_ids), len(full_ids)):
        row = np.asarray(reference.scores[position - 1], dtype=np.float64)
        total += row[full_ids[position]] - (row.max() + np.log(np.exp(row - row.max()).sum()))
    return total


def test_prefix_reuse_gives_identical_greedy_output(bundled_path, runtime):
    runtime.generate(SENTIMENT + " positive\n\nReview: boring.\nSentiment:", max_tokens=3)
    warm = runtime.generate(SENTIMENT, max_tokens=12)
    with Runtime.load(bundled_path) as fresh:
        fresh.backend.prefix_reuse = False
        cold = fresh.generate(SENTIMENT, max_tokens=12)
    assert [t.token_id for t in warm.tokens] == [t.token_id for t in cold.tokens]


def test_input_cap_reject_reports_the_counts(bundled_path):
    with Runtime.load(bundled_path, caps=Caps(max_input_tokens=10)) as capped:
        with pytest.raises(PromptTooLongError, match=r"prompt is \d+ tokens; cap is 10"):
            capped.generate(CAPITALS, max_tokens=2)


def test_input_cap_truncate_keeps_the_end(bundled_path):
    with Runtime.load(bundled_path, caps=Caps(max_input_tokens=12, input_policy="truncate")) as capped:
        result = capped.generate(CAPITALS, max_tokens=2)
        full_length = len(capped.backend.tokenize(CAPITALS))
    assert result.usage.prompt_tokens == 12
    assert result.prompt_tokens_dropped == full_length - 12
    assert any("truncated" in note for note in result.notes)


def test_output_cap_lowers_max_tokens_and_says_so(bundled_path):
    with Runtime.load(bundled_path, caps=Caps(max_output_tokens=3)) as capped:
        result = capped.generate("Once upon a time", max_tokens=50)
    assert result.usage.completion_tokens == 3 and result.finish_reason == "length"
    assert any("output cap" in note for note in result.notes)


def test_total_deadline_stops_generation(runtime):
    runtime.generate("Once upon a time", max_tokens=2)  # warm: the deadline should cut decoding, not prefill
    started = time.perf_counter()
    result = runtime.generate("Once upon a time", max_tokens=1000, total_deadline_s=1.5)
    elapsed = time.perf_counter() - started
    assert result.finish_reason == "deadline"
    assert 0 < result.usage.completion_tokens < 1000 and result.text
    assert elapsed < 1.5 + 0.5, "one decode step past the deadline at most, on a busy machine"


def test_first_token_deadline_stops_during_prefill(runtime):
    long_prompt = "the " * 1800
    result = runtime.generate(long_prompt, max_tokens=5, ttft_deadline_s=0.05)
    assert result.finish_reason == "deadline"
    assert result.usage.completion_tokens <= 1
    assert result.timings.total_s < 0.05 + 0.5


def test_memory_budget_refuses_with_the_numbers(bundled_path):
    with pytest.raises(ModelTooLargeError, match=r"needs [\d,]+ bytes .* budget is 100,000,000"):
        Runtime.load(bundled_path, caps=Caps(memory_budget_bytes=100_000_000))


def test_model_size_cap(bundled_path):
    with pytest.raises(ModelTooLargeError, match="model-size cap is 1,000"):
        Runtime.load(bundled_path, caps=Caps(max_model_bytes=1000))


@pytest.mark.parametrize("options", [
    {"prompt": ""}, {"prompt": b"\xc3\x28"}, {"prompt": "x", "max_tokens": 0}, {"prompt": "x", "max_tokens": -1},
    {"prompt": "x", "max_tokens": 10**9}, {"prompt": "x", "temperature": -1.0}, {"prompt": "x", "stop": 7},
    {"prompt": "x", "stop": [None]}, {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
])
def test_bad_requests_raise_before_any_work(runtime, options):
    with pytest.raises(InvalidRequestError):
        runtime.generate(**options)
    assert runtime.generate("The sky is", max_tokens=2).usage.completion_tokens == 2


def test_concurrent_callers_are_serialised_and_correct(runtime):
    expected = runtime.generate(CAPITALS, max_tokens=5).text
    results = []
    threads = [threading.Thread(target=lambda: results.append(runtime.generate(CAPITALS, max_tokens=5).text))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [expected] * 3


def test_context_length_is_respected(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(n_ctx=64)) as small:
        result = small.generate("Once upon a time", max_tokens=60)
    assert result.usage.prompt_tokens + result.usage.completion_tokens <= small.backend.n_ctx


def test_a_closed_runtime_refuses_instead_of_crashing(bundled_path):
    from edge_runtime.errors import BackendError

    closed = Runtime.load(bundled_path)
    closed.close()
    with pytest.raises(BackendError, match="closed"):
        closed.generate("hello", max_tokens=2)


def test_a_stream_left_half_way_does_not_deadlock_its_thread(runtime):
    abandoned = runtime.stream("Once upon a time", max_tokens=50)
    next(iter(abandoned))
    finished = runtime.generate(CAPITALS, max_tokens=3, total_deadline_s=30)
    assert finished.usage.completion_tokens == 3
    assert abandoned.result.finish_reason == "cancelled" and abandoned.result.usage.completion_tokens >= 1
    assert any("newer request" in note for note in abandoned.result.notes)
