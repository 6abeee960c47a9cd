"""Converts a GGUF file or a Hugging Face folder into GGUF, ONNX and Core ML builds, each quality-gated.

``import converters`` stays light (no torch, onnx, coremltools or llama_cpp): the heavy libraries load
inside the target that needs them. Public API::

    from converters import convert, ConvertOptions, choose_build, read_manifest
    manifest = convert("model.gguf", "out/", ConvertOptions(targets=["gguf", "onnx"]))
    fmt, path = choose_build("out/manifest.json", {"gguf", "onnx"}, memory_budget_bytes=2 << 30)
"""

from __future__ import annotations

from converters.choose import choose_build
from converters.errors import ConversionError
from converters.manifest import GateThresholds, Manifest, read_manifest
from converters.pipeline import ConvertOptions, convert

__all__ = ["ConversionError", "ConvertOptions", "GateThresholds", "Manifest", "choose_build", "convert",
           "read_manifest"]
