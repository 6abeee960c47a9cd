"""``--backend`` / ``Runtime.load(backend=...)``: a model of another format is refused with a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_runtime.errors import ModelFileError
from edge_runtime.models import resolve_model


def test_a_format_filter_accepts_its_own_format_and_refuses_another(bundled_path):
    assert resolve_model(bundled_path, formats=["gguf"]).format == "gguf"
    with pytest.raises(ModelFileError, match="is a gguf model; asked for onnx"):
        resolve_model(bundled_path, formats=["onnx"])


def test_run_backend_flag_refuses_a_mismatch_in_one_line(bundled_path):
    finished = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", "Hi", "--model", str(bundled_path),
                               "--backend", "onnx", "--max-tokens", "1"], capture_output=True, timeout=120)
    assert finished.returncode == 2
    assert b"asked for onnx" in finished.stderr.strip().splitlines()[-1]
