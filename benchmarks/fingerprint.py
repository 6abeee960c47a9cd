"""The device fingerprint stamped on every benchmark report, so numbers from different machines can be told apart.

A tokens/s figure means little without the CPU (and its SIMD flags: llama.cpp's kernels differ for AVX2,
AVX-512 and NEON), the cores and RAM, the GPU if any, the OS, and the exact library builds (a CUDA or Metal
llama.cpp is a different program from a CPU one). ``collect()`` gathers all of it; the parsers of
``/proc/cpuinfo`` and ``nvidia-smi`` output are pure functions, tested on sample text. Only the standard
library is needed; llama_cpp and onnxruntime are asked lazily when installed. The load average is recorded
too: on a shared machine it says how much the numbers can be trusted.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata

from benchmarks import accelerators

LIBRARIES = ("edge-runtime", "llama-cpp-python", "numpy", "onnxruntime", "onnxruntime-gpu", "pydantic",
             "tokenizers", "coremltools", "matplotlib")
X86_FLAGS = {"sse4_2": ("sse4_2",), "avx": ("avx",), "avx2": ("avx2",), "fma": ("fma",), "f16c": ("f16c",),
             "avx512": ("avx512f",), "avx512_vnni": ("avx512_vnni", "avx512vnni"), "avx_vnni": ("avx_vnni",),
             "amx": ("amx_tile",)}
ARM_FLAGS = {"neon": ("asimd", "neon"), "dotprod": ("asimddp",), "i8mm": ("i8mm",), "sve": ("sve",),
             "fp16": ("fphp", "asimdhp")}
NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(CPU model name, flag set) from ``/proc/cpuinfo`` text (x86 ``flags``, ARM ``Features``)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def simd_flags(flags: set[str], machine: str) -> dict[str, bool]:
    """The SIMD features llama.cpp cares about, by our names; NEON is implied on 64-bit ARM."""
    table = ARM_FLAGS if machine.lower() in ("arm64", "aarch64") else X86_FLAGS
    found = {name: any(alias in flags for alias in aliases) for name, aliases in table.items()}
    if table is ARM_FLAGS:
        found["neon"] = True  # Advanced SIMD is mandatory on AArch64
    return found


def parse_nvidia_smi(text: str) -> list[dict]:
    """GPUs from ``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 3 or not parts[0]:
            continue
        name = parts[0] if "nvidia" in parts[0].lower() else f"NVIDIA {parts[0]}"
        memory = int(float(parts[1]) * 1024 * 1024) if parts[1].replace(".", "", 1).isdigit() else None
        gpus.append({"name": name, "vendor": "nvidia", "memory_bytes": memory, "driver": parts[2]})
    return gpus


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return ""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _macos_cpu() -> tuple[str, set[str]]:
    model = _run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
    flags = set(_run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"]).lower().split())
    return model, flags


def cpu_info() -> dict:
    """Model, SIMD flags and core counts of this CPU."""
    machine = platform.machine()
    if sys.platform == "darwin":
        model, flags = _macos_cpu()
    else:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                model, flags = parse_cpuinfo(handle.read())
        except OSError:
            model, flags = "", set()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model or platform.processor() or machine, "machine": machine,
            "flags": simd_flags(flags, machine), "logical_cores": os.cpu_count() or 0,
            "physical_cores": _physical_cores(), "usable_cores": usable or 0}


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def gpu_info(cpu_model: str) -> list[dict]:
    """NVIDIA GPUs through nvidia-smi; the integrated GPU of an Apple-silicon Mac; otherwise none found."""
    gpus = parse_nvidia_smi(_run(NVIDIA_QUERY))
    if sys.platform == "darwin" and platform.machine() == "arm64":
        gpus.append({"name": f"{cpu_model or 'Apple silicon'} GPU", "vendor": "apple", "memory_bytes": None,
                     "driver": "Metal"})
    return gpus


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def collect(label: str | None = None) -> dict:
    """The whole fingerprint as a plain dict (the report's ``device`` field validates it)."""
    cpu = cpu_info()
    gpus = gpu_info(cpu["model"])
    info = accelerators.detect(tuple(gpu["name"] for gpu in gpus))
    features = accelerators.llama_build_features(info.llama_system_info)
    return {
        "label": label or platform.node() or "unknown", "cpu": cpu, "ram_bytes": ram_bytes(), "gpus": gpus,
        "os": {"system": platform.system(), "release": platform.release(), "platform": platform.platform()},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "libraries": library_versions(),
        "llama_cpp": {"system_info": info.llama_system_info, "gpu_offload": info.llama_gpu_offload,
                      "gpu_backend": accelerators.llama_gpu_backend(features),
                      "blas": accelerators.llama_blas(features)},
        "onnxruntime_providers": list(info.onnx_providers),
        "accelerator": asdict(accelerators.choose(info)),
        "load_average": load_average(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(collect(), indent=2))
