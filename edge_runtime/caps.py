"""Hard caps and load settings, validated at the edge with pydantic.

A cap is a promise to the app that embeds the runtime: the model will not take more than this much memory,
a prompt will not be longer than this, an answer will not take longer than this. ``Caps`` holds the numbers;
the runtime enforces them (typed error or stated degradation).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def physical_memory_bytes() -> int:
    """Total RAM of this machine (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def default_memory_budget_bytes() -> int:
    """Half of physical RAM unless ``EDGE_MEMORY_BUDGET_BYTES`` says otherwise: an app shares the device."""
    configured = os.environ.get("EDGE_MEMORY_BUDGET_BYTES")
    if configured:
        return int(configured)
    return physical_memory_bytes() // 2


class Caps(BaseModel):
    """Limits a request or a loaded model must stay within. ``None`` means no cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_model_bytes: int | None = Field(default=None, gt=0)
    memory_budget_bytes: int | None = Field(default_factory=default_memory_budget_bytes, ge=0)
    max_input_tokens: int | None = Field(default=None, gt=0)
    input_policy: Literal["reject", "truncate"] = "reject"
    max_output_tokens: int = Field(default=1024, gt=0)
    ttft_deadline_s: float | None = Field(default=None, gt=0)
    total_deadline_s: float | None = Field(default=None, gt=0)


class LoadSettings(BaseModel):
    """How a backend loads a model: context length, threads, memory mapping, GPU offload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_ctx: int = Field(default=2048, gt=0, le=1_048_576)  # per sequence
    n_threads: int | None = Field(default=None, gt=0)
    n_batch: int = Field(default=256, gt=0, le=4096)
    use_mmap: bool = False
    n_gpu_layers: int = 0
    n_parallel: int = Field(default=1, ge=1, le=64)  # sequences decoded together (the server batches them)
    flash_attn: bool | None = None  # None lets llama.cpp decide
    # greedy decoding verifies prompt-lookup drafts in one batch when measured to pay (see speculation.py); it
    # loads weights without CPU repacking so a token's logits do not depend on its batch
    speculative: bool = True
    prefix_cache: bool = True  # reuse the KV state of prompt prefixes seen before (greedy output unchanged)
    prefix_cache_bytes: int = Field(default=64 * 2**20, ge=0)  # saved prefixes beyond the live KV (0: live only)
    seed: int = 0
    # weights in llama.cpp's extra buffer types (CPU repack, AMX): None decides per CPU (off where AMX is
    # advertised: it crashes there), True forces them, False refuses them
    extra_buffers: bool | None = None
    # the first load of a configuration on this machine runs a short decode in a child process and steps down to
    # a safer configuration if that child crashes (see edge_runtime.engine.probe); off for self-managed builds
    native_probe: bool = True
