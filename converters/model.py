"""One export-friendly decoder definition for every converter target (ONNX and Core ML), nanoGPT style.

Llama and Gemma 3 differ in a handful of places, each behind one config field:

============================  ============================  ==========================================
what                          llama                         gemma3
============================  ============================  ==========================================
RMSNorm scale                 ``x * w``                     ``x * (1 + w)``  (``norm_unit_offset``)
q/k norms                     none                          RMSNorm over head_dim  (``qk_norm``)
norms around attention / MLP  pre only                      pre and post  (``sandwich_norm``)
embedding                     as is                         times ``sqrt(hidden_size)``
MLP activation                SiLU                          GELU (tanh)
rope theta                    one                           local (sliding layers) and global
attention window              full                          sliding on ``layer_types == sliding``
============================  ============================  ==========================================

Parameter names are the Hugging Face ones without the ``model.`` prefix, so a HF state dict loads as is; the
GGUF reader (``converters.gguf_source``) maps GGUF names onto them. Llama's ``post_attention_layernorm`` is
the norm *before* the MLP (HF's name); Gemma 3 has a separate ``pre_feedforward_layernorm``.

The key/value cache is passed in as an object with ``update(layer, k, v) -> (all_k, all_v)``:
``ConcatCache`` (growing past tensors, the ONNX graph's inputs and outputs) here, and a fixed-size stateful
cache in ``converters.coreml``. Masks are built from ``past_length`` and the input length, both read from
tensor shapes, so traced graphs stay dynamic. torch is imported at module level: import this module only
when converting.
"""

from __future__ import annotations

import math
import torch
from torch import nn
from torch.nn import functional as F

from converters.model_config import ModelConfig

MASK_VALUE = -3.0e4  # finite in fp16 too; exp() of it is 0 next to any real attention score


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, unit_offset: bool) -> None:
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        scale = 1.0 + self.weight.float() if self.unit_offset else self.weight.float()
        return (normed * scale).type_as(x)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, shape (T, head_dim), in HF's rotate-half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = torch.chunk(x, 2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


