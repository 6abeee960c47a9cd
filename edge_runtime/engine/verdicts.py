"""Crash verdicts of native configurations, cached per (model file, llama.cpp build, CPU, configuration).

A small JSON file under the user's cache folder (``native-verdicts.json``). Once a configuration has been
probed on this machine, later loads read its verdict and pay nothing; a new llama.cpp build, a changed model
file or another CPU (a VM moved to other hardware) gets probed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

VERDICTS_FILE = "native-verdicts.json"
IDENTITY_BYTES = 1 << 20


@dataclass(frozen=True)
class Verdict:
    """``ok`` False means the configuration killed its process (``detail`` says how: "killed by SIGSEGV")."""

    ok: bool
    detail: str
    configuration: str = ""
    checked_at: float = 0.0


@lru_cache(maxsize=1)
def llama_build_id() -> str:
    """The llama.cpp build this process runs: the binding's version and its native libraries' names and sizes
    (not their times or folder: a one-file executable unpacks them afresh at every start)."""
    from edge_runtime.backends.llama_bindings import llama_cpp, version

    library = Path(llama_cpp.__file__).parent / "lib"
    stats = sorted((path.name, path.stat().st_size) for path in library.glob("*.so*")) if library.is_dir() else []
    return f"{version()}:{hashlib.sha256(repr(stats).encode()).hexdigest()[:12]}"


def file_identity(path: Path) -> list:
    """The model file by content, cheaply: its size and a hash of its first and last MiB (not its path or
    times: the same model copied elsewhere, or unpacked by a frozen build at every start, is the same model)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(IDENTITY_BYTES))
        if size > 2 * IDENTITY_BYTES:
            handle.seek(size - IDENTITY_BYTES)
            digest.update(handle.read(IDENTITY_BYTES))
    return [size, digest.hexdigest()[:32]]


def verdict_key(path: Path, configuration: dict, cpu: str, build: str) -> str:
    material = json.dumps({"file": file_identity(path), "build": build, "cpu": cpu, "config": configuration},
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def default_verdicts_path() -> Path:
    """``$EDGE_NATIVE_VERDICTS``, else ``native-verdicts.json`` in the user's cache folder."""
    configured = os.environ.get("EDGE_NATIVE_VERDICTS")
    if configured:
        return Path(configured).expanduser()
    from edge_runtime.models import cache_dir

    return cache_dir() / VERDICTS_FILE


class VerdictStore:
    """Verdicts keyed by ``verdict_key``; reads and writes the whole (small) file, atomically."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_verdicts_path()

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Verdict | None:
        record = self._read().get(key)
        if not isinstance(record, dict):
            return None
        try:
            return Verdict(**record)
        except TypeError:
            return None

    def put(self, key: str, verdict: Verdict) -> None:
        records = self._read()
        records[key] = asdict(verdict) | {"checked_at": verdict.checked_at or time.time()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(records, indent=1))
            os.replace(partial, self.path)
        except OSError:
            pass  # a cache that cannot be written costs a probe next time, nothing more
