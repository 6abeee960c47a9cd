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
