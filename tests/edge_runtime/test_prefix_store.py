"""The prefix store: its LRU policy on its own, then saved KV states restored on the bundled model, in the
single-sequence runtime and in the batched backend, with greedy output identical to no caching at all."""

from __future__ import annotations

import pytest

from edge_runtime.caps import Caps, LoadSettings
from edge_runtime.prefix import PrefixStore
from edge_runtime.runtime import Runtime
from tests.greedy import assert_same_greedy_path, greedy_path


# -- policy -------------------------------------------------------------------------------------------------
def test_longest_shared_prefix_wins_and_is_marked_recently_used():
    store = PrefixStore(budget_bytes=100)
    store.put([1, 2, 3, 4], b"a" * 10)
    store.put([1, 2, 9], b"b" * 10)
    saved, length = store.best_match([1, 2, 3, 7, 7])
    assert saved.tokens == (1, 2, 3, 4) and length == 3
    assert store.best_match([5, 1, 2]) == (None, 0)
    store.put([8] * 5, b"c" * 81)  # over budget: the least recently used ([1, 2, 9]) goes first
    assert len(store) == 2 and store.bytes_held == 91 and store.stats.evictions == 1
    assert store.best_match([1, 2, 9])[1] == 2, "[1, 2, 9] was evicted; [1, 2, 3, 4] still shares two"


def test_best_match_without_touch_keeps_the_order():
    store = PrefixStore(budget_bytes=30)
    store.put([1, 1], b"x" * 10)
    store.put([2, 2], b"y" * 10)
    store.best_match([1, 1], touch=False)
    store.put([3, 3], b"z" * 15)
    assert store.best_match([1, 1]) == (None, 0), "an untouched entry stays least recently used"


def test_an_extended_prefix_replaces_the_shorter_one_and_oversized_states_are_refused():
    store = PrefixStore(budget_bytes=50)
    store.put([1, 2], b"x" * 10)
    store.put([1, 2, 3], b"y" * 12)
    assert len(store) == 1 and store.bytes_held == 12
    assert not store.put([4, 5], b"z" * 51) and len(store) == 1
    assert not PrefixStore(budget_bytes=0).put([1], b"x")
    with pytest.raises(ValueError):
        PrefixStore(budget_bytes=-1)


# -- on the bundled model -----------------------------------------------------------------------------------
SYSTEMS = [" ".join(f"{noun} {index}: keep answers short and exact." for index in range(25))
           for noun in ("Rule", "Fact", "Note")]
QUESTION = "\n\nUser: What is rule 3?\nAssistant:"


def _greedy(runtime: Runtime, system: str) -> tuple[list[str], list[dict]]:
    return greedy_path(runtime.generate(system + QUESTION, max_tokens=8, top_logprobs=5))


def _assert_same(outputs: list[tuple[str, tuple]], uncached: dict) -> None:
    for system, (tokens, _) in outputs:
        reference, reference_top = uncached[system]
        assert_same_greedy_path(reference, tokens, reference_top)


@pytest.fixture(scope="module")
def uncached(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(prefix_cache=False)) as loaded:
        yield {system: _greedy(loaded, system) for system in SYSTEMS}


def test_alternating_prefixes_are_restored_with_identical_greedy_output(bundled_path, uncached):
    with Runtime.load(bundled_path) as cached:
        outputs = [(system, _greedy(cached, system)) for system in SYSTEMS + SYSTEMS[:2]]
        stats = cached.backend.prefix_stats
        assert stats.store_restores == 2, "the 4th and 5th prompts come back to a prefix the live KV lost"
        assert stats.store_entries >= 2 and 0 < stats.store_bytes <= LoadSettings().prefix_cache_bytes
        assert stats.reused_tokens > 2 * cached.count_tokens(SYSTEMS[0]) - 10
    _assert_same(outputs, uncached)


def test_cache_prefix_keeps_a_system_prompt_for_later_requests(bundled_path, uncached):
    with Runtime.load(bundled_path) as cached:
        kept = cached.cache_prefix(SYSTEMS[0])
        assert kept == cached.count_tokens(SYSTEMS[0])
        _greedy(cached, SYSTEMS[1])  # the live KV now holds another prefix
        reused_before = cached.backend.prefix_stats.reused_tokens
        _assert_same([(SYSTEMS[0], _greedy(cached, SYSTEMS[0]))], uncached)
        assert cached.backend.prefix_stats.reused_tokens - reused_before >= kept - 2
        assert cached.backend.prefix_stats.store_restores == 1


def test_a_tight_memory_budget_shrinks_the_store_instead_of_refusing_the_model(bundled_path):
    from edge_runtime.models import resolve_model

    resolved = resolve_model(bundled_path)
    roomy = resolved.plan(Caps(), LoadSettings())
    budget = roomy.total_bytes - roomy.prefix_cache_bytes + 1_000_000
    tight = resolved.plan(Caps(memory_budget_bytes=budget), LoadSettings())
    assert roomy.prefix_cache_bytes == LoadSettings().prefix_cache_bytes
    assert tight.fits and tight.prefix_cache_bytes == 1_000_000 and tight.total_bytes == budget
    with Runtime.load(bundled_path, caps=Caps(memory_budget_bytes=budget)) as loaded:
        assert loaded.backend.store.budget_bytes == 1_000_000


def test_the_batched_backend_restores_prefixes_into_any_slot(bundled_path, uncached):
    settings = LoadSettings(n_parallel=2, n_ctx=1024)
    with Runtime.load(bundled_path, settings=settings) as batched:
        outputs = [(system, _greedy(batched, system)) for system in SYSTEMS + SYSTEMS]
        stats = batched.backend.prefix_stats
        assert stats.store_restores >= 1, "three prefixes over two slots: one must come back from the store"
    _assert_same(outputs, uncached)
