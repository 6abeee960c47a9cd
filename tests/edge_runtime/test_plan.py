"""The fit plan's parts on the bundled model's header, and the buffer limits the backend keeps to match it."""

from __future__ import annotations

import dataclasses

import pytest

from edge_runtime.caps import Caps, LoadSettings
from edge_runtime.errors import BackendError
from edge_runtime.gguf_file import read_header
from edge_runtime.plan import MIN_UBATCH, OUTPUT_ROWS, compute_bytes, context_shape, plan_gguf

CAPITALS = "Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Italy?\nA:"


@pytest.mark.parametrize("n_ctx, n_batch", [(512, 256), (8192, 256), (1 << 20, 256), (2048, 16)])
def test_micro_batch_stays_within_the_batch_and_shrinks_for_long_contexts(n_ctx, n_batch):
    shape = context_shape(LoadSettings(n_ctx=n_ctx, n_batch=n_batch))
    assert min(MIN_UBATCH, n_batch) <= shape.n_ubatch <= n_batch
    assert shape.n_ubatch * n_ctx <= max(1 << 20, MIN_UBATCH * n_ctx)


@pytest.mark.parametrize("parallel", [1, 4, 8, 64])
def test_every_sequence_gets_a_logits_row(parallel):
    """llama.cpp aborts the process when a context reserves fewer rows than it has sequences."""
    shape = context_shape(LoadSettings(n_parallel=parallel))
    assert shape.n_outputs_max >= max(shape.n_seq_max, OUTPUT_ROWS)


def test_a_batched_context_shares_one_kv_buffer_and_the_plan_counts_attention_over_all_of_it(bundled_path):
    """Separate per-sequence buffers split a step at every gap in the sequence ids (4 requests in slots 0, 2, 5
    and 7 decoded as slowly as 8); one shared buffer makes a step one micro-batch, and a sequence then attends
    over every used cell, so the plan's attention stage spans the whole buffer."""
    assert not context_shape(LoadSettings()).kv_unified
    header = read_header(bundled_path)
    settings = LoadSettings(n_ctx=2048, n_parallel=4, flash_attn=False)
    shape = context_shape(settings)
    assert shape.kv_unified and shape.n_ctx == 5 * 2048
    separate = compute_bytes(header, dataclasses.replace(shape, kv_unified=False))
    assert compute_bytes(header, shape) > separate
    assert plan_gguf(header, settings, Caps()).compute_bytes == compute_bytes(header, shape)


def test_parts_add_up_and_the_prefix_store_counts_only_when_on(bundled_path):
    header = read_header(bundled_path)
    with_store = plan_gguf(header, LoadSettings(n_ctx=2048), Caps(memory_budget_bytes=None))
    without = plan_gguf(header, LoadSettings(n_ctx=2048, prefix_cache=False), Caps(memory_budget_bytes=None))
    parts = ("weights_bytes", "kv_cache_bytes", "compute_bytes", "output_bytes", "runtime_bytes")
    assert without.total_bytes == sum(getattr(without, part) for part in parts)
    assert with_store.total_bytes - without.total_bytes == with_store.prefix_cache_bytes == 64 * 2**20


def test_flash_attention_needs_less_compute_at_long_contexts(bundled_path):
    header = read_header(bundled_path)
    plain, flash = (plan_gguf(header, LoadSettings(n_ctx=8192, flash_attn=flag), Caps()) for flag in (False, True))
    assert flash.compute_bytes < plain.compute_bytes
    # auto (None): llama.cpp enables it on a CPU-only load; with layers offloaded the device decides: the worst
    assert plan_gguf(header, LoadSettings(n_ctx=8192), Caps()).compute_bytes == flash.compute_bytes
    offloaded = plan_gguf(header, LoadSettings(n_ctx=8192, n_gpu_layers=99), Caps())
    assert offloaded.compute_bytes == plain.compute_bytes


def test_a_batch_asking_for_more_rows_than_the_context_keeps_is_refused(runtime):
    from edge_runtime.backends.llamacpp_native import NativeBatch

    backend = runtime.backend
    batch = NativeBatch(64)
    try:
        batch.fill(backend.tokenize(CAPITALS)[:OUTPUT_ROWS + 1], 0, 0, all_logits=True)
        with pytest.raises(BackendError, match="logits rows"):
            backend.context.decode(batch)
    finally:
        batch.close()
        backend.forget_prefixes()


def test_a_label_longer_than_the_logits_rows_scores_like_generation(runtime):
    """Scoring reads a long label a few rows per decode; its total is the generation's own log-probability, up to
    the few thousandths per token by which a batched decode differs from single steps (a row read from the wrong
    position would be off by nats)."""
    generated = runtime.generate(CAPITALS, max_tokens=3 * OUTPUT_ROWS)
    prompt_ids = runtime.backend.tokenize(CAPITALS)
    label_ids = [token.token_id for token in generated.tokens]
    if runtime.backend.tokenize(CAPITALS + generated.text) != prompt_ids + label_ids or len(label_ids) <= 16:
        pytest.skip("the generated text is short or tokenizes differently once joined to the prompt")
    scores = runtime.score_choices(CAPITALS, [generated.text, " zzz"], separator="")
    assert scores.token_counts[0] == len(label_ids) > 2 * OUTPUT_ROWS
    expected = sum(token.logprob for token in generated.tokens)
    assert scores.logprobs[0] == pytest.approx(expected, abs=0.015 * len(label_ids))
