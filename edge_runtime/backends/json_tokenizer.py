"""The tokenizer of ONNX and Core ML builds: a Hugging Face ``tokenizer.json`` read by the ``tokenizers`` library.

Both formats ship ``tokenizer.json`` and ``edge_model.json`` (written by ``converters``) beside the model.
The beginning-of-sequence token is added here from ``edge_model.json`` rather than by the tokenizer's
post-processor, so it is added exactly once whatever the file's template says. ``token_piece`` gives the raw
bytes of a token the way llama.cpp does with ``special=False``: byte-level tokens are mapped back through
GPT-2's byte table, ``<0xNN>`` byte-fallback tokens become that byte, ``▁`` becomes a space, and special
(control) tokens render as nothing.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from edge_runtime.build_folder import EDGE_METADATA_FILE, read_folder_json
from edge_runtime.errors import BackendUnavailableError, ModelFileError

BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode`` table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def read_edge_metadata(folder: Path) -> dict:
    return read_folder_json(folder / EDGE_METADATA_FILE, "build metadata")


class JsonTokenizer:
    """tokenize / token_piece / special ids over one tokenizer.json."""

    def __init__(self, path: Path, metadata: dict) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise BackendUnavailableError("the tokenizers library is not installed "
                                          "(pip install 'edge-runtime[onnx]')") from exc
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise ModelFileError(path, f"not a readable tokenizer.json ({exc})") from exc
        self.bos_token_id = metadata.get("bos_token_id")
        self.add_bos = bool(metadata.get("add_bos")) and self.bos_token_id is not None
        self.eos_token_ids = frozenset(metadata.get("eos_token_ids") or ())
        self.byte_level = '"ByteLevel"' in json.dumps(json.loads(self.tokenizer.to_str()).get("decoder"))
        self.special_ids = {index for index, token in self.tokenizer.get_added_tokens_decoder().items()
                            if token.special}
        self._pieces: dict[int, bytes] = {}

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_token_id, *ids] if add_special and self.add_bos else list(ids)

    def token_piece(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id)
        return piece

    def _piece(self, token_id: int) -> bytes:
        text = self.tokenizer.id_to_token(token_id)
        if text is None or token_id in self.special_ids:
            return b""
        if self.byte_level:
            table = gpt2_unicode_to_byte()
            return bytes(table[char] for char in text) if all(c in table for c in text) else text.encode()
        match = BYTE_TOKEN.match(text)
        return bytes([int(match.group(1), 16)]) if match else text.replace("\u2581", " ").encode("utf-8")

    def text_of(self, token_id: int | None) -> str:
        return (self.tokenizer.id_to_token(token_id) or "") if token_id is not None else ""
