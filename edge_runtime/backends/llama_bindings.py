"""llama.cpp's ctypes bindings (``llama_cpp.llama_cpp``) without the rest of llama-cpp-python, for a fast start.

The runtime calls llama.cpp through the raw bindings only. Importing the ``llama_cpp`` package runs its
``__init__``, which also imports the high-level ``Llama`` class, its chat formats and jinja2: about 0.13 s of a
cold start that the runtime never uses. Here, when the package is not imported yet, ``llama_cpp`` is entered in
``sys.modules`` as a stand-in package (same folder, same spec) whose ``__init__`` runs on the first attribute it
lacks, so ``import llama_cpp.llama_cpp`` loads just the bindings and a later ``from llama_cpp import Llama``
(by the app, in the same process) still gets the whole package.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
import types
from pathlib import Path


def _stand_in_package() -> types.ModuleType:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None or not spec.submodule_search_locations:
        raise ImportError("llama-cpp-python is not installed")
    package = types.ModuleType("llama_cpp")
    package.__file__, package.__spec__, package.__package__ = spec.origin, spec, "llama_cpp"
    package.__loader__ = spec.loader
    package.__path__ = list(spec.submodule_search_locations)

    lock, ran = threading.RLock(), []

    def complete(name: str):
        """Runs the real ``__init__`` once, when something asks for what only it defines. Other threads asking
        meanwhile wait for that run; a lookup from inside the run itself finds what is defined so far."""
        if name.startswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)
        with lock:
            if not ran:
                ran.append(True)
                try:
                    spec.loader.exec_module(package)  # the package's own __init__, into this module
                finally:
                    package.__dict__.pop("__getattr__", None)
        if name in package.__dict__:
            return package.__dict__[name]
        raise AttributeError(f"module 'llama_cpp' has no attribute {name!r}")

    package.__getattr__ = complete
    return package


def _bindings() -> types.ModuleType:
    # a frozen program (PyInstaller) imports the whole package: its importer and hooks expect the real one
    frozen = getattr(sys, "frozen", False)
    if not frozen and "llama_cpp.llama_cpp" not in sys.modules and "llama_cpp" not in sys.modules:
        sys.modules["llama_cpp"] = _stand_in_package()
    import llama_cpp.llama_cpp as bindings

    return bindings


def version() -> str:
    """llama-cpp-python's version: the package's own when it has run, else read from its ``__init__`` without
    running it, else from the installed distribution's metadata."""
    package = sys.modules.get("llama_cpp")
    if package is not None and "__version__" in package.__dict__:
        return package.__dict__["__version__"]
    try:
        source = Path(llama_cpp.__file__).with_name("__init__.py").read_text(encoding="utf-8")
        found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", source)
        if found:
            return found.group(1)
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version("llama_cpp_python")
    except PackageNotFoundError:
        return "unknown"


llama_cpp = _bindings()
