"""What this CPU really is, as llama.cpp sees it, and the one decision that depends on it.

Flags cannot be trusted: on some Intel Xeon VMs the CPU advertises AMX, llama.cpp places weights in AMX
buffers, and the first decode segfaults (ggml-org/llama.cpp#20824; natively built llama.cpp tools die there
with SIGILL). The decision takes llama.cpp's own system-info string as an argument, so the AMX path is tested
on any machine with an injected string.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

_FEATURE = re.compile(r"([A-Z][A-Z0-9_]*)\s*=\s*(\d+)")


@lru_cache(maxsize=1)
def system_info() -> str:
    """llama.cpp's ``llama_print_system_info()`` for this process (the CPU features it detected)."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    from edge_runtime.backends.llamacpp_native import init_backend

    init_backend()
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace")


def features(info: str) -> dict[str, bool]:
    """``{"AVX2": True, "AMX_INT8": False, ...}`` from a system-info string (``NAME = 0|1`` pairs)."""
    found: dict[str, bool] = {}
    for name, value in _FEATURE.findall(info):
        found[name] = found.get(name, False) or value != "0"
    return found


def has_amx(info: str) -> bool:
    """True when llama.cpp would use AMX kernels (and AMX-tiled weight buffers) on this CPU."""
    return any(enabled for name, enabled in features(info).items() if name.startswith("AMX"))


def extra_buffers_safe(info: str) -> bool:
    """Whether weights may go to llama.cpp's extra buffer types (CPU repack, AMX) on this CPU.

    Not where AMX is advertised: those buffers crash at the first decode there. Turning the extra buffer types
    off also turns the CPU repack off; on the AMD EPYC (AVX2) VMs measured here the repack made decode no
    faster (see README), so nothing is lost by the blanket rule.
    """
    return not has_amx(info)


def cpu_fingerprint(info: str) -> str:
    """A short id of this CPU as llama.cpp and the kernel describe it (model name, flags, detected features)."""
    digest = hashlib.sha256(info.encode())
    digest.update(_cpuinfo_identity().encode())
    return digest.hexdigest()[:16]


def _cpuinfo_identity() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags", "vendor_id"))]
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    return "".join(sorted(set(lines)))
