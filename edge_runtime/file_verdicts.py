"""Remembers, across processes, that a GGUF file passed the header check, so a cold start does not parse it again.

The check in ``edge_runtime.gguf_file`` walks the whole header (a 262,144-token vocabulary for the bundled
model: tens of milliseconds on every start). Its result, the parsed header, is kept here in one small JSON file
per model path (``gguf-checks/`` beside ``native-verdicts.json`` in the cache folder), keyed by the file's
identity: absolute path, device, inode, size, modification time and change time (nanoseconds).

A file that changes gets a new change time (the kernel sets it; no tool can set it back), so it is checked
again. Like git's "racily clean" index entries, a file changed less than ``RACY_WINDOW_NS`` before its check is
not remembered: a second write within the same clock tick would otherwise keep every stamp. A record that
cannot be read, is corrupt, or does not match is a miss (the file is parsed again), never an error; writes are
atomic (write a partial file, then rename), so concurrent writers leave one whole record.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_runtime.gguf_file import GGUFHeader

CHECKS_FOLDER = "gguf-checks"
RECORD_VERSION = 1
MAX_RECORDS = 64  # one per model path; the least recently checked go first
RACY_WINDOW_NS = 2_000_000_000

FileIdentity = tuple[str, int, int, int, int, int]


def file_identity(path: Path, stat: os.stat_result) -> FileIdentity:
    """(absolute path, device, inode, size, mtime_ns, ctime_ns): what must all be unchanged for a hit."""
    return (os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def default_checks_folder() -> Path:
    """``gguf-checks/`` in the folder of the native verdicts (``$EDGE_NATIVE_VERDICTS`` or the cache folder)."""
    from edge_runtime.engine.verdicts import default_verdicts_path

    return default_verdicts_path().parent / CHECKS_FOLDER


class FileCheckStore:
    """Parsed headers of files that passed the check, one JSON record per absolute path."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else default_checks_folder()

    def record_path(self, identity: FileIdentity) -> Path:
        return self.folder / f"{hashlib.sha256(identity[0].encode()).hexdigest()[:32]}.json"

    def get(self, path: Path, identity: FileIdentity) -> GGUFHeader | None:
        """The remembered header of exactly this file (named ``path`` in it and its errors), or None: no record,
        another file's, or one that cannot be read."""
        try:
            record = json.loads(self.record_path(identity).read_bytes())
            if record.get("version") != RECORD_VERSION or tuple(record["identity"]) != identity:
                return None
            return decode_header(path, record["header"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
            return None

    def put(self, identity: FileIdentity, header: GGUFHeader, now_ns: int | None = None) -> bool:
        """Remembers ``header`` unless the file changed too recently to trust its stamps; True if written."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        if identity[5] > now_ns - RACY_WINDOW_NS:
            return False
        record = {"version": RECORD_VERSION, "identity": list(identity), "header": encode_header(header)}
        target = self.record_path(identity)
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(record, separators=(",", ":")))
            os.replace(partial, target)
            self._evict()
        except OSError:
            partial.unlink(missing_ok=True)
            return False  # a cache that cannot be written costs a parse next time, nothing more
        return True

    def _evict(self) -> None:
        records = sorted(self.folder.glob("*.json"), key=_mtime_or_zero)
        for stale in records[:max(0, len(records) - MAX_RECORDS)]:
            stale.unlink(missing_ok=True)


def _mtime_or_zero(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _encode_value(value: object) -> object:
    """Metadata values as JSON: a long array's summary ``("array", n)`` becomes ``{"array": n}``."""
    if isinstance(value, tuple):
        return {"array": value[1]}
    if isinstance(value, list):
        return [_encode_value(item) for item in value]
    return value


def _decode_value(value: object) -> object:
    if isinstance(value, dict):
        return ("array", int(value["array"]))
    if isinstance(value, list):
        return [_decode_value(item) for item in value]
    if value is None:
        raise ValueError("a metadata value cannot be null")
    return value


def encode_header(header: GGUFHeader) -> dict:
    return {"file_bytes": header.file_bytes, "version": header.version, "data_offset": header.data_offset,
            "metadata": [[key, _encode_value(value)] for key, value in header.metadata.items()],
            "tensors": [[t.name, list(t.shape), t.ggml_type, t.offset, t.nbytes] for t in header.tensors]}


def decode_header(path: Path, data: dict) -> GGUFHeader:
    from edge_runtime.gguf_file import GGUFHeader, TensorInfo

    tensors = [TensorInfo(str(name), tuple(int(dim) for dim in shape), int(ggml_type), int(offset), int(nbytes))
               for name, shape, ggml_type, offset, nbytes in data["tensors"]]
    metadata = {str(key): _decode_value(value) for key, value in data["metadata"]}
    return GGUFHeader(path, int(data["file_bytes"]), int(data["version"]), metadata, tensors,
                      int(data["data_offset"]))
