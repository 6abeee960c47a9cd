"""Reading HF folders: config.json of transformers 4.x and 5.x, special tokens, clear errors."""

from __future__ import annotations

import json

import pytest

from converters.errors import SourceError, UnsupportedModelError
from converters.hf_source import config_from_hf, load_hf_folder

GEMMA_4X = {"model_type": "gemma3_text", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 7, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
            "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "sliding_window": 512,
            "sliding_window_pattern": 6, "query_pre_attn_scalar": 16}


def test_transformers_4_gemma3_config_derives_layer_types_and_thetas():
    config = config_from_hf(GEMMA_4X)
    assert config.arch == "gemma3" and config.tie_embeddings
    assert config.layer_types == ("sliding_attention",) * 5 + ("full_attention", "sliding_attention")
    assert (config.rope_theta, config.rope_local_theta) == (1_000_000.0, 10_000.0)


def test_transformers_5_config_of_tiny_gemma3(tiny):
    config = tiny.source("gemma3").config
    assert config.layer_types == ("sliding_attention", "sliding_attention")
    assert (config.rope_theta, config.rope_local_theta, config.sliding_window) == (1_000_000.0, 10_000.0, 8)


def test_multimodal_gemma3_reads_text_config():
    config = config_from_hf({"model_type": "gemma3", "text_config": {**GEMMA_4X, "model_type": "gemma3_text"}})
    assert config.num_layers == 7


def test_unknown_architecture_lists_supported_ones():
    with pytest.raises(UnsupportedModelError, match="gemma3_text, llama"):
        config_from_hf({"model_type": "mistral"})


def test_scaled_rope_is_refused():
    raw = {**GEMMA_4X, "model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    with pytest.raises(UnsupportedModelError, match="llama3"):
        config_from_hf(raw)


def test_special_tokens_come_from_tokenizer_config(tiny):
    info = tiny.source("gemma3").tokenizer_info
    vocab = json.loads(tiny.source("gemma3").tokenizer_json.read_text())["model"]["vocab"]
    assert info.bos_token_id == vocab["<bos>"] and info.eos_token_ids == (vocab["<eos>"],) and info.add_bos


def test_weights_are_float32_and_tied_head_dropped(tiny):
    weights = tiny.source("gemma3").weights()
    assert "lm_head.weight" not in weights and "embed_tokens.weight" in weights
    assert {str(t.dtype) for t in weights.values()} == {"torch.float32"}


def test_folder_without_tokenizer_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GEMMA_4X))
    with pytest.raises(SourceError, match="tokenizer.json"):
        load_hf_folder(tmp_path)
