"""PyInstaller hook for ``fallback``: every submodule (``edge_runtime.cli`` imports ``fallback.cli`` by name)."""

from PyInstaller.utils.hooks import collect_submodules

hiddenimports = collect_submodules("fallback")
