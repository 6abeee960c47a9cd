"""Unusable model files give a typed error naming the file, before llama.cpp can abort the process."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys

import pytest

from edge_runtime.errors import ModelFileError
from edge_runtime.gguf_file import read_header
from edge_runtime.runtime import Runtime


def _truncated_copy(source, target, size):
    with open(source, "rb") as reader, open(target, "wb") as writer:
        remaining = size
        while remaining:
            block = reader.read(min(remaining, 1 << 22))
            writer.write(block)
            remaining -= len(block)
    return target


def test_bundled_header_parses(bundled_path):
    header = read_header(bundled_path)
    assert header.architecture == "gemma3"
    assert len(header.tensors) > 100
    assert 0 < header.weights_bytes <= header.file_bytes
    assert header.data_offset + max(t.offset + t.nbytes for t in header.tensors) <= header.file_bytes


def _write(directory, name, data):
    path = directory / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, reason", [
    (lambda d: d / "missing.gguf", "no such file"),
    (lambda d: d, "directory"),
    (lambda d: _write(d, "empty.gguf", b""), "empty"),
    (lambda d: _write(d, "magic.gguf", b"GGML" + b"\0" * 64), "magic"),
    (lambda d: _write(d, "version.gguf", b"GGUF" + struct.pack("<I", 99) + b"\0" * 32), "version"),
    (lambda d: _write(d, "counts.gguf", b"GGUF" + struct.pack("<IQQ", 3, 10**12, 1) + b"\0" * 32), "tensors"),
    (lambda d: _write(d, "kv.gguf", b"GGUF" + struct.pack("<IQQ", 3, 1, 10**9) + b"\0" * 32), "metadata"),
])
def test_bad_files_raise_typed_errors(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ModelFileError, match=reason) as caught:
        Runtime.load(path)
    assert str(path.name) in str(caught.value)


@pytest.mark.parametrize("fraction", [0.000001, 0.001, 0.5, 0.999999])
def test_truncated_gguf_detected_in_python(bundled_path, tmp_path, fraction):
    size = int(bundled_path.stat().st_size * fraction)
    truncated = _truncated_copy(bundled_path, tmp_path / "cut.gguf", size)
    with pytest.raises(ModelFileError, match="truncated"):
        Runtime.load(truncated)


def test_unreadable_file(bundled_path, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reads, so there is nothing to test")
    copy = tmp_path / "locked.gguf"
    shutil.copyfile(bundled_path, copy)
    copy.chmod(0)
    with pytest.raises(ModelFileError, match="permission"):
        Runtime.load(copy)


def test_cli_exits_2_with_one_line_naming_the_file(bundled_path, tmp_path):
    truncated = _truncated_copy(bundled_path, tmp_path / "cut.gguf", 5_000_000)
    completed = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", "hi", "--model", str(truncated)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "cut.gguf" in lines[0] and "truncated" in lines[0]
    assert "Traceback" not in completed.stderr
