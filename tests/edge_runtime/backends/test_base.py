"""The backend contract itself: what ``Capabilities`` refuses, the typed error it raises, ``BackendStats``.

The runtime-level refusal runs on a scripted backend that declares a small ``max_top_logprobs``: no real backend
reports fewer alternatives than the request validator allows, so only a declared limit can show the check.
The real backends' declarations and counters are tested beside them (``test_llamacpp.py``, ``test_onnx.py``,
...).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_runtime.backends.base import BackendStats, Capabilities, SamplingParams
from edge_runtime.caps import Caps
from edge_runtime.engine.messages import decode_error, encode_error
from edge_runtime.errors import EdgeRuntimeError, InvalidRequestError, UnsupportedCapabilityError
from edge_runtime.models import ResolvedModel
from edge_runtime.runtime import Runtime


def test_capabilities_name_the_first_thing_a_request_needs_and_lacks():
    plain = Capabilities(max_top_logprobs=2)
    assert plain.missing_for(SamplingParams()) is None
    assert plain.missing_for(SamplingParams(grammar="root ::= \"a\""))[0] == "grammar"
    assert plain.missing_for(SamplingParams(top_logprobs=2)) is None
    capability, detail = plain.missing_for(SamplingParams(top_logprobs=3))
    assert capability == "top_logprobs" and "at most 2" in detail
    assert Capabilities(grammar=True).missing_for(SamplingParams(grammar="root ::= \"a\"")) is None


def test_the_error_names_the_backend_and_the_capability_and_crosses_the_engine_pipe():
    error = UnsupportedCapabilityError("onnx", "grammar", "constrained output")
    assert isinstance(error, InvalidRequestError) and isinstance(error, EdgeRuntimeError)
    assert (error.backend, error.capability) == ("onnx", "grammar")
    assert str(error) == "the onnx backend does not support grammar: constrained output"
    rebuilt = decode_error(encode_error(error))
    assert type(rebuilt) is UnsupportedCapabilityError
    assert (rebuilt.backend, rebuilt.capability, str(rebuilt)) == ("onnx", "grammar", str(error))


def test_stats_default_to_this_process_with_no_counters():
    stats = BackendStats()
    assert stats.queue_depth is None and stats.prefix_cache is None
    assert (stats.engine_pid, stats.engine_state, dict(stats.engine_restarts)) == (os.getpid(), "ready", {})


class _TwoAlternatives:
    """Reports two alternatives per token and no grammar; answers "ok"."""

    format, n_ctx, n_vocab, ready = "scripted", 512, 256, True
    capabilities = Capabilities(max_top_logprobs=2)

    def __init__(self) -> None:
        self.generations = 0

    def tokenize(self, text, *, add_special=True):
        return list(text.encode())

    def token_piece(self, token_id):
        return bytes([token_id])

    def chat_template(self):
        return None

    def special_tokens(self):
        return "", ""

    def generate_tokens(self, prompt_ids, sampling, should_abort):
        from edge_runtime.results import TokenStep

        self.generations += 1
        for byte in b"ok":
            yield TokenStep(byte, bytes([byte]), -0.1, tuple((byte, -0.1) for _ in range(sampling.top_logprobs)))

    def score_continuations(self, prefix_ids, continuations):
        return [[-1.0] * len(ids) for ids in continuations]

    def cache_prefix(self, prefix_ids):
        raise AssertionError("the runtime must not ask a backend without a prefix store")

    def stats(self):
        return BackendStats()

    def close(self):
        pass


@pytest.fixture()
def scripted():
    backend = _TwoAlternatives()
    return backend, Runtime(backend, ResolvedModel("scripted", Path("scripted")), Caps(), 0.0)


def test_the_runtime_refuses_before_the_backend_runs(scripted):
    backend, runtime = scripted
    with pytest.raises(UnsupportedCapabilityError, match="scripted backend does not support grammar") as refused:
        runtime.stream("Hi", grammar='root ::= "ok"')
    assert (refused.value.backend, refused.value.capability) == ("scripted", "grammar")
    with pytest.raises(UnsupportedCapabilityError, match="3 alternatives per token; it reports at most 2"):
        runtime.generate("Hi", top_logprobs=3)
    assert backend.generations == 0
    assert runtime.generate("Hi", top_logprobs=2).text == "ok" and backend.generations == 1


def test_a_backend_without_a_prefix_store_keeps_nothing(scripted):
    _, runtime = scripted
    assert runtime.cache_prefix("A long system prompt") == 0
