"""The quality gate: metric functions alone, then a deliberately damaged build being rejected."""

from __future__ import annotations

import numpy as np
import pytest

from converters import onnx as onnx_target
from converters.gate import common_prefix, evaluate, failures, kl_divergence, log_softmax, perplexity
from converters.manifest import GateThresholds


def test_kl_is_zero_for_identical_and_positive_otherwise():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.0]])
    assert np.allclose(kl_divergence(logits, logits), 0.0)
    assert (kl_divergence(logits, logits[:, ::-1]) > 0.05).all()
    assert np.allclose(np.exp(log_softmax(logits)).sum(-1), 1.0)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    assert perplexity(np.zeros((5, 7)), [0, 1, 2, 3, 4]) == pytest.approx(7.0)


def test_common_prefix_counts_until_first_difference():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix([1, 2], [1, 2]) == 2


def test_identical_outputs_are_accepted_with_perfect_scores(tiny):
    from converters.gate import TorchScorer

    gate_set = tiny.gate_set("llama")
    result = evaluate(TorchScorer(tiny.source("llama").reference_model()), gate_set, GateThresholds())
    assert result.failures == [] and result.top1_agreement == 1.0 and result.greedy_agreement == 1.0
    assert result.mean_kl < 1e-9 and result.perplexity_ratio == pytest.approx(1.0)


def test_failures_name_each_metric_over_its_threshold():
    from converters.manifest import GateResult

    limits = GateThresholds()
    result = GateResult(top1_agreement=0.5, mean_kl=0.9, greedy_agreement=0.1, perplexity=30.0,
                        reference_perplexity=10.0, perplexity_ratio=3.0, method="runtime", prompts=8,
                        greedy_tokens=16, thresholds=limits)
    assert [line.split()[0] for line in failures(result, limits)] == ["top-1", "mean", "greedy", "perplexity"]


def test_a_damaged_build_is_rejected(tiny, tmp_path):
    import shutil

    build = tmp_path / "damaged"
    shutil.copytree(tiny.build("gemma3", "onnx", "portable-fp32"), build)
    data = np.fromfile(build / "model.onnx.data", dtype=np.float32)
    rng = np.random.default_rng(0)
    data += rng.standard_normal(data.shape).astype(np.float32) * data.std()  # noise as large as the weights
    data.tofile(build / "model.onnx.data")
    result = evaluate(onnx_target.scorer(build, tiny.source("gemma3")), tiny.gate_set("gemma3"), GateThresholds())
    assert result.failures and result.mean_kl > GateThresholds().max_mean_kl
    assert result.top1_agreement < 0.85
