"""The GGUF check remembered across processes: a hit skips the parse, a changed file or a bad record does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_runtime import file_verdicts, gguf_file
from edge_runtime.errors import ModelFileError
from edge_runtime.file_verdicts import FileCheckStore, file_identity
from edge_runtime.gguf_file import read_header
from tests.reliability.test_model_files_fuzz import small_gguf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checks(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own, no racy window (files here are seconds old at most), no parse
    remembered in this process."""
    monkeypatch.setenv("EDGE_NATIVE_VERDICTS", str(tmp_path / "cache" / "native-verdicts.json"))
    monkeypatch.setattr(file_verdicts, "RACY_WINDOW_NS", 0)
    gguf_file._read_header_cached.cache_clear()
    yield tmp_path / "cache" / file_verdicts.CHECKS_FOLDER
    gguf_file._read_header_cached.cache_clear()


def fresh_process(monkeypatch) -> None:
    """What a new process sees: no parse remembered in memory, and a parse that would fail the test."""
    gguf_file._read_header_cached.cache_clear()

    def must_not_parse(path):
        raise AssertionError(f"{path} was parsed again")

    monkeypatch.setattr(gguf_file, "_parse_file", must_not_parse)


def rewrite_later(path: Path, data: bytes) -> None:
    """Rewrites ``path`` in place (same inode) once the clock has moved on, keeping its modification time."""
    before = path.stat()
    time.sleep(0.02)
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate(len(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_checked_file_is_not_parsed_again(checks, tmp_path, monkeypatch):
    path = tmp_path / "small.gguf"
    path.write_bytes(small_gguf())
    parsed = read_header(path)
    assert len(list(checks.glob("*.json"))) == 1
    fresh_process(monkeypatch)
    remembered = read_header(path)
    assert remembered == parsed and remembered.path == path
    assert remembered.metadata["tiny.list"] == ("array", 70) and remembered.tensors[2].shape == (2, 2, 8)


@pytest.mark.parametrize("change", ["truncated", "same size, same mtime"])
def test_a_changed_file_is_checked_again(checks, tmp_path, change):
    path = tmp_path / "small.gguf"
    data = small_gguf()
    path.write_bytes(data)
    read_header(path)
    gguf_file._read_header_cached.cache_clear()
    if change == "truncated":
        rewrite_later(path, data[:-8])
    else:
        rewrite_later(path, b"GGUX" + data[4:])  # only the change time tells this file apart
    with pytest.raises(ModelFileError, match="truncated|magic"):
        read_header(path)


def test_another_file_at_the_same_path_is_checked_again(checks, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(small_gguf())
    read_header(path)
    gguf_file._read_header_cached.cache_clear()
    replacement = tmp_path / "replacement.gguf"
    replacement.write_bytes(small_gguf()[:100])
    os.replace(replacement, path)
    with pytest.raises(ModelFileError, match="truncated"):
        read_header(path)


@pytest.mark.parametrize("damage", [b"{not json", b"", b"[]", b'{"version": 1}',
                                    b'{"version": 1, "identity": "x", "header": null}'])
def test_a_corrupt_record_is_ignored_and_replaced(checks, tmp_path, damage):
    path = tmp_path / "small.gguf"
    path.write_bytes(small_gguf())
    parsed = read_header(path)
    (record,) = checks.glob("*.json")
    record.write_bytes(damage)
    gguf_file._read_header_cached.cache_clear()
    assert read_header(path) == parsed
    assert json.loads(record.read_text())["version"] == file_verdicts.RECORD_VERSION


def test_a_tampered_record_is_ignored(checks, tmp_path, monkeypatch):
    """A record whose tensors do not decode (or lie outside the file) is a miss, and the file is parsed."""
    path = tmp_path / "small.gguf"
    path.write_bytes(small_gguf())
    parsed = read_header(path)
    (record_path,) = checks.glob("*.json")
    record = json.loads(record_path.read_text())
    record["header"]["tensors"][0][1] = "not a shape"
    record_path.write_text(json.dumps(record))
    gguf_file._read_header_cached.cache_clear()
    assert read_header(path) == parsed


def test_a_record_claiming_tensors_past_the_end_still_fails(checks, tmp_path):
    path = tmp_path / "small.gguf"
    path.write_bytes(small_gguf())
    read_header(path)
    (record_path,) = checks.glob("*.json")
    record = json.loads(record_path.read_text())
    record["header"]["tensors"][0][3] = 1 << 40
    record_path.write_text(json.dumps(record))
    gguf_file._read_header_cached.cache_clear()
    with pytest.raises(ModelFileError, match="truncated"):
        read_header(path)


def test_a_file_changed_within_the_racy_window_is_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_NATIVE_VERDICTS", str(tmp_path / "cache" / "native-verdicts.json"))
    gguf_file._read_header_cached.cache_clear()
    path = tmp_path / "new.gguf"
    path.write_bytes(small_gguf())
    read_header(path)
    gguf_file._read_header_cached.cache_clear()
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_concurrent_writers_leave_one_whole_record(checks, tmp_path):
    path = tmp_path / "small.gguf"
    path.write_bytes(small_gguf())
    header = read_header(path)
    identity = file_identity(path, path.stat())
    store = FileCheckStore(checks)
    threads = [threading.Thread(target=store.put, args=(identity, header)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get(path, identity) == header
    assert [item.name for item in checks.iterdir()] == [store.record_path(identity).name]


def test_old_records_are_evicted(checks, tmp_path, monkeypatch):
    monkeypatch.setattr(file_verdicts, "MAX_RECORDS", 3)
    for index in range(5):
        path = tmp_path / f"model-{index}.gguf"
        path.write_bytes(small_gguf())
        read_header(path)
    assert len(list(checks.glob("*.json"))) == 3


def test_the_bundled_model_is_remembered_across_processes(bundled_path, tmp_path):
    """Two real processes: the second one finds the first one's record and does not parse the header."""
    script = ("import sys\nfrom edge_runtime import gguf_file\nparsed = []\noriginal = gguf_file._parse_file\n"
              "gguf_file._parse_file = lambda path: parsed.append(path) or original(path)\n"
              "header = gguf_file.read_header(sys.argv[1])\nprint(len(parsed), len(header.tensors))\n")
    env = {**os.environ, "EDGE_NATIVE_VERDICTS": str(tmp_path / "native-verdicts.json")}
    runs = [subprocess.run([sys.executable, "-c", script, str(bundled_path)], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=60, check=True).stdout.split() for _ in range(2)]
    assert runs[0][0] == "1" and runs[1][0] == "0" and runs[0][1] == runs[1][1]
