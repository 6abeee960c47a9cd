"""The model payload of the one-file executable: embedded once as an ELF section before PyInstaller's archive,
found again, copied out for llama.cpp; the program that carries it still runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.model_payload import (ARCHIVE_SECTION, MODEL_SECTION, TRAILER, elf_section, embed_payload,
                                         find_payload, materialize, verify)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("objcopy") is None
                                or shutil.which("true") is None,
                                reason="the payload is an ELF section: needs Linux, binutils' objcopy and `true`")


def _model(tmp_path: Path, size: int = 3 * 4096 + 17) -> Path:
    model = tmp_path / "tiny.gguf"
    model.write_bytes((b"GGUF" + bytes(range(256)) * (size // 256 + 1))[:size])
    return model


def _program(folder: Path, archive: bytes | None = b"archive...MEI\x0c\x0b\x0a\x0b\x0e") -> Path:
    """A real ELF program (a copy of `true`), with a stand-in for PyInstaller's ``pydata`` archive section."""
    program = folder / "program"
    shutil.copy(shutil.which("true"), program)
    if archive is not None:
        (folder / "archive.bin").write_bytes(archive)
        subprocess.run(["objcopy", "--add-section", f"{ARCHIVE_SECTION}={folder / 'archive.bin'}", str(program)],
                       check=True)
    return program


def test_model_lies_before_the_archive_which_stays_at_the_end(tmp_path):
    model, program = _model(tmp_path), _program(tmp_path)
    embedded = embed_payload(program, model)
    assert find_payload(program) == embedded and verify(embedded)
    assert (embedded.length, embedded.name) == (model.stat().st_size, "tiny.gguf")
    assert elf_section(program, MODEL_SECTION) == (embedded.offset, embedded.length)
    archive_offset, archive_size = elf_section(program, ARCHIVE_SECTION)
    assert archive_offset > embedded.offset + embedded.length - 1
    # what PyInstaller's bootloader scans backwards before it meets its cookie: section headers and trailer only
    assert program.stat().st_size - (archive_offset + archive_size) < 4096 + TRAILER.size
    data = program.read_bytes()
    assert data[archive_offset:archive_offset + archive_size].endswith(b"MEI\x0c\x0b\x0a\x0b\x0e")
    assert subprocess.run([str(program)], timeout=30).returncode == 0  # still a working program


def test_materialized_copy_is_byte_identical_and_kept(tmp_path):
    model, program = _model(tmp_path), _program(tmp_path, archive=None)
    payload = embed_payload(program, model)
    (tmp_path / "run").mkdir()
    target = materialize(payload, tmp_path / "run" / payload.name)
    assert target.read_bytes() == model.read_bytes()
    before = target.stat().st_mtime_ns
    assert materialize(payload, target) == target and target.stat().st_mtime_ns == before
    assert [p.name for p in target.parent.iterdir()] == [payload.name]  # no partial file left behind


def test_no_payload_and_damaged_payloads_are_told_apart(tmp_path):
    model, program = _model(tmp_path), _program(tmp_path)
    assert find_payload(program) is None
    assert find_payload(tmp_path / "missing") is None
    payload = embed_payload(program, model)
    with pytest.raises(ValueError, match="already carries"):
        embed_payload(program, model)
    data = bytearray(program.read_bytes())
    data[payload.offset + 5] ^= 0xFF
    program.write_bytes(bytes(data))
    assert not verify(find_payload(program))  # bytes changed after the build: the hash says so
    program.write_bytes(bytes(data[:-1]))
    assert find_payload(program) is None  # a truncated file has no valid trailer
    with pytest.raises(ValueError, match="not a 64-bit"):
        embed_payload(model, model)


def _as_frozen(monkeypatch, program: Path, run_folder: Path) -> None:
    """What PyInstaller's bootloader sets up for a one-file program (the real build is tested in test_bundle)."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(program))
    monkeypatch.setattr(sys, "_MEIPASS", str(run_folder), raising=False)


def test_frozen_runtime_uses_its_own_model_from_the_run_folder(tmp_path, monkeypatch):
    from edge_runtime.models import bundled_model_path, known_models

    (tmp_path / "dist").mkdir()
    model, program = _model(tmp_path), _program(tmp_path / "dist")
    embed_payload(program, model)
    run_folder = tmp_path / "_MEI123"  # a one-file run unpacks into the temporary folder, not beside the program
    run_folder.mkdir()
    monkeypatch.setenv("EDGE_RUNTIME_CACHE", str(tmp_path / "cache"))
    _as_frozen(monkeypatch, program, run_folder)
    path = bundled_model_path()
    assert path == run_folder / "tiny.gguf" and path.read_bytes() == model.read_bytes()
    assert [entry["default"] for entry in known_models() if entry["path"] == str(path)] == [True]
    assert not (tmp_path / "cache").exists()  # no second copy in the cache


def test_one_folder_build_copies_to_the_cache_not_beside_the_program(tmp_path, monkeypatch):
    from edge_runtime.models import bundled_model_path

    app = tmp_path / "app"
    (app / "_internal").mkdir(parents=True)
    program = _program(app, archive=None)
    embed_payload(program, _model(tmp_path))
    monkeypatch.setenv("EDGE_RUNTIME_CACHE", str(tmp_path / "cache"))
    _as_frozen(monkeypatch, program, app / "_internal")
    assert bundled_model_path() == tmp_path / "cache" / "models" / "tiny.gguf"
    assert sorted(p.name for p in app.rglob("*")) == ["_internal", "program"]