def attention_mask(past_length, query_length, window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (T, P+T): causal, and only the last ``window`` positions when ``window`` is set."""
    query_pos = torch.arange(query_length)[:, None] + past_length
    key_pos = torch.arange(query_length + past_length)[None, :]
    allowed = key_pos <= query_pos
    if window is not None:
        allowed = allowed & (query_pos - key_pos < window)
    zeros = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zeros, torch.full((), MASK_VALUE, dtype=dtype))


class ConcatCache:
    """Past keys/values as lists of (1, kv_heads, P, head_dim) tensors; ``presents`` collects P+T outputs."""

    def __init__(self, past_keys: list[torch.Tensor], past_values: list[torch.Tensor]) -> None:
        self.past_keys, self.past_values = past_keys, past_values
        self.present_keys: list[torch.Tensor] = []
        self.present_values: list[torch.Tensor] = []

    @classmethod
    def empty(cls, config: ModelConfig, dtype: torch.dtype = torch.float32) -> ConcatCache:
        shape = (1, config.num_kv_heads, 0, config.head_dim)
        return cls([torch.zeros(shape, dtype=dtype) for _ in range(config.num_layers)],
                   [torch.zeros(shape, dtype=dtype) for _ in range(config.num_layers)])

    def past_length(self):
        return self.past_keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        all_k = torch.cat([self.past_keys[layer], k], dim=2)
        all_v = torch.cat([self.past_values[layer], v], dim=2)
        self.present_keys.append(all_k)
        self.present_values.append(all_v)
        return all_k, all_v


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.config, self.layer = config, layer
        heads, kv_heads, dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, heads * dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_heads * dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_heads * dim, bias=False)
        self.o_proj = nn.Linear(heads * dim, config.hidden_size, bias=False)
        if config.is_gemma:
            self.q_norm = RMSNorm(dim, config.rms_norm_eps, unit_offset=True)
            self.k_norm = RMSNorm(dim, config.rms_norm_eps, unit_offset=True)

    def _heads(self, x: torch.Tensor, count: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], count, self.config.head_dim).transpose(1, 2)

    def forward(self, x, rope, mask, cache) -> torch.Tensor:
        cfg = self.config
        q = self._heads(self.q_proj(x), cfg.num_heads)
        k = self._heads(self.k_proj(x), cfg.num_kv_heads)
        v = self._heads(self.v_proj(x), cfg.num_kv_heads)
        if cfg.is_gemma:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        k, v = cache.update(self.layer, k, v)
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        scores = torch.matmul(q, k.transpose(2, 3)) * cfg.attention_scale + mask
        probs = torch.softmax(scores.float(), dim=-1).type_as(q)
        out = torch.matmul(probs, v).transpose(1, 2)
        return self.o_proj(out.reshape(x.shape[0], x.shape[1], cfg.num_heads * cfg.head_dim))

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.config.num_heads // self.config.num_kv_heads
        if groups == 1:
            return x
        batch, kv_heads, length, dim = x.shape
        return x[:, :, None].expand(batch, kv_heads, groups, length, dim).reshape(batch, -1, length, dim)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.gemma = config.is_gemma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x)
        gate = F.gelu(gate, approximate="tanh") if self.gemma else F.silu(gate)
        return self.down_proj(gate * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        norm = lambda: RMSNorm(config.hidden_size, config.rms_norm_eps, config.is_gemma)  # noqa: E731
        self.gemma = config.is_gemma
        self.self_attn = Attention(config, layer)
        self.mlp = MLP(config)
        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()  # llama: the norm before the MLP; gemma3: after attention
        if self.gemma:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()

    def forward(self, x, rope, mask, cache) -> torch.Tensor:
        attn = self.self_attn(self.input_layernorm(x), rope, mask, cache)
        if not self.gemma:
            x = x + attn
            return x + self.mlp(self.post_attention_layernorm(x))
        x = x + self.post_attention_layernorm(attn)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Decoder(nn.Module):
    """The whole model: ``forward(input_ids (1, T), cache, past_length) -> logits (1, T, vocab)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, layer) for layer in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.is_gemma)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, cache, past_length, causal_mask=None) -> torch.Tensor:
        cfg = self.config
        x = self.embed_tokens(input_ids)
        if cfg.is_gemma:
            x = x * math.sqrt(cfg.hidden_size)
        positions = torch.arange(input_ids.shape[1]) + past_length
        ropes = {"global": rope_tables(positions, cfg.head_dim, cfg.rope_theta),
                 "local": rope_tables(positions, cfg.head_dim, cfg.rope_local_theta)}
        masks = self._masks(past_length, input_ids.shape[1], x.dtype, causal_mask)
        for index, block in enumerate(self.layers):
            kind = "local" if cfg.is_sliding(index) else "global"
            x = block(x, ropes[kind], masks[kind], cache)
        x = self.norm(x)
        weight = self.embed_tokens.weight if cfg.tie_embeddings else self.lm_head.weight
        return F.linear(x, weight)

    def _masks(self, past_length, length, dtype, causal_mask) -> dict[str, torch.Tensor]:
        full = attention_mask(past_length, length, None, dtype) if causal_mask is None else causal_mask
        window = self.config.sliding_window
        if window is None or not any(map(self.config.is_sliding, range(self.config.num_layers))):
            return {"global": full, "local": full}
        return {"global": full, "local": torch.minimum(full, attention_mask(past_length, length, window, dtype))}

    @classmethod
    def from_weights(cls, config: ModelConfig, weights: dict[str, torch.Tensor]) -> Decoder:
        """A decoder holding ``weights`` (HF names, no ``model.`` prefix); every shape is checked."""
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(weights, strict=True, assign=True)
        return model.float().eval()


@torch.no_grad()
def full_logits(model: Decoder, token_ids: list[int]) -> torch.Tensor:
    """Logits (T, vocab) for every position of ``token_ids``, from an empty cache."""
    ids = torch.tensor([token_ids], dtype=torch.long)
    return model(ids, ConcatCache.empty(model.config), 0)[0]


@torch.no_grad()
def greedy_tokens(model: Decoder, token_ids: list[int], count: int) -> list[int]:
    """``count`` greedy tokens after ``token_ids``, decoding with the cache."""
    cache = ConcatCache.empty(model.config)
    ids, past, out = torch.tensor([token_ids]), 0, []
    for _ in range(count):
        logits = model(ids, cache, past)[0, -1]
        past += ids.shape[1]
        out.append(int(logits.argmax()))
        cache = ConcatCache(cache.present_keys, cache.present_values)
        ids = torch.tensor([[out[-1]]])
    return out
