"""``import edge_runtime`` and ``edge-runtime run``'s command line stay light: heavy libraries load on use.

Each check runs in a fresh interpreter and reads ``sys.modules``: it fails when someone makes an import heavy
again (a cold start pays for every module imported before the first token).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pydantic", "numpy", "llama_cpp", "jinja2", "httpx", "fastapi", "onnxruntime", "torch")


def modules_after(code: str) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                              timeout=60, check=True)
    return {name.split(".")[0] for name in json.loads(finished.stdout.splitlines()[-1])}


def test_importing_the_package_imports_no_heavy_library():
    loaded = modules_after("import edge_runtime\nfrom edge_runtime import GenerationResult, ModelFileError")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("command", ["run", "plan", "models"])
def test_a_core_command_line_skips_the_other_packages(command):
    """``edge-runtime run`` parses its arguments without importing the server, converters or fallback."""
    loaded = modules_after(f"from edge_runtime.cli import build_parser\nbuild_parser({command!r})")
    unwanted = set(HEAVY) | {"converters", "fallback", "benchmarks", "uvicorn", "starlette"}
    assert not loaded & unwanted, sorted(loaded & unwanted)


def test_the_full_command_line_still_lists_every_subcommand():
    from edge_runtime.cli import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"run", "plan", "models", "serve"} <= set(choices)


def test_loading_a_model_imports_neither_pydantic_nor_the_high_level_llama_cpp():
    """The load path (caps, plan, backend) stands on llama.cpp's ctypes bindings alone."""
    loaded = modules_after("from edge_runtime.caps import Caps, LoadSettings\n"
                           "from edge_runtime.backends import llamacpp_native\nCaps(); LoadSettings()")
    assert "llama_cpp" in loaded and not loaded & {"pydantic", "jinja2"}, sorted(loaded)
    full = subprocess.run([sys.executable, "-c", "import sys\nfrom edge_runtime.backends import llamacpp_native\n"
                           "print('llama_cpp.llama' in sys.modules)"], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=True)
    assert full.stdout.strip() == "False"


def test_an_app_still_gets_the_whole_llama_cpp_package():
    """The stand-in package runs llama-cpp-python's own ``__init__`` when an app asks for what only it has."""
    script = ("from edge_runtime.backends.llama_bindings import llama_cpp as bindings, version\n"
              "from llama_cpp import Llama\nimport llama_cpp\n"
              "print(Llama.__name__, llama_cpp.__version__ == version(), llama_cpp.llama_cpp is bindings)")
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                              timeout=60, check=True)
    assert finished.stdout.split() == ["Llama", "True", "True"]
