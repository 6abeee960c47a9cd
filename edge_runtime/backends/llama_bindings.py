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

    def complete(name: str):
        """Runs the real ``__init__`` once, when something asks for what only it defines."""
        if name.startswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)
        del package.__dict__["__getattr__"]
        source = Path(spec.origin).read_text(encoding="utf-8")
        exec(compile(source, spec.origin, "exec"), package.__dict__)  # noqa: S102 - the package's own __init__
        return getattr(package, name)

    package.__getattr__ = complete
    return package


def _bindings() -> types.ModuleType:
    if "llama_cpp.llama_cpp" not in sys.modules and "llama_cpp" not in sys.modules:
        sys.modules["llama_cpp"] = _stand_in_package()
    import llama_cpp.llama_cpp as bindings

    return bindings


def version() -> str:
    """llama-cpp-python's version, read from its ``__init__`` without running it."""
    package = sys.modules.get("llama_cpp")
    if package is not None and "__version__" in package.__dict__:
        return package.__dict__["__version__"]
    origin = Path(llama_cpp.__file__).with_name("__init__.py")
    found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", origin.read_text(encoding="utf-8"))
    return found.group(1) if found else "unknown"


llama_cpp = _bindings()
