"""GGUF target: HF folder -> f16 GGUF -> llama.cpp, quantization presets, re-quantization of a GGUF source."""

from __future__ import annotations

import numpy as np
import pytest

from converters import gguf as gguf_target
from converters.errors import UnknownPresetError, UnsupportedModelError
from converters.gate import evaluate, kl_divergence
from converters.gguf_source import load_gguf_file
from converters.manifest import GateThresholds
from tests.converters.tiny_models import CORPUS

ARCHS = ("llama", "gemma3")


@pytest.fixture(scope="module")
def f16_scorers(tiny):
    scorers = {arch: gguf_target.scorer(tiny.build(arch, "gguf", "F16"), tiny.source(arch)) for arch in ARCHS}
    yield scorers
    for scorer in scorers.values():
        scorer.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_llama_cpp_runs_the_f16_export_like_the_torch_reference(tiny, f16_scorers, arch):
    gate_set = tiny.gate_set(arch)
    ids = gate_set.prompt_ids[3]
    logits = f16_scorers[arch].logits(ids)
    assert logits.shape == (len(ids), tiny.source(arch).config.vocab_size)
    assert kl_divergence(gate_set.reference_logits[3], logits).max() < 1e-3
    assert f16_scorers[arch].greedy(ids, 8) == gate_set.reference_greedy[3][:8]


@pytest.mark.parametrize("arch", ARCHS)
def test_llama_cpp_tokenizes_like_tokenizer_json(tiny, f16_scorers, arch):
    tokenizer = tiny.tokenizer(arch)
    for text in [*CORPUS[:5], "héllo wörld ☃"]:
        assert f16_scorers[arch].llm.tokenize(text.encode(), add_bos=True, special=False) == tokenizer.tokenize(text)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_reads_back_to_the_same_model(tiny, arch):
    source = tiny.source(arch)
    back = load_gguf_file(tiny.root / f"work-{arch}" / "source-f16.gguf", tiny.root / f"back-{arch}")
    assert back.config.num_layers == source.config.num_layers
    assert back.config.layer_types == source.config.layer_types
    assert back.config.tie_embeddings == source.config.tie_embeddings
    original, reread = source.weights(), back.weights()
    assert set(original) == set(reread)
    assert max(float((original[k] - reread[k]).abs().max()) for k in original) < 2e-3  # f16 rounding only
    assert back.tokenizer_info.bos_token_id == source.tokenizer_info.bos_token_id
    rebuilt = tiny.tokenizer(arch).__class__(back.tokenizer_json, back.edge_metadata())
    assert all(rebuilt.tokenize(text) == tiny.tokenizer(arch).tokenize(text) for text in CORPUS)


def test_quantization_presets_shrink_the_file_and_pass_the_gate(tiny):
    sizes = {p: tiny.build("gemma3", "gguf", p).stat().st_size for p in ("F16", "Q8_0", "Q4_K_M")}
    assert sizes["F16"] > sizes["Q8_0"] > sizes["Q4_K_M"]
    results = {}
    for preset in ("Q8_0", "Q4_K_M"):
        scorer = gguf_target.scorer(tiny.build("gemma3", "gguf", preset), tiny.source("gemma3"))
        results[preset] = evaluate(scorer, tiny.gate_set("gemma3"), GateThresholds())
        scorer.close()
    assert results["Q8_0"].failures == [] and results["Q8_0"].top1_agreement == 1.0
    assert results["Q8_0"].mean_kl < results["Q4_K_M"].mean_kl < 0.05


def test_gguf_source_is_requantized(tiny, tmp_path):
    source = load_gguf_file(tiny.root / "work-gemma3" / "source-f16.gguf", tmp_path / "work")
    entry, notes = gguf_target.build(source, "Q4_K_M", tmp_path / "out", tmp_path / "work")
    assert entry.stat().st_size < source.path.stat().st_size
    assert "re-quantized" in notes[0]
    scorer = gguf_target.scorer(entry, source)
    assert scorer.greedy(tiny.gate_set("gemma3").prompt_ids[0], 4) == tiny.gate_set("gemma3").reference_greedy[0][:4]
    scorer.close()


def test_unknown_preset_lists_known_ones(tiny, tmp_path):
    with pytest.raises(UnknownPresetError, match="Q4_K_M"):
        gguf_target.build(tiny.source("llama"), "Q3_X", tmp_path, tmp_path)


def test_gemma3_layer_pattern_llama_cpp_cannot_express_is_refused():
    from converters.model_config import ModelConfig

    config = ModelConfig(arch="gemma3", vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=2,
                         num_heads=2, num_kv_heads=1, head_dim=4, sliding_window=4,
                         layer_types=("sliding_attention", "full_attention"))
    with pytest.raises(UnsupportedModelError, match="5 sliding, 1 global"):
        gguf_target.check_llama_cpp_compatible(config)


def test_sentencepiece_scores_follow_merge_order():
    scores = gguf_target._merge_rank_scores(["a", "b", "ab", "abb"], ["a b", "ab b"])
    assert scores == [0.0, 0.0, 0.0, -1.0] and np.argmax(scores[2:]) == 0
