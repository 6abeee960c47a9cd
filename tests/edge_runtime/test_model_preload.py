"""The GGUF model's native load starts on a thread before the backend's Python is imported (``model_preload``):
the cold start overlaps llama.cpp's load with importing numpy. What is started is taken once, by matching
arguments only; what nobody takes is freed; a malformed file is refused before llama.cpp sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.backends import model_preload
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import ModelFileError

REPO = Path(__file__).resolve().parents[2]


def test_a_started_load_is_taken_once_by_matching_arguments(bundled_path):
    settings = LoadSettings()
    model_preload.start(bundled_path, settings)
    other = model_preload.model_arguments(bundled_path, LoadSettings(use_mmap=not settings.use_mmap))
    assert model_preload.take(other) is None
    model = model_preload.take(model_preload.model_arguments(bundled_path, settings))
    try:
        assert model.pointer and model.n_vocab == 262144
        assert model_preload.take(model_preload.model_arguments(bundled_path, settings)) is None
    finally:
        model.close()


def test_a_load_nobody_takes_is_freed(bundled_path):
    model_preload.start(bundled_path, LoadSettings())
    (thread, outcome), = model_preload._started.values()
    model_preload.discard()
    assert not model_preload._started and not thread.is_alive() and outcome["model"].pointer is None


def test_a_malformed_file_is_refused_before_any_load_starts(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 60)
    with pytest.raises(ModelFileError):
        model_preload.start(broken, LoadSettings())
    assert not model_preload._started


def test_the_model_load_starts_before_numpy_is_imported():
    """A cold ``Runtime.load`` starts llama.cpp's load while numpy is still to be imported (the overlap), and
    the backend takes that model (nothing is left started)."""
    script = ("import sys\nfrom edge_runtime.backends import model_preload\nseen = []\n"
              "original = model_preload.start\n"
              "def start(path, settings):\n    seen.append('numpy' in sys.modules)\n    original(path, settings)\n"
              "model_preload.start = start\nfrom edge_runtime import Runtime\n"
              "runtime = Runtime.load()\nprint(seen, bool(model_preload._started), runtime.generate('Hi', max_tokens=1).usage.completion_tokens)")
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.split("\n")[-2] == "[False] False 1"
