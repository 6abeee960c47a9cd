"""How Hugging Face weight names and values map onto GGUF tensors, in both directions, in one table.

The writer (``converters.gguf``) and the reader (``converters.gguf_source``) share it, so a round trip is the
identity by construction and a test can check it. Values that change on the way (nothing is transposed:
GGUF keeps HF's (out, in) row-major order and only lists the dims reversed):

* llama ``q_proj`` / ``k_proj``: rows permuted from HF's rotate-half rope layout to GGML's interleaved one
  (``permute_for_gguf``; ``unpermute_from_gguf`` undoes it). Gemma 3 uses NeoX rope in llama.cpp: no permute.
* gemma3 every ``*norm.weight``: GGUF stores ``1 + w`` (llama.cpp multiplies by the stored weight), HF ``w``.
"""

from __future__ import annotations

import numpy as np

from converters.model_config import ModelConfig

GLOBAL_NAMES = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}

BLOCK_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "input_layernorm.weight": "attn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}
LLAMA_BLOCK_NAMES = {"post_attention_layernorm.weight": "ffn_norm.weight"}
GEMMA3_BLOCK_NAMES = {"post_attention_layernorm.weight": "post_attention_norm.weight",
                      "pre_feedforward_layernorm.weight": "ffn_norm.weight",
                      "post_feedforward_layernorm.weight": "post_ffw_norm.weight"}


def gguf_name(config: ModelConfig, hf_name: str) -> str:
    """The GGUF tensor name of a HF weight name (without the ``model.`` prefix)."""
    if hf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[hf_name]
    _, layer, rest = hf_name.split(".", 2)
    table = {**BLOCK_NAMES, **(GEMMA3_BLOCK_NAMES if config.is_gemma else LLAMA_BLOCK_NAMES)}
    return f"blk.{layer}.{table[rest]}"


def permute_for_gguf(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF rotate-half rows -> GGML interleaved rows (what llama.cpp's convert_hf_to_gguf does)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_from_gguf(weight: np.ndarray, heads: int) -> np.ndarray:
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def to_gguf_values(config: ModelConfig, hf_name: str, weight: np.ndarray) -> np.ndarray:
    if config.arch == "llama" and hf_name.endswith("q_proj.weight"):
        return permute_for_gguf(weight, config.num_heads)
    if config.arch == "llama" and hf_name.endswith("k_proj.weight"):
        return permute_for_gguf(weight, config.num_kv_heads)
    if config.is_gemma and hf_name.endswith("norm.weight"):
        return weight + 1.0
    return weight


def from_gguf_values(config: ModelConfig, hf_name: str, weight: np.ndarray) -> np.ndarray:
    if config.arch == "llama" and hf_name.endswith("q_proj.weight"):
        return unpermute_from_gguf(weight, config.num_heads)
    if config.arch == "llama" and hf_name.endswith("k_proj.weight"):
        return unpermute_from_gguf(weight, config.num_kv_heads)
    if config.is_gemma and hf_name.endswith("norm.weight"):
        return weight - 1.0
    return weight
