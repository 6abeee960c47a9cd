"""Freezing edge-runtime into one executable (``make bundle`` -> ``dist/edge-runtime``), for apps that ship it.

- ``build.py``: the build (``python -m edge_runtime.bundle.build``): PyInstaller one-file with
  ``edge-runtime.spec``, then the bundled GGUF embedded once (``edge_runtime.model_payload``, in the core: the runtime reads it).
- ``hooks/``: PyInstaller hooks for ``edge_runtime``, ``fallback``, ``benchmarks`` and ``llama_cpp`` (lazy
  imports by name, llama.cpp's shared libraries, package metadata). An app that imports ``edge_runtime`` and is
  frozen with PyInstaller passes ``--additional-hooks-dir`` ``hooks_dir()``.
- ``entry.py``: the frozen program's ``__main__``; it is ``edge_runtime.cli.main``, which also answers the
  ``__run-module`` requests of the runtime's own child processes (see ``edge_runtime.child_process``).

Nothing here is imported by the runtime: the payload format it reads lives in ``edge_runtime.model_payload``.
"""

from __future__ import annotations

from pathlib import Path


def hooks_dir() -> str:
    """The folder to pass to PyInstaller's ``--additional-hooks-dir``."""
    return str(Path(__file__).with_name("hooks"))
