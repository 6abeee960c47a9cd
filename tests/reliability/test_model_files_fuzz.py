"""Broken model files end in a typed ``ModelFileError`` (or ``BackendError`` from llama.cpp), never a crash.

Hypothesis truncates and corrupts a small GGUF this test writes by hand, so every byte of a header is reached in
milliseconds; the bundled file is cut at a few offsets that matter (inside the magic, the metadata, the tensor
table, the data). Absurd counts and sizes, a file truncated between the Python check and llama.cpp's load, an
unreadable file (as a non-root user: the suite runs as root), and paths outside the allowed model folders. The
server does not take model paths from requests: a path in the ``model`` field is never opened and the server
keeps serving.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.errors import ModelFileError
from edge_runtime.gguf_file import read_header
from edge_runtime.models import resolve_model
from tests.reliability.conftest import build_server, running

ALIGNMENT = 32
F32 = 0


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _kv_u32(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", 4, value)


def _kv_str(key: str, value: str) -> bytes:
    return _string(key) + struct.pack("<I", 8) + _string(value)


def _kv_array(key: str, values: list[int]) -> bytes:
    return _string(key) + struct.pack("<IIQ", 9, 5, len(values)) + struct.pack(f"<{len(values)}i", *values)


def small_gguf(tensor_shapes=((4, 8), (16,), (2, 2, 8)), metadata: bytes | None = None,
               kv_count: int | None = None, tensor_count: int | None = None) -> bytes:
    """A GGUF v3 with f32 tensors, valid by default; the last tensor ends exactly at the end of the file."""
    kvs = metadata if metadata is not None else (
        _kv_str("general.architecture", "tiny") + _kv_u32("tiny.block_count", 2)
        + _kv_u32("general.alignment", ALIGNMENT) + _kv_array("tiny.list", list(range(70))))
    n_kv = kv_count if kv_count is not None else (4 if metadata is None else 0)
    infos, offset, data = b"", 0, b""
    for index, shape in enumerate(tensor_shapes):
        nbytes = 4 * _product(shape)
        infos += _string(f"t{index}") + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        infos += struct.pack("<IQ", F32, offset)
        padded = -(-nbytes // ALIGNMENT) * ALIGNMENT if index < len(tensor_shapes) - 1 else nbytes
        data += b"\0" * min(padded, 4096)  # an absurd shape gets a few bytes, not its claimed size
        offset += padded
    n_tensors = tensor_count if tensor_count is not None else len(tensor_shapes)
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + infos
    return head + b"\0" * (-len(head) % ALIGNMENT) + data


def _product(shape) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[bytes, int]:
    """The small file's bytes and how many of them are needed (header, padding and every tensor's data)."""
    data = small_gguf()
    path = tmp_path_factory.mktemp("small") / "small.gguf"
    path.write_bytes(data)
    header = read_header(path)
    needed = header.data_offset + max(tensor.offset + tensor.nbytes for tensor in header.tensors)
    assert needed == len(data) and len(header.tensors) == 3 and header.metadata["tiny.list"] == ("array", 70)
    return data, needed


def fresh(folder: Path) -> Path:
    """A new file name (so a new inode) per case: ``read_header`` caches parses by device, inode, size and
    modification time, and rewriting one file faster than the clock ticks would hit a stale entry."""
    return folder / f"case-{uuid.uuid4().hex}.gguf"


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_every_truncation_of_a_small_gguf_is_a_typed_error(small, tmp_path, fraction):
    data, needed = small
    cut = int(len(data) * fraction)
    path = fresh(tmp_path)
    path.write_bytes(data[:cut])
    with pytest.raises(ModelFileError) as caught:
        read_header(path)
    assert caught.value.path == str(path)


def test_every_single_truncation_offset(small, tmp_path):
    """All offsets, not a sample: the file is only a few hundred bytes."""
    data, _ = small
    for cut in range(len(data)):
        path = fresh(tmp_path)
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            read_header(path)


@FAST
@given(data=st.data())
def test_corrupted_header_bytes_never_escape_as_untyped_errors(small, tmp_path, data):
    """Overwrite 1-8 bytes anywhere in the header: the parse succeeds or raises ModelFileError, nothing else."""
    original, _ = small
    header_end = len(original) - 4 * (4 * 8 + 16 + 2 * 2 * 8)
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        mutated[data.draw(st.integers(0, header_end - 1))] = data.draw(st.integers(0, 255))
    path = fresh(tmp_path)
    path.write_bytes(bytes(mutated))
    try:
        header = read_header(path)
    except ModelFileError:
        return
    assert all(header.data_offset + t.offset + t.nbytes <= header.file_bytes for t in header.tensors)


@pytest.mark.parametrize("make, reason", [
    (lambda: b"GGUF"[::-1] + small_gguf()[4:], "magic"),
    (lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "magic"),
    (lambda: small_gguf(tensor_count=2 ** 63), "tensors"),
    (lambda: small_gguf(tensor_count=40), "tensors|truncated"),
    (lambda: small_gguf(kv_count=2 ** 64 - 1), "metadata"),
    (lambda: small_gguf(tensor_shapes=((2 ** 31, 2 ** 31, 2 ** 31),)), "truncated"),
    (lambda: small_gguf(tensor_shapes=((2 ** 64 - 1,),)), "truncated"),
    (lambda: small_gguf(tensor_shapes=((1,) * 9,)), "dimensions"),
    (lambda: small_gguf(metadata=_string("k") + struct.pack("<IQ", 8, 2 ** 62), kv_count=1), "larger than"),
    (lambda: small_gguf(metadata=_string("k") + struct.pack("<IIQ", 9, 4, 2 ** 60), kv_count=1), "larger than"),
    (lambda: small_gguf(metadata=_string("k") + struct.pack("<I", 77), kv_count=1), "value type"),
    (lambda: small_gguf(metadata=_kv_str("general.alignment", "thirty-two"), kv_count=1), "alignment"),
    (lambda: small_gguf(metadata=_kv_array("general.alignment", list(range(70))), kv_count=1), "alignment"),
    (lambda: small_gguf(metadata=_string("general.alignment") + struct.pack("<Ii", 5, -32), kv_count=1),
     "alignment"),
])
def test_absurd_headers_are_typed_errors(tmp_path, make, reason):
    path = tmp_path / "absurd.gguf"
    path.write_bytes(make())
    with pytest.raises(ModelFileError, match=reason):
        read_header(path)


def _sparse_cut(source: Path, target: Path, size: int, header_bytes: int) -> Path:
    """The first ``min(size, header_bytes)`` bytes of ``source``, then a hole up to ``size``: the same size and
    header as a truncated copy without writing a quarter gigabyte per case."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        writer.write(reader.read(min(size, header_bytes)))
        writer.truncate(size)
    return target


