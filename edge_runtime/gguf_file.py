"""Reads and checks a GGUF file's header in pure Python, before llama.cpp ever sees it.

llama.cpp aborts the whole process on some malformed files (a truncated tensor section, absurd counts), so the
runtime checks here first: magic, version, metadata, tensor table, and that every tensor's bytes lie inside
the file. The metadata it returns (layers, heads, context length) feeds the fit plan without loading weights.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import ModelFileError
from edge_runtime.file_verdicts import FileCheckStore, file_identity

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_TENSORS = 1_000_000
MAX_METADATA_ENTRIES = 100_000
MAX_DIMS = 8

# ggml tensor type id -> (elements per block, bytes per block)
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}

# GGUF metadata value type id -> struct format of a scalar (strings and arrays are handled apart)
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                   12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int


@dataclass
class GGUFHeader:
    """What the header says: version, metadata (large arrays summarised by length) and tensors."""

    path: Path
    file_bytes: int
    version: int
    metadata: dict[str, object]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: object = None) -> object:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def weights_bytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)


class _Cursor:
    """Bounds-checked reads over the file's bytes; running off the end means the file is truncated."""

    def __init__(self, buffer: mmap.mmap | bytes, path: Path) -> None:
        self.buffer, self.path, self.position = buffer, path, 0

    def take(self, size: int) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.buffer):
            raise ModelFileError(self.path, f"truncated GGUF header: needs byte {end:,}, file has "
                                            f"{len(self.buffer):,}")
        chunk = self.buffer[self.position:end]
        self.position = end
        return chunk

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.scalar("<Q")
        if length > len(self.buffer):
            raise ModelFileError(self.path, f"string length {length:,} is larger than the file")
        return self.take(length).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        """Skips ``count`` length-prefixed strings without copying them (a vocabulary holds 262k of them)."""
        buffer, position, end = self.buffer, self.position, len(self.buffer)
        length_at = _U64.unpack_from
        for _ in range(count):
            if position + 8 > end:
                break
            position += 8 + length_at(buffer, position)[0]
        else:
            if position <= end:
                self.position = position
                return
        raise ModelFileError(self.path, f"truncated GGUF header: a string array runs past byte {end:,}")


def _read_value(cursor: _Cursor, value_type: int) -> object:
    if value_type in _SCALAR_FORMATS:
        return cursor.scalar(_SCALAR_FORMATS[value_type])
    if value_type == _STRING:
        return cursor.string()
    if value_type == _ARRAY:
        return _read_array(cursor)
    raise ModelFileError(cursor.path, f"unknown metadata value type {value_type}")


def _read_array(cursor: _Cursor) -> object:
    """Small arrays are returned; long ones are skipped and summarised as ``("array", length)``."""
    item_type, count = cursor.scalar("<I"), cursor.scalar("<Q")
    if count > len(cursor.buffer):
        raise ModelFileError(cursor.path, f"array of {count:,} items is larger than the file")
    if count <= 64:
        return [_read_value(cursor, item_type) for _ in range(count)]
    if item_type in _SCALAR_FORMATS:
        cursor.take(count * struct.calcsize(_SCALAR_FORMATS[item_type]))
    elif item_type == _STRING:
        cursor.skip_strings(count)
    else:
        for _ in range(count):
            _read_value(cursor, item_type)
    return ("array", count)


