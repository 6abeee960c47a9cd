"""edge-runtime: run LLMs on the user's device under hard caps.

Importing this package is cheap: the backend libraries (llama_cpp, onnxruntime, coremltools) load only when a
model of their format is loaded. Start with ``Runtime.load()`` (the bundled model) or ``Runtime.load(path)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.errors import (BackendError, BackendUnavailableError, CapExceededError, EdgeRuntimeError,
                                 InvalidRequestError, ModelFileError, ModelTooLargeError, PromptTooLongError,
                                 UnknownFormatError)
from edge_runtime.results import ChoiceScores, GenerationResult, StreamEvent, Timings, TokenLogprob, Usage

if TYPE_CHECKING:
    from edge_runtime.caps import Caps, LoadSettings
    from edge_runtime.runtime import Runtime

__version__ = "0.1.0"

__all__ = ["BackendError", "BackendUnavailableError", "CapExceededError", "Caps", "ChoiceScores",
           "EdgeRuntimeError", "GenerationResult", "InvalidRequestError", "LoadSettings", "ModelFileError",
           "ModelTooLargeError", "PromptTooLongError", "Runtime", "StreamEvent", "Timings", "TokenLogprob",
           "UnknownFormatError", "Usage"]


_LAZY = {"Runtime": "edge_runtime.runtime", "Caps": "edge_runtime.caps", "LoadSettings": "edge_runtime.caps"}


def __getattr__(name: str):
    """``Runtime``, ``Caps`` and ``LoadSettings`` import pydantic and friends: load them on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
