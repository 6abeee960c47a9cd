"""The batching backend in the engine process (the server's default): concurrent requests get the same tokens
as one at a time, one message carries a step's tokens for every request, and aborts and full queues still work
without a thread per request in the child."""

from __future__ import annotations

import threading
import time

import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime

PROMPTS = ["Once upon a time", "The capital of France is", "A bicycle gear works by", "Cats purr because"]


@pytest.fixture(scope="module")
def batched(bundled_path):
    settings = LoadSettings(n_ctx=512, n_parallel=4, speculative=False)
    with Runtime.load(bundled_path, settings=settings, isolation="process") as loaded:
        yield loaded


def concurrently(runtime, prompts: list[str], **options) -> list:
    results: list = [None] * len(prompts)

    def run(index: int) -> None:
        results[index] = runtime.generate(prompts[index], **options)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    return results


def common_prefix(one, other) -> int:
    count = 0
    while count < min(len(one), len(other)) and one[count].token_id == other[count].token_id:
        count += 1
    return count


def test_concurrent_requests_continue_their_own_prompts_and_arrive_in_step_batches(batched):
    """Each request gets its own sequence's tokens. A batch of four decodes through other CPU kernels than a
    batch of one (measured: log-probabilities up to 0.14 apart), so near-ties may break differently later on:
    the first tokens and their log-probabilities must agree, not necessarily every token."""
    assert batched.backend.capabilities.concurrent
    alone = [batched.generate(prompt, max_tokens=12) for prompt in PROMPTS]
    engine = batched.backend.engine()
    before = engine.batches_received
    together = concurrently(batched, PROMPTS, max_tokens=12)
    assert len({result.tokens[0].token_id for result in alone}) > 1  # the prompts start differently
    for one, other in zip(alone, together):
        assert other.usage.completion_tokens == 12 and all(token.logprob <= 0 for token in other.tokens)
        shared = common_prefix(one.tokens, other.tokens)
        assert shared >= 2, (one.text, other.text)
        assert [t.logprob for t in one.tokens[:shared]] == pytest.approx([t.logprob for t in other.tokens[:shared]],
                                                                         abs=0.3)
    # 48 tokens in 4 concurrent requests: far fewer messages than tokens when steps are batched
    assert 12 <= engine.batches_received - before < 40


def test_a_deadline_stops_one_request_and_the_others_finish(batched):
    results: list = [None, None]

    def long_one() -> None:
        results[0] = batched.generate(PROMPTS[0], max_tokens=400, total_deadline_s=0.3)

    def short_one() -> None:
        results[1] = batched.generate(PROMPTS[1], max_tokens=10)

    threads = [threading.Thread(target=long_one), threading.Thread(target=short_one)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results[0].finish_reason == "deadline" and results[0].usage.completion_tokens < 400
    assert results[1].usage.completion_tokens == 10
    assert time.monotonic() - started < 60
    # the stopped request is retired by the engine's scheduler at its next step: soon, not necessarily yet
    deadline = time.monotonic() + 5
    while batched.backend.stats().queue_depth != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batched.backend.stats().queue_depth == (0, 0)


def test_a_closed_stream_cancels_its_request_in_the_child(batched):
    stream = batched.stream(PROMPTS[2], max_tokens=400)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while batched.backend.stats().queue_depth != (0, 0):
        assert time.monotonic() < deadline, "the cancelled request kept its slot"
        time.sleep(0.05)
    assert batched.generate(PROMPTS[3], max_tokens=5).usage.completion_tokens == 5