@pytest.fixture(scope="module")
def bundled_header(bundled_path):
    return read_header(bundled_path)


@pytest.mark.parametrize("where", ["in-magic", "after-version", "in-metadata", "in-tensor-table",
                                   "before-data", "in-first-tensor", "one-byte-short"])
def test_bundled_file_cut_at_meaningful_offsets(bundled_path, bundled_header, tmp_path, where):
    from edge_runtime.runtime import Runtime

    header = bundled_header
    first = min(header.tensors, key=lambda tensor: tensor.offset)
    offsets = {"in-magic": 2, "after-version": 8, "in-metadata": 4096, "in-tensor-table": header.data_offset - 700,
               "before-data": header.data_offset - 1, "in-first-tensor": header.data_offset + first.nbytes // 2,
               "one-byte-short": header.file_bytes - 1}
    path = _sparse_cut(bundled_path, tmp_path / "cut.gguf", offsets[where], header.data_offset)
    with pytest.raises(ModelFileError, match="truncated|magic|cannot hold") as caught:
        Runtime.load(path)
    assert caught.value.path == str(path)


CHANGE_WHILE_LOADING = r"""
import os, sys
from pathlib import Path
import edge_runtime.backends.llamacpp as llamacpp
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.runtime import Runtime

path = Path(sys.argv[1])
checked = llamacpp.read_header

def check_then_cut(target):
    header = checked(target)           # the Python check passes on the whole file ...
    os.truncate(target, header.data_offset + 4096)   # ... then the file shrinks before llama.cpp reads it
    return header

llamacpp.read_header = check_then_cut
try:
    Runtime.load(path)
except EdgeRuntimeError as exc:
    print("typed:", type(exc).__name__)
else:
    print("loaded")
"""


