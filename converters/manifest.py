"""The manifest the converters write, ``DIR/manifest.json``: its schema lives with the runtime that reads it.

``edge_runtime.manifest`` defines what a manifest holds (builds, gate results, the source's checksum); this
module re-exports that schema for the converters' own code and translates the runtime's ``ManifestError`` into
the converters' one at the boundary, so converter callers keep catching ``ConversionError``.
"""

from __future__ import annotations

from pathlib import Path

from converters.errors import ManifestError
from edge_runtime import errors as runtime_errors
from edge_runtime import manifest as schema
from edge_runtime.manifest import (MANIFEST_NAME, SCHEMA_VERSION, Build, GateResult, GateThresholds, Manifest,
                                   SourceInfo)

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "Build", "GateResult", "GateThresholds", "Manifest", "SourceInfo",
           "read_manifest"]


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path`` (a manifest.json or the folder holding one); ``ManifestError`` otherwise."""
    try:
        return schema.read_manifest(path)
    except runtime_errors.ManifestError as exc:
        raise ManifestError(str(exc)) from exc
