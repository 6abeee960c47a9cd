"""Every error the converters raise, under one root so the CLI can turn them all into clean messages.

The tree::

    ConversionError
    ├── SourceError                   the source folder or GGUF file cannot be read (missing file, bad JSON)
    │   └── UnsupportedModelError     an architecture or feature no target handles (names the supported ones)
    ├── MissingDependencyError        a converter library is not installed (names the pip extra)
    ├── UnknownPresetError            a target or preset name that does not exist (lists the known ones)
    ├── ExportError                   a target's exporter or quantizer failed (wraps the library's error)
    ├── ManifestError                 manifest.json is missing or does not match the schema
    └── NoBuildFitsError              choose_build found no accepted build for the formats and budget

A build that fails the quality gate is not an error: it is recorded as ``rejected`` in the manifest, and the
CLI exits non-zero unless ``--allow-degraded``.
"""

from __future__ import annotations


class ConversionError(Exception):
    """Root of every error raised by ``converters``."""


class SourceError(ConversionError):
    """The source model cannot be read."""


class UnsupportedModelError(SourceError):
    """The source uses an architecture or feature the converters do not handle."""


class MissingDependencyError(ConversionError):
    """A library a converter needs is not installed."""

    def __init__(self, package: str, extra: str = "convert") -> None:
        self.package = package
        super().__init__(f"{package} is not installed; install it with: pip install 'edge-runtime[{extra}]'")


class UnknownPresetError(ConversionError):
    """A target or quantization preset that does not exist."""


class ExportError(ConversionError):
    """A target's export or quantization step failed."""


class ManifestError(ConversionError):
    """The manifest is missing or invalid."""


class NoBuildFitsError(ConversionError):
    """No accepted build matches the available formats and memory budget."""
