"""Which build of a manifest runs on a device: the rule is the runtime's (``edge_runtime.build_folder``).

Re-exported here for the converters' public API (``converters.choose_build``), with the runtime's errors
translated at the boundary into the converters' ``NoBuildFitsError`` and ``ManifestError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from converters.errors import ManifestError, NoBuildFitsError
from edge_runtime import build_folder
from edge_runtime import errors as runtime_errors
from edge_runtime.build_folder import FORMAT_PREFERENCE, MEMORY_OVERHEAD, fits, rank_key

__all__ = ["FORMAT_PREFERENCE", "MEMORY_OVERHEAD", "choose_build", "fits", "rank_key"]


def choose_build(manifest_path: Path, backend_formats_available: Iterable[str],
                 memory_budget_bytes: int) -> tuple[str, Path]:
    """(format, path to load) of the best accepted build that fits; ``NoBuildFitsError`` says why none."""
    try:
        return build_folder.choose_build(manifest_path, backend_formats_available, memory_budget_bytes)
    except runtime_errors.NoBuildFitsError as exc:
        raise NoBuildFitsError(exc.reason) from exc
    except runtime_errors.ManifestError as exc:
        raise ManifestError(str(exc)) from exc
