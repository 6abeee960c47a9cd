"""The torch definition against transformers' own implementation, and its cache against recomputation."""

from __future__ import annotations

import pytest
import torch

from converters.model import ConcatCache, Decoder, attention_mask, full_logits, greedy_tokens
from tests.converters.tiny_models import make_hf_folder

PROMPT = list(range(5, 25))  # 20 tokens: longer than the gemma3 test window of 8


@pytest.mark.parametrize("arch,layer_types", [("llama", None), ("gemma3", ["sliding_attention", "full_attention"])])
def test_decoder_matches_transformers(tmp_path, arch, layer_types):
    import transformers

    from converters.hf_source import load_hf_folder

    folder = make_hf_folder(arch, tmp_path / arch, layer_types=layer_types)
    source = load_hf_folder(folder)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(torch.tensor([PROMPT])).logits[0]
    ours = full_logits(source.reference_model(), PROMPT)
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, atol=1e-4), (ours - expected).abs().max()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_cached_greedy_equals_full_recomputation(tiny, arch):
    model = tiny.source(arch).reference_model()
    ids, expected = list(PROMPT), []
    for _ in range(6):
        expected.append(int(full_logits(model, ids + expected)[-1].argmax()))
    assert greedy_tokens(model, PROMPT, 6) == expected


def test_sliding_window_mask_hides_old_positions():
    mask = attention_mask(past_length=4, query_length=2, window=3, dtype=torch.float32)
    allowed = (mask == 0).int().tolist()
    assert allowed == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]]


def test_from_weights_checks_every_shape(tiny):
    source = tiny.source("llama")
    weights = dict(source.weights())
    weights["layers.0.mlp.up_proj.weight"] = weights["layers.0.mlp.up_proj.weight"][:, :10]
    with pytest.raises(RuntimeError, match="up_proj"):
        Decoder.from_weights(source.config, weights)


def test_empty_cache_has_zero_length(tiny):
    cache = ConcatCache.empty(tiny.source("gemma3").config)
    assert cache.past_length() == 0 and len(cache.past_keys) == 2
