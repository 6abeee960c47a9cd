"""The native configuration a load runs with, and the safer ones to step down to when it crashes.

A configuration is what decides which native kernels run: weights in llama.cpp's extra buffer types (CPU
repack, AMX), flash attention, the thread count, the batched or single-sequence context. The ladder steps down
one risky feature at a time: no extra buffer types, then no flash attention, then a single thread.
"""

from __future__ import annotations

from collections.abc import Iterator

from edge_runtime.caps import LoadSettings
from edge_runtime.engine.cpu import extra_buffers_safe

SAFER_STEPS = (
    ("extra buffer types off", {"extra_buffers": False}),
    ("flash attention off", {"flash_attn": False}),
    ("a single thread", {"n_threads": 1}),
)


def wants_repack(settings: LoadSettings) -> bool:
    """Whether this load path asks for repacked weights: exact speculation needs them as stored."""
    return settings.n_parallel > 1 or not settings.speculative


def use_extra_buffers(settings: LoadSettings, info: str) -> bool:
    """The effective ``use_extra_bufts`` of a load: asked for by the load path, allowed by the settings (True
    forces it, False refuses it) and, left to us (None), safe on this CPU."""
    if not wants_repack(settings) or settings.extra_buffers is False:
        return False
    return settings.extra_buffers is True or extra_buffers_safe(info)


def signature(settings: LoadSettings, info: str) -> dict:
    """The parts of ``settings`` that choose native code paths (what a crash verdict is about)."""
    from edge_runtime.backends.llamacpp_native import default_threads

    return {"extra_buffers": use_extra_buffers(settings, info), "flash_attn": settings.flash_attn,
            "n_threads": settings.n_threads or default_threads(), "n_gpu_layers": settings.n_gpu_layers,
            "use_mmap": settings.use_mmap, "batched": settings.n_parallel > 1}


def describe(settings: LoadSettings, info: str) -> str:
    parts = signature(settings, info)
    flash = {None: "auto", True: "on", False: "off"}[parts["flash_attn"]]
    return (f"extra buffers {'on' if parts['extra_buffers'] else 'off'}, flash attention {flash}, "
            f"{parts['n_threads']} thread(s), {'batched' if parts['batched'] else 'single'} context")


def ladder(settings: LoadSettings, info: str) -> Iterator[tuple[str, LoadSettings]]:
    """``settings`` first, then each safer step that changes the native configuration (cumulative)."""
    yield "as configured", settings
    seen = [signature(settings, info)]
    current = settings
    for label, change in SAFER_STEPS:
        current = current.model_copy(update=change)
        if signature(current, info) not in seen:
            seen.append(signature(current, info))
            yield label, current


def next_safer(settings: LoadSettings, info: str) -> tuple[str, LoadSettings] | None:
    """The first step of the ladder below ``settings`` (None when it is already the safest)."""
    steps = ladder(settings, info)
    next(steps)
    return next(steps, None)
