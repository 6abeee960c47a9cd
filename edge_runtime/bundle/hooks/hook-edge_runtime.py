"""PyInstaller hook for ``edge_runtime``: every submodule, because backends, extension commands and child
processes are imported by name (``importlib.import_module``, ``__import__``, ``python -m`` / ``__run-module``),
which PyInstaller's import scan cannot see."""

from PyInstaller.utils.hooks import collect_submodules, copy_metadata

BUILD_ONLY = ("edge_runtime.bundle.build",)

hiddenimports = collect_submodules("edge_runtime", filter=lambda name: name not in BUILD_ONLY)
datas = copy_metadata("edge-runtime")
