"""Which accelerator a benchmark (or an app) should use here: GPU offload for llama.cpp, providers for onnxruntime.

The decision is a pure function of what the machine says about itself (``AcceleratorInfo``: llama.cpp's
system-info line, whether it supports GPU offload, the GPUs found, onnxruntime's available providers, the
platform), so it is unit-tested with fakes on a machine without a GPU. ``detect()`` is the only part that
asks the machine; it imports llama_cpp and onnxruntime lazily and tolerates either being absent.

Rules:

- llama.cpp offloads every layer (``n_gpu_layers = ALL_LAYERS``) only when the build has a GPU backend
  (CUDA, Metal, Vulkan, HIP, SYCL, ...), reports GPU offload support, and a GPU is present (Metal: any
  Apple-silicon Mac). Otherwise 0 layers, with the reason.
- onnxruntime gets, in order, the GPU providers it has that match the machine (CUDA with an NVIDIA GPU,
  CoreML on macOS, DirectML on Windows), then ``CPUExecutionProvider`` always last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ALL_LAYERS = 999  # llama.cpp clamps this to the model's layer count: "offload everything"
GPU_BACKENDS = ("CUDA", "METAL", "VULKAN", "HIP", "ROCM", "SYCL", "MUSA", "CANN", "OPENCL", "KOMPUTE")
BLAS_BACKENDS = ("BLAS", "ACCELERATE", "OPENBLAS", "MKL")
CPU_PROVIDER = "CPUExecutionProvider"
GPU_VENDORS = {"cuda": ("nvidia",), "hip": ("amd", "radeon"), "rocm": ("amd", "radeon"), "musa": ("moore",)}


@dataclass(frozen=True)
class AcceleratorInfo:
    """What the machine reports; every field can be faked in tests."""

    llama_system_info: str = ""
    llama_gpu_offload: bool = False
    gpus: tuple[str, ...] = ()  # names with the vendor in them: "NVIDIA H100 80GB HBM3", "Apple M2 GPU"
    onnx_providers: tuple[str, ...] = ()
    platform: str = "linux"  # sys.platform
    machine: str = "x86_64"  # platform.machine()


@dataclass(frozen=True)
class AcceleratorChoice:
    """Settings chosen for each backend, and why."""

    n_gpu_layers: int
    llama_device: str  # "cpu" or the GPU backend's name ("cuda", "metal", ...)
    onnx_providers: tuple[str, ...]
    reasons: tuple[str, ...] = field(default_factory=tuple)


def llama_build_features(system_info: str) -> dict[str, bool]:
    """Backends and CPU features in a ``llama_print_system_info()`` line, upper-cased names -> enabled.

    Handles both layouts: old ``AVX2 = 1 | CUDA = 0 | ...`` and new ``CPU : AVX2 = 1 | ... | CUDA : ARCHS = 890``
    (a backend listed as a ``NAME :`` section is compiled in).
    """
    features: dict[str, bool] = {}
    for name, value in re.findall(r"([A-Za-z0-9_]+)\s*=\s*(\d+)", system_info):
        features[name.upper()] = features.get(name.upper(), False) or value != "0"
    for section in re.findall(r"(?:^|\|)\s*([A-Za-z0-9_]+)\s*:", system_info):
        features[section.upper()] = True
    return features


def llama_gpu_backend(features: dict[str, bool]) -> str | None:
    """The first GPU backend compiled into llama.cpp, lower-cased, or None."""
    return next((name.lower() for name in GPU_BACKENDS if features.get(name)), None)


def llama_blas(features: dict[str, bool]) -> bool:
    return any(features.get(name) for name in BLAS_BACKENDS)


def has_gpu_for(backend: str, info: AcceleratorInfo) -> bool:
    """Whether a GPU the llama.cpp ``backend`` can drive is present."""
    if backend == "metal":
        return info.platform == "darwin" and info.machine in ("arm64", "aarch64")
    vendors = GPU_VENDORS.get(backend)
    if vendors is None:
        return bool(info.gpus)
    return any(vendor in gpu.lower() for gpu in info.gpus for vendor in vendors)


def choose_llama(info: AcceleratorInfo) -> tuple[int, str, str]:
    """(n_gpu_layers, device, reason) for llama.cpp."""
    if not info.llama_system_info:
        return 0, "cpu", "llama.cpp reported no build features (llama-cpp-python not installed?): CPU only"
    backend = llama_gpu_backend(llama_build_features(info.llama_system_info))
    if backend is None:
        return 0, "cpu", "llama.cpp was built without a GPU backend: CPU only"
    if not info.llama_gpu_offload:
        return 0, "cpu", f"llama.cpp lists {backend} but reports no GPU offload support: CPU only"
    if not has_gpu_for(backend, info):
        return 0, "cpu", f"llama.cpp has {backend} but no matching GPU was found: CPU only"
    return ALL_LAYERS, backend, f"llama.cpp {backend} build and a GPU present: offload all layers"


def choose_onnx_providers(info: AcceleratorInfo) -> tuple[tuple[str, ...], str]:
    """(providers in preference order, reason) for onnxruntime."""
    if not info.onnx_providers:
        return (), "onnxruntime is not installed"
    wanted = []
    if "CUDAExecutionProvider" in info.onnx_providers and has_gpu_for("cuda", info):
        wanted.append("CUDAExecutionProvider")
    if "CoreMLExecutionProvider" in info.onnx_providers and info.platform == "darwin":
        wanted.append("CoreMLExecutionProvider")
    if "DmlExecutionProvider" in info.onnx_providers and info.platform == "win32" and info.gpus:
        wanted.append("DmlExecutionProvider")
    reason = f"onnxruntime: {', '.join(wanted)} then CPU" if wanted else "onnxruntime: no usable GPU provider: CPU"
    return (*wanted, CPU_PROVIDER), reason


def choose(info: AcceleratorInfo) -> AcceleratorChoice:
    """The settings a benchmark run uses for each backend on the machine ``info`` describes."""
    layers, device, llama_reason = choose_llama(info)
    providers, onnx_reason = choose_onnx_providers(info)
    return AcceleratorChoice(layers, device, providers, (llama_reason, onnx_reason))


def detect(gpus: tuple[str, ...] = ()) -> AcceleratorInfo:
    """Asks llama_cpp and onnxruntime (each optional) what they support; ``gpus`` come from the fingerprint."""
    import platform
    import sys

    system_info, offload = "", False
    try:
        import llama_cpp

        system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except (ImportError, AttributeError, OSError):
        pass
    try:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    except ImportError:
        providers = ()
    return AcceleratorInfo(system_info.strip(), offload, tuple(gpus), providers, sys.platform, platform.machine())
