"""edge_runtime.backends.coreml: refuses to load off macOS with the reason; predicts on macOS; declares its
capabilities (the macOS test uses the converters' tiny builds, fixture ``tiny`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edge_runtime.backends import backend_class
from edge_runtime.backends.base import SamplingParams
from edge_runtime.backends.coreml import CoreMLBackend, causal_mask
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendUnavailableError

ON_MACOS = sys.platform == "darwin"


@pytest.mark.skipif(ON_MACOS, reason="checks the refusal on platforms without Core ML")
def test_load_off_macos_says_why(tmp_path):
    with pytest.raises(BackendUnavailableError, match="needs macOS"):
        backend_class("coreml").load(tmp_path, LoadSettings())


def test_causal_mask_shape_and_values():
    mask = causal_mask(past_length=2, length=2)
    assert mask.shape == (1, 1, 2, 4) and mask.dtype == np.float16
    assert (mask[0, 0] == 0).tolist() == [[True, True, True, False], [True, True, True, True]]


@pytest.mark.macos
@pytest.mark.skipif(not ON_MACOS, reason="Core ML prediction needs macOS 15 or later")
def test_prediction_matches_the_torch_reference(tiny):
    from converters import coreml as coreml_target
    from converters.model import greedy_tokens

    entry, _ = coreml_target.build(tiny.source("gemma3"), "fp16", tiny.root / "mac-coreml", tiny.root / "work-gemma3",
                                   max_context=64)
    backend = CoreMLBackend.load(entry, LoadSettings(n_ctx=64))
    ids = backend.tokenize("The quick brown fox")
    steps = list(backend.generate_tokens(ids, SamplingParams(max_tokens=6), lambda: False))
    assert [s.token_id for s in steps] == greedy_tokens(tiny.source("gemma3").reference_model(), ids, 6)


class _CountingModel:
    """Stands in for MLModel on Linux (pure bookkeeping test): the next token is (last input token + 1) % 8,
    and it records the past length each call's mask encodes."""

    def __init__(self):
        self.past_lengths = []

    def make_state(self):
        return object()

    def predict(self, inputs, state):
        tokens = inputs["inputIds"][0]
        mask = inputs["causalMask"]
        self.past_lengths.append(int(mask.shape[-1]) - len(tokens))
        logits = np.full((1, len(tokens), 8), -5.0, dtype=np.float32)
        logits[0, np.arange(len(tokens)), (tokens + 1) % 8] = 5.0
        return {"logits": logits}


class _Tokenizer:
    eos_token_ids = {7}


def test_shared_decode_loop_tracks_the_core_ml_cache():
    from edge_runtime.backends.base import SamplingParams

    model = _CountingModel()
    backend = CoreMLBackend(model, _Tokenizer(), {"config": {"vocab_size": 8}, "max_context": 64}, LoadSettings())
    backend.token_piece = lambda token: bytes([48 + token])
    steps = list(backend.generate_tokens([1, 2, 3], SamplingParams(max_tokens=10), lambda: False))
    assert [step.token_id for step in steps] == [4, 5, 6, 7] and steps[-1].is_end_of_generation
    assert model.past_lengths == [0, 3, 4, 5]
    scores = backend.score_continuations([1, 2, 3], [[4, 5], [0]])
    assert scores[0][0] > -0.01 and scores[0][1] > -0.01 and scores[1][0] < -9
    assert backend.cached_tokens == [1, 2, 3]


def test_declares_no_grammar_no_prefix_store_and_counts_nothing():
    from edge_runtime.backends.base import BackendStats, Capabilities

    assert CoreMLBackend.capabilities == Capabilities() and CoreMLBackend.ready
    backend = CoreMLBackend(_CountingModel(), _Tokenizer(), {"config": {"vocab_size": 8}, "max_context": 16},
                            LoadSettings(n_ctx=16))
    backend.token_piece = lambda token: bytes([48 + token])
    assert len(list(backend.generate_tokens([1, 2], SamplingParams(max_tokens=2), lambda: False))) == 2
    assert backend.stats() == BackendStats()
