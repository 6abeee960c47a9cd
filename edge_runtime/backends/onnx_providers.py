"""Which execution provider an ONNX build runs on: chosen from what is installed and present, CPU last.

Pure functions over what the libraries report, so they are testable without a GPU. ``EDGE_ONNX_PROVIDER``
overrides the choice (``cpu``, ``cuda``, ``dml``, ``webgpu``, ``qnn``, ``openvino``): onnxruntime-genai reports
providers it was *built* with (its CPU wheel says WebGPU is available on a machine without a GPU), so only
CUDA (needs the CUDA builds of onnxruntime and onnxruntime-genai) and DirectML (Windows) are picked
automatically; the others need the override.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

OVERRIDE_ENV = "EDGE_ONNX_PROVIDER"
CPU_PROVIDER = "CPUExecutionProvider"
ORT_NAMES = {"cuda": "CUDAExecutionProvider", "dml": "DmlExecutionProvider", "webgpu": "WebGpuExecutionProvider",
             "qnn": "QNNExecutionProvider", "openvino": "OpenVINOExecutionProvider", "cpu": CPU_PROVIDER}
GENAI_NAMES = {"cuda": "cuda", "dml": "dml", "webgpu": "WebGPU", "qnn": "QNN", "openvino": "OpenVINO", "cpu": "cpu"}


def wanted_provider(override: str | None = None) -> str | None:
    """The provider the user asked for with ``EDGE_ONNX_PROVIDER`` (lower-case short name), or None."""
    value = (override if override is not None else os.environ.get(OVERRIDE_ENV, "")).strip().lower()
    if value and value not in ORT_NAMES:
        from edge_runtime.errors import InvalidRequestError

        raise InvalidRequestError(f"{OVERRIDE_ENV}={value!r}: known providers: {', '.join(ORT_NAMES)}")
    return value or None


def choose_ort_providers(available: Sequence[str], platform: str = sys.platform,
                         override: str | None = None) -> list[str]:
    """onnxruntime providers in preference order, CPU always last."""
    wanted = wanted_provider(override)
    if wanted is not None:
        return [ORT_NAMES[wanted]] + ([CPU_PROVIDER] if wanted != "cpu" else [])
    chosen = [name for name in ("CUDAExecutionProvider",) if name in available]
    if platform == "win32" and "DmlExecutionProvider" in available:
        chosen.append("DmlExecutionProvider")
    return [*chosen, CPU_PROVIDER]


def choose_genai_name(cuda: bool, dml: bool, ort_available: Sequence[str], platform: str = sys.platform,
                      override: str | None = None) -> str:
    """The onnxruntime-genai provider name (``"cpu"`` means none appended)."""
    wanted = wanted_provider(override)
    if wanted is not None:
        return GENAI_NAMES[wanted]
    if cuda and "CUDAExecutionProvider" in ort_available:
        return "cuda"
    if dml and platform == "win32":
        return "dml"
    return "cpu"


def choose_genai_provider(og) -> str:
    """``choose_genai_name`` with what the installed onnxruntime-genai and onnxruntime report."""
    import onnxruntime

    return choose_genai_name(bool(og.is_cuda_available()), bool(og.is_dml_available()),
                             onnxruntime.get_available_providers())
