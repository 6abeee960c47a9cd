"""The fit plan: how much memory a model will need for a context length, computed before loading it.

total = weights (tensor bytes from the GGUF header) + KV cache (f16 keys and values for every layer and
every position of the context) + compute overhead (llama.cpp's scratch buffers: a fixed floor plus the
logits row and per-token activations of one batch) + the prefix store (saved KV states, see
``edge_runtime.prefix``). The estimate errs high; tests compare it with the resident memory really used after
loading. Under a memory budget the prefix store shrinks to what is left (down to nothing) before a model is
refused: it is an optimisation, the rest is not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edge_runtime.caps import Caps
from edge_runtime.errors import ModelTooLargeError
from edge_runtime.gguf_file import GGUFHeader

KV_BYTES_PER_VALUE = 2  # llama.cpp keeps keys and values in f16 by default
COMPUTE_FLOOR_BYTES = 64 * 1024 * 1024
ACTIVATION_BYTES_PER_BATCH_TOKEN_PER_EMBD = 4 * 12


@dataclass
class FitPlan:
    model_path: str
    architecture: str
    n_ctx: int
    model_bytes: int
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    prefix_cache_bytes: int
    total_bytes: int
    memory_budget_bytes: int | None
    max_model_bytes: int | None
    fits: bool
    reasons: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _per_layer_value(value: object, default: int) -> list[int] | int:
    if isinstance(value, list):
        return [int(item) for item in value]
    return int(value) if value is not None else default


def kv_cache_bytes(header: GGUFHeader, n_ctx: int) -> int:
    """f16 keys and values for every layer at every position (sliding-window layers counted in full)."""
    n_layer = int(header.arch_value("block_count", 0))
    n_embd = int(header.arch_value("embedding_length", 0))
    n_head = _per_layer_value(header.arch_value("attention.head_count"), 1)
    n_head_kv = _per_layer_value(header.arch_value("attention.head_count_kv"), n_head if isinstance(n_head, int) else 1)
    first_heads = n_head if isinstance(n_head, int) else max(n_head)
    head_dim = int(header.arch_value("attention.key_length", n_embd // max(first_heads, 1)))
    value_dim = int(header.arch_value("attention.value_length", head_dim))
    kv_heads = n_head_kv if isinstance(n_head_kv, list) else [n_head_kv] * n_layer
    return sum(heads * (head_dim + value_dim) for heads in kv_heads) * n_ctx * KV_BYTES_PER_VALUE


def compute_bytes(header: GGUFHeader, n_batch: int) -> int:
    """llama.cpp reserves a logits row per token of a batch, plus activations for the batch."""
    n_embd = int(header.arch_value("embedding_length", 0))
    vocab = header.metadata.get("tokenizer.ggml.tokens")
    n_vocab = vocab[1] if isinstance(vocab, tuple) else len(vocab or ())
    return COMPUTE_FLOOR_BYTES + n_batch * (n_vocab * 4 + n_embd * ACTIVATION_BYTES_PER_BATCH_TOKEN_PER_EMBD)


def _reasons(plan: FitPlan) -> list[str]:
    reasons = []
    if plan.max_model_bytes is not None and plan.model_bytes > plan.max_model_bytes:
        reasons.append(f"model file is {plan.model_bytes:,} bytes; the model-size cap is {plan.max_model_bytes:,}")
    if plan.memory_budget_bytes is not None and plan.total_bytes > plan.memory_budget_bytes:
        reasons.append(f"needs {plan.total_bytes:,} bytes (weights {plan.weights_bytes:,} + KV cache "
                       f"{plan.kv_cache_bytes:,} for {plan.n_ctx:,} tokens + compute {plan.compute_bytes:,} + prefix store "
                       f"{plan.prefix_cache_bytes:,}); "
                       f"the memory budget is {plan.memory_budget_bytes:,}")
    return reasons


def plan_gguf(header: GGUFHeader, n_ctx: int, caps: Caps, n_batch: int, prefix_cache_bytes: int = 0) -> FitPlan:
    kv_bytes, scratch_bytes = kv_cache_bytes(header, n_ctx), compute_bytes(header, n_batch)
    needed = header.weights_bytes + kv_bytes + scratch_bytes
    if caps.memory_budget_bytes is not None:
        prefix_cache_bytes = max(0, min(prefix_cache_bytes, caps.memory_budget_bytes - needed))
    plan = FitPlan(str(header.path), header.architecture, n_ctx, header.file_bytes, header.weights_bytes,
                   kv_bytes, scratch_bytes, prefix_cache_bytes, needed + prefix_cache_bytes,
                   caps.memory_budget_bytes, caps.max_model_bytes, True, [])
    plan.reasons = _reasons(plan)
    plan.fits = not plan.reasons
    return plan


def plan_files(path: Path, model_bytes: int, n_ctx: int, caps: Caps) -> FitPlan:
    """A coarse plan for formats without a parsed header: weights as the files' size, a fixed overhead."""
    plan = FitPlan(str(path), "unknown", n_ctx, model_bytes, model_bytes, 0, COMPUTE_FLOOR_BYTES, 0,
                   model_bytes + COMPUTE_FLOOR_BYTES, caps.memory_budget_bytes, caps.max_model_bytes, True, [])
    plan.reasons = _reasons(plan)
    plan.fits = not plan.reasons
    return plan


def require_fit(plan: FitPlan) -> None:
    if not plan.fits:
        raise ModelTooLargeError(f"{plan.model_path}: does not fit: " + "; ".join(plan.reasons))
