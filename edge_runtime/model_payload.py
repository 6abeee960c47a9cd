"""The bundled GGUF carried inside the one-file executable, once, and how the runtime gets a path to it.

PyInstaller's one-file mode extracts every data file to a fresh temporary folder on each start, then deletes
it; a 253 MB model would be inflated and written there even by ``edge-runtime --help``. So the model is not a
PyInstaller data file. ``build.py`` puts it into the finished executable as an ELF section of its own, placed
*before* PyInstaller's archive (the ``pydata`` section), and ends the file with a small trailer:

    [ELF program ...][section edge_model: GGUF bytes][section pydata: PyInstaller archive][section headers][trailer]
    trailer = b"EDGEGGUF" + u64 offset + u64 length + 32-byte sha256 + 64-byte file name (UTF-8, NUL padded)

The order matters: PyInstaller's bootloader finds its archive by scanning the file backwards from the end for
its cookie, in every process it starts; with the model after the archive that scan read 253 MB per start
(measured: +3.4 s CPU per start). llama.cpp needs a real file path, so the first use in a run copies the model's
bytes (in the kernel, ``copy_file_range``) into PyInstaller's per-run folder (``sys._MEIPASS``), which the
bootloader deletes at exit and which ``__run-module`` children of the same run share: the model lives once on
disk at rest and nothing is written next to the executable. A loader that reads a GGUF in place through an open
file at an offset (llama.cpp's ``llama_model_load_from_file_ptr``) could skip that copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"EDGEGGUF"
TRAILER = struct.Struct("<8sQQ32s64s")
MODEL_SECTION = "edge_model"
ARCHIVE_SECTION = "pydata"  # where PyInstaller keeps its archive on Linux


@dataclass(frozen=True)
class Payload:
    """Where the model's bytes lie inside ``container``."""

    container: Path
    offset: int
    length: int
    sha256: str
    name: str  # the model's file name, e.g. gemma-3-270m-q4_k_m.gguf


def _range_sha256(path: Path, offset: int, length: int) -> str | None:
    """sha256 (hex) of ``length`` bytes of ``path`` from ``offset``; None when the file ends before."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(offset)
        while length:
            block = handle.read(min(1 << 20, length))
            if not block:
                return None
            digest.update(block)
            length -= len(block)
    return digest.hexdigest()


def elf_section(path: Path, name: str) -> tuple[int, int] | None:
    """(file offset, size) of the named section of a 64-bit little-endian ELF file, or None."""
    with open(path, "rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise ValueError(f"{path} is not a 64-bit little-endian ELF executable")
        section_offset, = struct.unpack_from("<Q", header, 0x28)
        entry_size, count, names_index = struct.unpack_from("<HHH", header, 0x3A)
        handle.seek(section_offset)
        table = handle.read(entry_size * count)
        sections = [struct.unpack_from("<IIQQQQ", table, i * entry_size) for i in range(count)]
        handle.seek(sections[names_index][4])
        names = handle.read(sections[names_index][5])
    for name_at, _type, _flags, _address, offset, size in sections:
        if names[name_at:names.index(b"\0", name_at)].decode() == name:
            return offset, size
    return None


def _objcopy(*args: str) -> None:
    done = subprocess.run(["objcopy", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"objcopy {' '.join(args)} failed: {done.stderr.strip()}")


def embed_payload(executable: Path, model: Path) -> Payload:
    """Puts ``model`` into ``executable`` as the ``edge_model`` section, before PyInstaller's ``pydata``
    archive (moved to stay last), and appends the trailer. Needs binutils' ``objcopy`` (Linux)."""
    if find_payload(executable) is not None:
        raise ValueError(f"{executable} already carries a model payload")
    name = model.name.encode()
    if len(name) > 64 or b"\0" in name:
        raise ValueError(f"model file name {model.name!r} is longer than 64 bytes")
    with tempfile.TemporaryDirectory(dir=executable.parent) as work:
        staged, archive = Path(work) / executable.name, Path(work) / "pydata"
        shutil.copy2(executable, staged)
        has_archive = elf_section(staged, ARCHIVE_SECTION) is not None
        if has_archive:
            _objcopy("--dump-section", f"{ARCHIVE_SECTION}={archive}", "--remove-section", ARCHIVE_SECTION,
                     str(staged))
        _objcopy("--add-section", f"{MODEL_SECTION}={model}", str(staged))
        if has_archive:
            _objcopy("--add-section", f"{ARCHIVE_SECTION}={archive}", str(staged))
        offset, length = elf_section(staged, MODEL_SECTION)
        digest = _range_sha256(model, 0, model.stat().st_size)
        with open(staged, "ab") as out:
            out.write(TRAILER.pack(MAGIC, offset, length, bytes.fromhex(digest), name))
        os.replace(staged, executable)
    return Payload(executable, offset, length, digest, model.name)


def find_payload(container: Path) -> Payload | None:
    """The payload described by the trailer at the end of ``container``, or None when there is none."""
    try:
        with open(container, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size < TRAILER.size:
                return None
            handle.seek(size - TRAILER.size)
            magic, offset, length, digest, name = TRAILER.unpack(handle.read(TRAILER.size))
    except OSError:
        return None
    if magic != MAGIC or offset + length > size - TRAILER.size:
        return None
    return Payload(container, offset, length, digest.hex(), name.rstrip(b"\0").decode())


def _copy_range(source: int, target: int, offset: int, length: int) -> None:
    copied = 0
    while copied < length:
        if hasattr(os, "copy_file_range"):
            step = os.copy_file_range(source, target, length - copied, offset + copied)
        else:  # macOS, Windows: an ordinary read/write loop
            os.lseek(source, offset + copied, os.SEEK_SET)
            step = os.write(target, os.read(source, min(1 << 22, length - copied)))
        if step <= 0:
            raise OSError(f"short copy: {copied:,} of {length:,} bytes")
        copied += step


def materialize(payload: Payload, target: Path) -> Path:
    """A real file at ``target`` holding the payload's bytes (kept if one of the right size is already there).

    Written under a private name and renamed, so processes of the same run that ask together never see half a
    file. The bytes were hashed when the executable was built; here only the size is checked."""
    if target.is_file() and target.stat().st_size == payload.length:
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    source = os.open(payload.container, os.O_RDONLY)
    try:
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _copy_range(source, out, payload.offset, payload.length)
        finally:
            os.close(out)
        os.replace(partial, target)
    finally:
        os.close(source)
        partial.unlink(missing_ok=True)
    return target


def verify(payload: Payload) -> bool:
    """True when the payload's bytes hash to the sha256 recorded at build time (reads the whole model)."""
    return _range_sha256(payload.container, payload.offset, payload.length) == payload.sha256
