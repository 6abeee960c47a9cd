"""Picks the backend for a model format; each format's module is imported only when it is used.

The registry is an immutable mapping from format name to ``module:Class``. Every backend class has a
``load(path, settings) -> Backend`` classmethod.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from edge_runtime.backends.base import Backend, SamplingParams
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendUnavailableError, UnknownFormatError

BACKENDS: Mapping[str, str] = MappingProxyType({
    "gguf": "edge_runtime.backends.llamacpp:LlamaCppBackend",
    "onnx": "edge_runtime.backends.onnx:OnnxBackend",
    "coreml": "edge_runtime.backends.coreml:CoreMLBackend",
})

__all__ = ["BACKENDS", "Backend", "SamplingParams", "backend_class", "load_backend"]


def backend_class(model_format: str) -> type:
    """The backend class for ``model_format``; unknown formats raise an error listing the known ones."""
    if model_format not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise UnknownFormatError(f"unknown model format {model_format!r}; known formats: {known}")
    module_name, class_name = BACKENDS[model_format].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"the {model_format} backend needs a library that is not installed: "
                                      f"{exc.name or exc}") from exc
    return getattr(module, class_name)


def load_backend(model_format: str, path: Path, settings: LoadSettings) -> Backend:
    """Loads ``path`` with the format's backend. A GGUF model's native load starts first, on a thread
    (``model_preload``), so it overlaps the import of the backend's modules."""
    if model_format != "gguf":
        return backend_class(model_format).load(path, settings)
    from edge_runtime.backends import model_preload

    started = model_preload.start(path, settings)
    try:
        return backend_class(model_format).load(path, settings)
    finally:
        model_preload.discard(started)  # the load, if the backend did not take it (it failed before it could)
