"""The HF <-> GGUF weight table: names, the llama q/k permutation and the gemma3 norm shift."""

from __future__ import annotations

import numpy as np

from converters.gguf_layout import (from_gguf_values, gguf_name, permute_for_gguf, to_gguf_values,
                                    unpermute_from_gguf)
from converters.model_config import ModelConfig

LLAMA = ModelConfig(arch="llama", vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=1,
                    num_heads=2, num_kv_heads=1, head_dim=4)
GEMMA = ModelConfig(arch="gemma3", vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=1,
                    num_heads=2, num_kv_heads=1, head_dim=4)


def test_permutation_interleaves_rotary_halves_and_inverts():
    weight = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)  # 2 heads of 4 rows
    permuted = permute_for_gguf(weight, heads=2)
    assert permuted[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]
    assert np.array_equal(unpermute_from_gguf(permuted, heads=2), weight)


def test_values_round_trip_for_every_transformed_weight():
    rng = np.random.default_rng(0)
    for config, name, shape in [(LLAMA, "layers.0.self_attn.q_proj.weight", (8, 8)),
                                (LLAMA, "layers.0.self_attn.k_proj.weight", (4, 8)),
                                (GEMMA, "layers.0.self_attn.q_norm.weight", (4,)),
                                (GEMMA, "norm.weight", (8,))]:
        weight = rng.standard_normal(shape).astype(np.float32)
        assert not np.array_equal(to_gguf_values(config, name, weight), weight)
        assert np.allclose(from_gguf_values(config, name, to_gguf_values(config, name, weight)), weight)


def test_gemma3_norm_names_differ_from_llama():
    assert gguf_name(LLAMA, "layers.3.post_attention_layernorm.weight") == "blk.3.ffn_norm.weight"
    assert gguf_name(GEMMA, "layers.3.post_attention_layernorm.weight") == "blk.3.post_attention_norm.weight"
    assert gguf_name(GEMMA, "layers.3.pre_feedforward_layernorm.weight") == "blk.3.ffn_norm.weight"
    assert gguf_name(GEMMA, "embed_tokens.weight") == "token_embd.weight"
