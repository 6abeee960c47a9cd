"""The engine's process backend forwards its child's contract: the capabilities the child's backend declared,
and its counters through one typed ``stats()`` with the supervisor's view of the engine (pid, state, restarts)."""

from __future__ import annotations

import os

import pytest

from edge_runtime.backends.base import Backend, BackendStats, Capabilities
from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime


@pytest.fixture(scope="module")
def isolated_batched(bundled_path):
    settings = LoadSettings(n_ctx=256, n_parallel=2)
    with Runtime.load(bundled_path, settings=settings, isolation="process") as loaded:
        yield loaded


def test_capabilities_are_the_childs(isolated_batched):
    backend = isolated_batched.backend
    assert type(backend).__name__ == "SupervisedBackend" and isinstance(backend, Backend)
    assert isinstance(backend.engine(), Backend)
    assert backend.capabilities == Capabilities(grammar=True, prefix_store=True, concurrent=True, hidden_states=True)
    assert backend.engine().capabilities == backend.capabilities and isolated_batched.ready


def test_stats_after_a_real_generation_come_from_the_child(isolated_batched):
    result = isolated_batched.generate("Answer yes or no: is Paris in France?", max_tokens=4,
                                       grammar='root ::= "yes" | "no"')
    assert result.text in ("yes", "no")
    stats = isolated_batched.backend.stats()
    assert isinstance(stats, BackendStats)
    assert stats.engine_pid == isolated_batched.backend.engine_pid != os.getpid()
    assert (stats.engine_state, dict(stats.engine_restarts)) == ("ready", {})
    assert stats.queue_depth == (0, 0)
    assert stats.prefix_cache is not None and stats.prefix_cache.hit_ratio >= 0.0
    assert stats.prefix_cache.bytes_held > 0
