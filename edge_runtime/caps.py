"""Hard caps and load settings: small frozen dataclasses that check their values when built.

A cap is a promise to the app that embeds the runtime: the model will not take more than this much memory,
a prompt will not be longer than this, an answer will not take longer than this. ``Caps`` holds the numbers;
the runtime enforces them (typed error or stated degradation).

They are plain dataclasses, not pydantic models: ``Runtime.load`` needs them before anything else, and importing
pydantic and building its models cost about 0.2 s of every cold start. They keep the part of pydantic's
interface the rest of the code uses (``model_copy``, ``model_dump``, ``model_dump_json``, ``model_validate``,
``model_validate_json``); a wrong type, a value out of range or an unknown field raises ``ValueError`` naming
the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Check:
    """What one field accepts: a type (``int`` never takes a bool, ``float`` takes an int), None when
    ``optional``, bounds, or a set of ``choices``."""

    kind: type
    optional: bool = False
    above: float | None = None  # strictly greater than
    at_least: float | None = None
    at_most: float | None = None
    choices: tuple = ()

    def problem(self, value: object) -> str | None:
        if value is None:
            return None if self.optional else "may not be None"
        if self.choices:
            return None if value in self.choices else f"must be one of {list(self.choices)}"
        kinds = (int, float) if self.kind is float else (self.kind,)
        if not isinstance(value, kinds) or (self.kind is not bool and isinstance(value, bool)):
            return f"must be {self.kind.__name__}, not {type(value).__name__}"
        for bound, fails, words in ((self.above, lambda v, b: v <= b, "greater than"),
                                    (self.at_least, lambda v, b: v < b, "at least"),
                                    (self.at_most, lambda v, b: v > b, "at most")):
            if bound is not None and fails(value, bound):
                return f"must be {words} {bound:g}"
        return None


def checked(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **check):
    """A dataclass field with its ``Check``."""
    return field(default=default, default_factory=default_factory, metadata={"check": Check(**check)})


class Settings:
    """Validation on construction and the pydantic-style methods the code base calls."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            rule = spec.metadata.get("check")
            problem = rule.problem(getattr(self, spec.name)) if rule is not None else None
            if problem:
                raise ValueError(f"{type(self).__name__}.{spec.name} {problem} (got {getattr(self, spec.name)!r})")

    def model_copy(self, update: dict | None = None):
        return dataclasses.replace(self, **(update or {}))

    def model_dump(self) -> dict:
        return dataclasses.asdict(self)

    def model_dump_json(self) -> str:
        return json.dumps(self.model_dump())

    @classmethod
    def model_validate(cls, data: dict):
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
        return cls(**data)

    @classmethod
    def model_validate_json(cls, text: str | bytes):
        return cls.model_validate(json.loads(text))


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


@dataclass(frozen=True, kw_only=True)
class Caps(Settings):
    """Limits a request or a loaded model must stay within. ``None`` means no cap."""

    max_model_bytes: int | None = checked(None, kind=int, optional=True, above=0)
    memory_budget_bytes: int | None = checked(default_factory=lambda: default_memory_budget_bytes(), kind=int,
                                              optional=True, at_least=0)
    max_input_tokens: int | None = checked(None, kind=int, optional=True, above=0)
    input_policy: Literal["reject", "truncate"] = checked("reject", kind=str, choices=("reject", "truncate"))
    max_output_tokens: int = checked(1024, kind=int, above=0)
    ttft_deadline_s: float | None = checked(None, kind=float, optional=True, above=0)
    total_deadline_s: float | None = checked(None, kind=float, optional=True, above=0)


@dataclass(frozen=True, kw_only=True)
class LoadSettings(Settings):
    """How a backend loads a model: context length, threads, memory mapping, GPU offload."""

    n_ctx: int = checked(2048, kind=int, above=0, at_most=1_048_576)  # per sequence
    n_threads: int | None = checked(None, kind=int, optional=True, above=0)
    n_batch: int = checked(256, kind=int, above=0, at_most=4096)
    # map the file (llama.cpp's default, ~0.3 s faster to load, pages shared with other processes) rather than
    # read it: a file overwritten in place (not replaced by rename) under a running in-process load then ends
    # the process with SIGBUS; the server's engine runs in a supervised child, where that is a restart
    use_mmap: bool = checked(True, kind=bool)
    n_gpu_layers: int = checked(0, kind=int)
    n_parallel: int = checked(1, kind=int, at_least=1, at_most=64)  # sequences decoded together (server batches)
    flash_attn: bool | None = checked(None, kind=bool, optional=True)  # None lets llama.cpp decide
    # greedy decoding verifies prompt-lookup drafts in one batch when measured to pay (see speculation.py); it
    # loads weights without CPU repacking so a token's logits do not depend on its batch
    speculative: bool = checked(True, kind=bool)
    prefix_cache: bool = checked(True, kind=bool)  # reuse the KV state of prompt prefixes seen before
    prefix_cache_bytes: int = checked(64 * 2**20, kind=int, at_least=0)  # saved prefixes beyond the live KV
    seed: int = checked(0, kind=int)
    # weights in llama.cpp's extra buffer types (CPU repack, AMX): None decides per CPU (off where AMX is
    # advertised: it crashes there), True forces them, False refuses them
    extra_buffers: bool | None = checked(None, kind=bool, optional=True)
    # the first load of a configuration on this machine runs a short decode in a child process and steps down to
    # a safer configuration if that child crashes (see edge_runtime.engine.probe); off for self-managed builds
    native_probe: bool = checked(True, kind=bool)
    # recorded hidden states carry the middle layer's output beside the final one (a calibration's "middle"
    # probe reads it; see edge_runtime.backends.hidden_state): costs a trip into Python per graph node
    middle_layer: bool = checked(False, kind=bool)
