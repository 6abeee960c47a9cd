"""The decoder hyper-parameters every converter shares, without importing torch.

Built from a Hugging Face ``config.json`` (``converters.hf_source``) or GGUF metadata
(``converters.gguf_source``); read by the torch definition (``converters.model``) and the GGUF writer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ARCHITECTURES = ("llama", "gemma3")


@dataclass(frozen=True)
class ModelConfig:
    """The hyper-parameters the decoder needs; built from a HF config.json or GGUF metadata."""

    arch: str  # "llama" | "gemma3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000.0
    rope_local_theta: float = 10_000.0
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = field(default=())
    context_length: int = 2048
    tie_embeddings: bool = True
    query_pre_attn_scalar: float | None = None

    @property
    def is_gemma(self) -> bool:
        return self.arch == "gemma3"

    def is_sliding(self, layer: int) -> bool:
        return bool(self.layer_types) and self.layer_types[layer] == "sliding_attention"

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def to_dict(self) -> dict:
        return asdict(self)