def test_file_truncated_between_check_and_load_is_a_typed_error(bundled_path, tmp_path):
    """Run in a child process, so that if llama.cpp aborted, this test would fail instead of the suite dying."""
    copy = tmp_path / "changing.gguf"
    with open(bundled_path, "rb") as reader, open(copy, "wb") as writer:
        while block := reader.read(1 << 24):
            writer.write(block)
    child = subprocess.run([sys.executable, "-c", CHANGE_WHILE_LOADING, str(copy)], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() in ("typed: BackendError", "typed: ModelFileError"), child.stdout


UNREADABLE = r"""
import os, sys
from edge_runtime.errors import ModelFileError
from edge_runtime.gguf_file import read_header
os.setgid(65534); os.setuid(65534)   # nobody, after the imports (Python itself lives under /root)
try:
    read_header(sys.argv[1])
except ModelFileError as exc:
    print("typed:", exc.reason)
"""


def test_unreadable_file_as_an_unprivileged_user(small, tmp_path):
    """Root reads any file, so the check runs in a child that drops to ``nobody`` first."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the nobody user (as an ordinary user, see test_model_files.py)")
    folder = Path(tempfile.mkdtemp(prefix="edge-unreadable-"))
    try:
        folder.chmod(0o755)
        locked = folder / "locked.gguf"
        locked.write_bytes(small[0])
        locked.chmod(0)
        child = subprocess.run([sys.executable, "-c", UNREADABLE, str(locked)], capture_output=True, text=True,
                               timeout=60, cwd=Path(__file__).resolve().parents[2])
    finally:
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "typed: permission denied"


def test_paths_outside_the_allowed_model_folders_are_refused(small, tmp_path):
    allowed = tmp_path / "models"
    allowed.mkdir()
    (allowed / "ok.gguf").write_bytes(small[0])
    outside = tmp_path / "elsewhere.gguf"
    outside.write_bytes(small[0])
    (allowed / "escape.gguf").symlink_to(outside)
    assert resolve_model(allowed / "ok.gguf", allowed_dirs=[allowed]).format == "gguf"
    for path in (outside, allowed / ".." / "elsewhere.gguf", allowed / "escape.gguf", "/etc/passwd"):
        with pytest.raises(ModelFileError, match="outside the allowed model folders"):
            resolve_model(path, allowed_dirs=[allowed])


@pytest.mark.parametrize("model", ["/etc/passwd", "../../../../etc/shadow", "/proc/self/mem", "x" * 5000,
                                   "C:\\Windows\\system32\\config\\SAM", "\x00gguf"])
def test_model_field_is_a_name_never_a_path(tiny, monkeypatch, model):
    """Whatever the ``model`` field says, the server answers with its own model and opens no file."""
    import edge_runtime.gguf_file
    import edge_runtime.models

    opened = []
    monkeypatch.setattr(edge_runtime.models, "resolve_model", lambda *a, **k: opened.append(a))
    monkeypatch.setattr(edge_runtime.gguf_file, "read_header", lambda *a, **k: opened.append(a))
    built = build_server(tiny, base_url=None)
    with running(built.app) as url, httpx.Client(base_url=url, timeout=30) as http:
        response = http.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2})
        assert response.status_code == 200 and response.json()["model"] == "edge-runtime-local"
        assert http.get("/health").json()["status"] == "ok"
    assert opened == []
