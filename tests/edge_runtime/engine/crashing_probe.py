"""A probe child that crashes on purpose (a test helper, not a production flag).

Run as ``python -m tests.edge_runtime.engine.crashing_probe MODEL SETTINGS_JSON CRASH_WHEN SYSTEM_INFO``: it kills
itself with SIGSEGV while the settings would put weights in extra buffers on a CPU with that llama.cpp system
info (``extra``), while flash attention is not off (``flash``), or always (``always``); otherwise it exits 0
like a probe that ran.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def should_crash(settings: dict, when: str, info: str) -> bool:
    from edge_runtime.caps import LoadSettings
    from edge_runtime.engine.safety import use_extra_buffers

    if when == "always":
        return True
    if when == "flash":
        return settings.get("flash_attn") is not False
    return use_extra_buffers(LoadSettings.model_validate(settings), info)


if __name__ == "__main__":
    if should_crash(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]):
        os.kill(os.getpid(), signal.SIGSEGV)
    sys.exit(0)
