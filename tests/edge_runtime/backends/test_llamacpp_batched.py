"""edge_runtime.backends.llamacpp_batched on the bundled GGUF: it declares concurrent requests (and no
speculation), and its counters include the scheduler's queue after real decoding."""

from __future__ import annotations

import threading

import pytest

from edge_runtime.backends.base import Backend, Capabilities
from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime


@pytest.fixture(scope="module")
def batched(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(n_ctx=256, n_parallel=2)) as runtime:
        yield runtime


def test_declares_concurrent_requests_with_grammar_a_prefix_store_and_hidden_states(batched):
    assert type(batched.backend).__name__ == "BatchedLlamaCppBackend" and isinstance(batched.backend, Backend)
    assert batched.backend.capabilities == Capabilities(grammar=True, prefix_store=True, speculation=False,
                                                        concurrent=True, hidden_states=True)


@pytest.fixture(scope="module")
def batched_exact(bundled_path):
    """The batched backend with weights as stored: repacked weights make a token's logits depend on the batch's
    shape (two identical prompts, one prefilled alone and one beside the other, parted after 4 tokens on an
    AVX-512 Xeon without AMX, where the CPU decision leaves the repack on)."""
    with Runtime.load(bundled_path, settings=LoadSettings(n_ctx=256, n_parallel=2, extra_buffers=False)) as runtime:
        yield runtime


def test_stats_after_concurrent_generations(batched_exact):
    results = []
    threads = [threading.Thread(target=lambda: results.append(batched_exact.generate("Once upon a time",
                                                                                     max_tokens=6)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2 and results[0].text == results[1].text
    stats = batched_exact.backend.stats()
    assert stats.queue_depth == (0, 0)
    assert stats.prefix_cache is not None and stats.prefix_cache.bytes_held > 0
    assert stats.engine_state == "ready"


def test_the_context_shares_one_kv_buffer_across_sequences(batched):
    """Why: see ``edge_runtime.plan.ContextShape.kv_unified``; the load must create what the plan sized."""
    assert batched.backend.context.kv_unified