def _tensor_nbytes(path: Path, name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    if ggml_type not in GGML_BLOCK_SIZES:
        raise ModelFileError(path, f"tensor {name!r} has unknown ggml type {ggml_type}")
    block_elements, block_bytes = GGML_BLOCK_SIZES[ggml_type]
    elements = 1
    for dim in shape:
        elements *= dim
    if elements % block_elements:
        raise ModelFileError(path, f"tensor {name!r} has {elements} elements, not a multiple of {block_elements}")
    return elements // block_elements * block_bytes


def _read_tensor_info(cursor: _Cursor) -> TensorInfo:
    name = cursor.string()
    n_dims = cursor.scalar("<I")
    if not 0 < n_dims <= MAX_DIMS:
        raise ModelFileError(cursor.path, f"tensor {name!r} has {n_dims} dimensions")
    shape = tuple(cursor.scalar("<Q") for _ in range(n_dims))
    ggml_type, offset = cursor.scalar("<I"), cursor.scalar("<Q")
    return TensorInfo(name, shape, ggml_type, offset, _tensor_nbytes(cursor.path, name, shape, ggml_type))


def _check_counts(path: Path, tensor_count: int, kv_count: int, file_bytes: int) -> None:
    if tensor_count > MAX_TENSORS or tensor_count * 24 > file_bytes:
        raise ModelFileError(path, f"header claims {tensor_count:,} tensors; a {file_bytes:,}-byte file "
                                   f"cannot hold them")
    if kv_count > MAX_METADATA_ENTRIES or kv_count * 12 > file_bytes:
        raise ModelFileError(path, f"header claims {kv_count:,} metadata entries; a {file_bytes:,}-byte "
                                   f"file cannot hold them")


def _check_tensor_extents(header: GGUFHeader) -> None:
    for tensor in header.tensors:
        end = header.data_offset + tensor.offset + tensor.nbytes
        if end > header.file_bytes:
            raise ModelFileError(header.path, f"truncated: tensor {tensor.name!r} ends at byte {end:,} but the "
                                              f"file has {header.file_bytes:,} bytes")


def _alignment(path: Path, metadata: dict[str, object]) -> int:
    """``general.alignment``: a power of two, as llama.cpp requires (a string or array is not one)."""
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise ModelFileError(path, f"general.alignment must be a power of two, got {value!r}")
    return value


def _parse(buffer: mmap.mmap | bytes, path: Path, file_bytes: int) -> GGUFHeader:
    cursor = _Cursor(buffer, path)
    if cursor.take(4) != GGUF_MAGIC:
        raise ModelFileError(path, "not a GGUF file (wrong magic bytes)")
    version = cursor.scalar("<I")
    if version not in SUPPORTED_VERSIONS:
        raise ModelFileError(path, f"unsupported GGUF version {version} (supported: {SUPPORTED_VERSIONS})")
    tensor_count, kv_count = cursor.scalar("<Q"), cursor.scalar("<Q")
    _check_counts(path, tensor_count, kv_count, file_bytes)
    metadata = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = _read_value(cursor, cursor.scalar("<I"))
    header = GGUFHeader(path, file_bytes, version, metadata)
    header.tensors = [_read_tensor_info(cursor) for _ in range(tensor_count)]
    alignment = _alignment(path, metadata)
    header.data_offset = -(-cursor.position // alignment) * alignment
    _check_tensor_extents(header)
    return header


def check_model_path(path: str | os.PathLike) -> Path:
    """Resolves ``path`` to a readable, non-empty regular file or raises ``ModelFileError``."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise ModelFileError(resolved, "no such file")
    if resolved.is_dir():
        raise ModelFileError(resolved, "is a directory, not a model file")
    if not os.access(resolved, os.R_OK):
        raise ModelFileError(resolved, "permission denied")
    if resolved.stat().st_size == 0:
        raise ModelFileError(resolved, "file is empty")
    return resolved


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parses and checks the header of a GGUF file; raises ``ModelFileError`` on anything unusable.

    A parse (tens of milliseconds for a 262,144-token vocabulary) is remembered per file identity (path,
    device, inode, size, modification and change times): in this process, so the fit plan and the backend do
    not pay for it twice, and across processes in the cache folder (``edge_runtime.file_verdicts``), so a cold
    start does not either. A file that changes is parsed and checked again."""
    resolved = check_model_path(path)
    return _read_header_cached(resolved, file_identity(resolved, resolved.stat()))


@functools.lru_cache(maxsize=8)
def _read_header_cached(resolved: Path, identity: tuple) -> GGUFHeader:
    store = FileCheckStore()
    remembered = store.get(resolved, identity)
    if remembered is not None:
        _check_tensor_extents(remembered)  # the record says so, and the file's size still agrees
        return remembered
    header = _parse_file(resolved)
    store.put(identity, header)
    return header


def _parse_file(resolved: Path) -> GGUFHeader:
    try:
        with open(resolved, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _parse(buffer, resolved, len(buffer))
    except OSError as exc:
        raise ModelFileError(resolved, f"cannot read: {exc.strerror or exc}") from exc
