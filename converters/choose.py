"""Picks which build of a manifest to run on this device: pure data in, one decision out.

The rule, in order:

1. only ``accepted`` builds whose format has a backend here (``backend_formats_available``);
2. only builds that fit: ``bytes * MEMORY_OVERHEAD <= memory_budget_bytes`` (weights dominate a decoder's
   memory; the overhead covers the KV cache and runtime buffers at the default context);
3. prefer formats in ``FORMAT_PREFERENCE`` order (gguf, then onnx, then coreml: llama.cpp is the fastest
   backend measured on CPUs);
4. within a format, best quality first: lowest gate ``mean_kl``, then highest ``top1_agreement``, then
   the smaller build.

Nothing is read but the manifest; no file is opened or loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from converters.errors import NoBuildFitsError
from converters.manifest import Build, read_manifest

FORMAT_PREFERENCE = ("gguf", "onnx", "coreml")
MEMORY_OVERHEAD = 1.2


def rank_key(build: Build) -> tuple:
    format_rank = FORMAT_PREFERENCE.index(build.target) if build.target in FORMAT_PREFERENCE else 99
    return format_rank, build.gate.mean_kl, -build.gate.top1_agreement, build.bytes


def fits(build: Build, memory_budget_bytes: int) -> bool:
    return build.bytes * MEMORY_OVERHEAD <= memory_budget_bytes


def choose_build(manifest_path: Path, backend_formats_available: Iterable[str],
                 memory_budget_bytes: int) -> tuple[str, Path]:
    """(format, path to load) of the best accepted build that fits; ``NoBuildFitsError`` says why none."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    formats = set(backend_formats_available)
    usable = [b for b in manifest.builds if b.status == "accepted" and b.target in formats]
    fitting = [b for b in usable if fits(b, memory_budget_bytes)]
    if not fitting:
        raise NoBuildFitsError(_why_none(manifest.builds, usable, formats, memory_budget_bytes))
    best = min(fitting, key=rank_key)
    folder = manifest_path if manifest_path.is_dir() else manifest_path.parent
    return best.target, folder / best.entry


def _why_none(builds: list[Build], usable: list[Build], formats: set[str], budget: int) -> str:
    accepted = sum(b.status == "accepted" for b in builds)
    if not usable:
        return (f"no accepted build in a usable format: {accepted} of {len(builds)} builds accepted; "
                f"formats available here: {', '.join(sorted(formats)) or 'none'}")
    smallest = min(usable, key=lambda b: b.bytes)
    return (f"no accepted build fits the memory budget of {budget:,} bytes; the smallest, "
            f"{smallest.target} {smallest.preset}, needs about {int(smallest.bytes * MEMORY_OVERHEAD):,}")
