"""edge_runtime.backends.llamacpp on the bundled GGUF: what it declares, and its counters after real decoding."""

from __future__ import annotations

import os

import pytest

from edge_runtime.backends.base import Backend, BackendStats, Capabilities, PrefixCacheCounters
from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime

PROMPT = "Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Italy?\nA:"


@pytest.fixture(scope="module")
def loaded(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(n_ctx=512)) as runtime:
        yield runtime


def test_declares_grammar_prefix_store_and_speculation_one_request_at_a_time(loaded):
    assert type(loaded.backend).__name__ == "LlamaCppBackend" and isinstance(loaded.backend, Backend)
    assert loaded.backend.capabilities == Capabilities(grammar=True, prefix_store=True, speculation=True,
                                                       concurrent=False, max_top_logprobs=20, hidden_states=True)
    assert loaded.backend.ready and loaded.ready


def test_settings_that_turn_features_off_are_declared(bundled_path):
    settings = LoadSettings(n_ctx=256, prefix_cache=False, speculative=False)
    with Runtime.load(bundled_path, settings=settings) as runtime:
        assert runtime.backend.capabilities == Capabilities(grammar=True, hidden_states=True)
        assert runtime.cache_prefix("A system prompt that would be worth keeping.") == 0
        assert runtime.backend.stats().prefix_cache.store_entries == 0


def test_stats_after_real_generations_count_reuse_and_the_store(loaded):
    loaded.backend.forget_prefixes()
    fresh = loaded.backend.stats()
    assert fresh.prefix_cache.store_entries == 0 and fresh.prefix_cache.store_bytes == 0
    first = loaded.generate(PROMPT, max_tokens=4)
    second = loaded.generate(PROMPT, max_tokens=4)
    assert first.text == second.text
    stats = loaded.backend.stats()
    assert isinstance(stats, BackendStats) and isinstance(stats.prefix_cache, PrefixCacheCounters)
    assert stats.queue_depth is None
    assert (stats.engine_pid, stats.engine_state, dict(stats.engine_restarts)) == (os.getpid(), "ready", {})
    prompt_tokens = first.usage.prompt_tokens
    # the second prompt reused all but its last token: at least that share of all prompt tokens so far
    assert stats.prefix_cache.hit_ratio >= (prompt_tokens - 1) / (2 * prompt_tokens) - 1e-9
    assert stats.prefix_cache.bytes_held > 0

    kept = loaded.cache_prefix(PROMPT)
    stored = loaded.backend.stats().prefix_cache
    assert kept >= prompt_tokens - 1 and stored.store_entries >= 1 and stored.store_bytes > 0
    assert stored.bytes_held >= stored.store_bytes


def test_a_grammar_is_honoured_not_refused(loaded):
    result = loaded.generate("Answer yes or no: is Paris in France?", max_tokens=4, grammar='root ::= "yes" | "no"')
    assert result.text in ("yes", "no")


RUNAWAY_PROMPT = "Write the number one followed by a hundred zeros in JSON.\nJSON:"
FLIGHT = {"type": "json_schema", "json_schema": {"name": "flight", "schema": {
    "type": "object", "additionalProperties": False, "required": ["from", "to", "day"],
    "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "day": {"type": ["string", "null"]}}}}}


@pytest.mark.parametrize("max_tokens", [24, 40])
def test_a_constrained_answer_that_runs_away_still_closes_inside_its_budget(loaded, max_tokens, monkeypatch):
    """The bundled model writes "1000..." inside the first string until the budget ends: without closing, the
    JSON is cut open (checked here with the closing window off); with it, the answer ends as valid JSON that
    meets the schema, before ``max_tokens``."""
    import json

    import jsonschema

    from edge_runtime.backends import llamacpp_grammar
    from edge_runtime.grammar import grammar_for_response_format

    grammar = grammar_for_response_format(FLIGHT, leading_space=True)
    closed = loaded.generate(RUNAWAY_PROMPT, max_tokens=max_tokens, grammar=grammar)
    jsonschema.validate(json.loads(closed.text), FLIGHT["json_schema"]["schema"])
    assert closed.finish_reason == "stop" and len(closed.tokens) <= max_tokens
    monkeypatch.setattr(llamacpp_grammar, "CLOSE_WITHIN", 0)
    cut = loaded.generate(RUNAWAY_PROMPT, max_tokens=max_tokens, grammar=grammar)
    assert cut.finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(cut.text)
