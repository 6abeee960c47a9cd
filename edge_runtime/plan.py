"""The fit plan: how much memory a model will need for a context length, computed before loading it.

The plan is an upper bound of the process's peak resident memory (RSS), kept close to it:

- weights: the tensor bytes from the GGUF header (read into memory, or mapped and all touched by a token);
- KV cache: f16 keys and values for every cell llama.cpp allocates (``n_ctx`` per sequence, every layer:
  sliding-window layers too, since the runtime keeps llama.cpp's full-size SWA cache that prefix reuse and
  draft rewinds need); llama.cpp clears the buffer when it allocates it, so all of it is resident;
- compute: llama.cpp's scheduler buffer for the worst micro-batch (``n_ubatch`` tokens attending to every
  cell, ``n_outputs_max`` logits rows) and the CPU backend's work buffer; only what a decode touches counts
  in RSS, so this is the largest stage such a batch can touch, not the (larger) virtual reservation;
- output: llama.cpp's logits buffer, grown on demand to the rows a batch asks for (``n_outputs_max`` at most:
  the runtime asks for logits only for rows it reads, see ``context_shape``);
- runtime: the interpreter with its libraries and llama.cpp's in-memory vocabulary;
- the prefix store at its byte budget (saved KV states, see ``edge_runtime.prefix``).

``python -m benchmarks.memory_plan`` prints the plan beside the measured peak RSS. Under a memory budget the
prefix store shrinks to what is left (down to nothing) before a model is refused: it is an optimisation, the
rest is not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edge_runtime.caps import Caps, LoadSettings
from edge_runtime.errors import ModelTooLargeError
from edge_runtime.gguf_file import GGUFHeader

MiB = 1024 * 1024
KV_BYTES_PER_VALUE = 2  # llama.cpp keeps keys and values in f16 by default
LOGIT_BYTES = 4  # f32 logits
CTX_PADDING = 256  # llama.cpp rounds the context up to a multiple of this
# the most logits rows one decode asks for: a verified draft (``DraftPolicy.max_draft`` 6 + 1) or a chunk of a
# scored continuation; llama.cpp reserves compute and output buffers for this many rows, not for a whole batch
OUTPUT_ROWS = 8
# micro-batch: llama.cpp computes a decode call's ``n_batch`` tokens this many at a time, and keeps f32
# attention scores for each of them against every cell of its sequence (per head, unless flash attention). The
# micro-batch is the whole batch (fastest prefill: 256 runs 1.6x faster than 64 on the 2-core EPYC) until those
# scores would pass this many token-cells; longer contexts get smaller micro-batches (8,192 cells: 128 tokens)
MAX_UBATCH_SCORE_CELLS = 1 << 20
MIN_UBATCH = 32
# Python 3.11 with numpy, our runtime and llama.cpp's bindings and shared libraries loaded, before a model
# (measured on Linux x86-64: 43 MiB; pydantic and the high-level llama_cpp package, which the load path no longer
# imports, added 17 MiB) plus what generation adds on the Python side (tokens, results, the numpy rows it copies)
RUNTIME_BASE_BYTES = 56 * MiB
# llama.cpp's vocabulary in memory: token texts, scores, the text -> id map, the token-piece cache
# (measured: 46 MiB for Gemma 3's 262,144 tokens)
VOCAB_BYTES_PER_TOKEN = 192
FALLBACK_COMPUTE_BYTES = 64 * MiB  # formats without a parsed header


@dataclass(frozen=True)
class ContextShape:
    """The llama.cpp context a load creates, as the backend asks for it (``open_native``) and the plan sizes it."""

    n_seq_max: int  # sequences (the batched backend keeps one more than it serves, for scoring)
    n_ctx: int  # cells in all, ``settings.n_ctx`` per sequence
    n_batch: int  # tokens per decode call
    n_ubatch: int  # tokens per micro-batch inside a call
    n_outputs_max: int  # logits rows one decode may ask for
    flash_attn: bool | None
    # one KV buffer shared by every sequence (the batched backend): a decode step of any set of sequences is one
    # micro-batch, where separate per-sequence buffers split it at every gap in the sequence ids (4 requests in
    # slots 0, 2, 5, 7 cost as much as 8); a sequence then attends over every used cell, masked
    kv_unified: bool = False


def context_shape(settings: LoadSettings) -> ContextShape:
    sequences = settings.n_parallel + 1 if settings.n_parallel > 1 else 1
    n_ubatch = min(settings.n_batch, max(MIN_UBATCH, MAX_UBATCH_SCORE_CELLS // padded_cells(settings.n_ctx)))
    return ContextShape(sequences, settings.n_ctx * sequences, settings.n_batch, n_ubatch,
                        max(OUTPUT_ROWS, sequences), settings.flash_attn,  # llama.cpp reserves a row per sequence
                        kv_unified=sequences > 1)


def flash_attention_used(shape: ContextShape, settings: LoadSettings) -> bool:
    """Whether llama.cpp computes attention without materialising the scores: asked for, or left to llama.cpp
    (None) on a CPU-only load, where its automatic choice enables it (the CPU backend runs flash attention for
    every head size with f16 KV; llama.cpp logs ``Flash Attention enabled``). With layers offloaded the choice
    depends on the device, and the plan counts the scores."""
    return bool(shape.flash_attn) if shape.flash_attn is not None else settings.n_gpu_layers == 0


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
    output_bytes: int = 0
    runtime_bytes: int = 0
    n_ubatch: int = 0
    n_outputs_max: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Dimensions:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_vocab: int
    kv_values_per_cell: list[int]  # per layer: key + value elements of one cell


def _per_layer(value: object, n_layer: int, default: int) -> list[int]:
    if isinstance(value, list) and value:
        return [int(item) for item in value]
    return [int(value) if value is not None else default] * n_layer


def _dimensions(header: GGUFHeader) -> _Dimensions:
    n_layer = int(header.arch_value("block_count", 0))
    n_embd = int(header.arch_value("embedding_length", 0))
    heads = _per_layer(header.arch_value("attention.head_count"), n_layer, 1)
    kv_heads = _per_layer(header.arch_value("attention.head_count_kv"), n_layer, max(heads))
    head_dim = int(header.arch_value("attention.key_length", n_embd // max(max(heads), 1)))
    value_dim = int(header.arch_value("attention.value_length", head_dim))
    n_ff = max(_per_layer(header.arch_value("feed_forward_length"), n_layer, 4 * n_embd), default=4 * n_embd)
    vocab = header.metadata.get("tokenizer.ggml.tokens")
    n_vocab = vocab[1] if isinstance(vocab, tuple) else len(vocab or ())
    return _Dimensions(n_layer, n_embd, n_ff, max(heads), n_vocab,
                       [count * (head_dim + value_dim) for count in kv_heads])


def padded_cells(n_ctx: int) -> int:
    return -(-n_ctx // CTX_PADDING) * CTX_PADDING


def kv_cache_bytes(header: GGUFHeader, n_ctx: int) -> int:
    """f16 keys and values for every layer at every cell (sliding-window layers too: full-size SWA cache)."""
    return sum(_dimensions(header).kv_values_per_cell) * n_ctx * KV_BYTES_PER_VALUE


def compute_bytes(header: GGUFHeader, shape: ContextShape, flash_attn: bool | None = None) -> int:
    """The most a decode touches of llama.cpp's compute buffer and the CPU work buffer: the attention stage
    (scores of every head against every cell in f32 and their f16 copy for the value product, unless flash
    attention; the masks), the feed-forward stage, or the logits of ``n_outputs_max`` rows."""
    dims = _dimensions(header)
    # a sequence attends to its own cells, or, in a unified buffer, to every cell (the others masked)
    cells = padded_cells(shape.n_ctx if shape.kv_unified else shape.n_ctx // shape.n_seq_max)
    flash = shape.flash_attn if flash_attn is None else flash_attn
    scores_per_cell = 0 if flash else dims.n_head * (4 + 2)
    attention = shape.n_ubatch * cells * (scores_per_cell + 8)
    feed_forward = shape.n_ubatch * (3 * dims.n_ff + 4 * dims.n_embd) * 4
    logits = shape.n_outputs_max * dims.n_vocab * LOGIT_BYTES + shape.n_ubatch * dims.n_embd * 4 * 4
    return max(attention + feed_forward, logits)


def output_bytes(header: GGUFHeader, shape: ContextShape) -> int:
    return shape.n_outputs_max * _dimensions(header).n_vocab * LOGIT_BYTES


def runtime_bytes(header: GGUFHeader) -> int:
    return RUNTIME_BASE_BYTES + _dimensions(header).n_vocab * VOCAB_BYTES_PER_TOKEN


def _reasons(plan: FitPlan) -> list[str]:
    reasons = []
    if plan.max_model_bytes is not None and plan.model_bytes > plan.max_model_bytes:
        reasons.append(f"model file is {plan.model_bytes:,} bytes; the model-size cap is {plan.max_model_bytes:,}")
    if plan.memory_budget_bytes is not None and plan.total_bytes > plan.memory_budget_bytes:
        reasons.append(f"needs {plan.total_bytes:,} bytes (weights {plan.weights_bytes:,} + KV cache "
                       f"{plan.kv_cache_bytes:,} for {plan.n_ctx:,} tokens + compute {plan.compute_bytes:,} + "
                       f"output {plan.output_bytes:,} + runtime {plan.runtime_bytes:,} + prefix store "
                       f"{plan.prefix_cache_bytes:,}); the memory budget is {plan.memory_budget_bytes:,}")
    return reasons


def plan_gguf(header: GGUFHeader, settings: LoadSettings, caps: Caps) -> FitPlan:
    """The plan of a GGUF model loaded with ``settings`` (the prefix store only when ``settings`` keep one)."""
    shape = context_shape(settings)
    kv_bytes = kv_cache_bytes(header, padded_cells(shape.n_ctx))
    scratch_bytes = compute_bytes(header, shape, flash_attention_used(shape, settings))
    logits_bytes, base_bytes = output_bytes(header, shape), runtime_bytes(header)
    needed = header.weights_bytes + kv_bytes + scratch_bytes + logits_bytes + base_bytes
    prefix_cache_bytes = settings.prefix_cache_bytes if settings.prefix_cache else 0
    if caps.memory_budget_bytes is not None:
        prefix_cache_bytes = max(0, min(prefix_cache_bytes, caps.memory_budget_bytes - needed))
    plan = FitPlan(str(header.path), header.architecture, shape.n_ctx, header.file_bytes, header.weights_bytes,
                   kv_bytes, scratch_bytes, prefix_cache_bytes, needed + prefix_cache_bytes,
                   caps.memory_budget_bytes, caps.max_model_bytes, True, [], logits_bytes, base_bytes,
                   shape.n_ubatch, shape.n_outputs_max)
    plan.reasons = _reasons(plan)
    plan.fits = not plan.reasons
    return plan


def plan_files(path: Path, model_bytes: int, n_ctx: int, caps: Caps) -> FitPlan:
    """A coarse plan for formats without a parsed header: weights as the files' size, a fixed overhead."""
    plan = FitPlan(str(path), "unknown", n_ctx, model_bytes, model_bytes, 0, FALLBACK_COMPUTE_BYTES, 0,
                   model_bytes + FALLBACK_COMPUTE_BYTES + RUNTIME_BASE_BYTES, caps.memory_budget_bytes,
                   caps.max_model_bytes, True, [], runtime_bytes=RUNTIME_BASE_BYTES)
    plan.reasons = _reasons(plan)
    plan.fits = not plan.reasons
    return plan


def require_fit(plan: FitPlan) -> None:
    if not plan.fits:
        raise ModelTooLargeError(f"{plan.model_path}: does not fit: " + "; ".join(plan.reasons))
