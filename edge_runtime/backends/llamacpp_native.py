"""Thin owners of llama.cpp's native objects: each frees what it allocated, and nothing more.

This is the middle of three tiers (raw ctypes bindings in ``llama_cpp.llama_cpp`` -> these owners ->
``LlamaCppBackend``). Going below ``llama_cpp.Llama`` lets the backend read one row of logits per step
(no ``logits_all``), skip the high-level class's start-up work, and control the KV cache per sequence.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from edge_runtime.backends.llama_bindings import llama_cpp
from edge_runtime.errors import BackendError

_silence_logs = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
_backend_ready = False
ROW_VIEWS_KEPT = 256  # more distinct addresses than this means llama.cpp reallocated its output buffer: start over


def init_backend() -> None:
    """Initialises llama.cpp once per process and drops its log chatter (it would corrupt CLI output)."""
    global _backend_ready
    if _backend_ready:
        return
    if not os.environ.get("EDGE_LLAMA_LOGS"):
        llama_cpp.llama_log_set(_silence_logs, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _backend_ready = True


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class DecodeAborted(BackendError):
    """The abort callback stopped a decode; positions it wrote are not trusted."""


class NativeModel:
    """Owns a ``llama_model``: weights and vocabulary."""

    def __init__(self, path: Path, *, use_mmap: bool, n_gpu_layers: int, repack_weights: bool = True) -> None:
        """``repack_weights`` lets llama.cpp reorder quantized weights for its batched CPU kernels; without it
        a token's logits do not depend on what else is in its batch (needed for exact speculative decoding)."""
        init_backend()
        params = llama_cpp.llama_model_default_params()
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = repack_weights
        self.path = path
        self.pointer = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.pointer:
            raise BackendError(f"{path}: llama.cpp could not load the model")
        self.vocab = llama_cpp.llama_model_get_vocab(self.pointer)
        self._end_of_generation: dict[int, bool] = {}
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def require_open(self) -> None:
        """Native calls on a freed model read freed memory and can abort the process: refuse them."""
        if not self.pointer:
            raise BackendError("the model has been closed")

    def tokenize(self, data: bytes, add_special: bool) -> list[int]:
        self.require_open()
        capacity = len(data) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_special, False)
        if count < 0:
            capacity = -count
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_special, False)
        return list(buffer[:count])

    def piece(self, token: int) -> bytes:
        self.require_open()
        buffer = ctypes.create_string_buffer(64)
        count = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, 64, 0, False)
        if count < 0:
            buffer = ctypes.create_string_buffer(-count)
            count = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, -count, 0, False)
        return buffer.raw[:count]

    def is_end_of_generation(self, token: int) -> bool:
        known = self._end_of_generation.get(token)
        if known is None:  # asked once per sampled token: a dict read instead of a trip through ctypes
            known = self._end_of_generation[token] = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
        return known

    def special_text(self, token: int) -> str:
        return llama_cpp.llama_vocab_get_text(self.vocab, token).decode("utf-8", "replace") if token >= 0 else ""

    def bos_token(self) -> int:
        return llama_cpp.llama_vocab_bos(self.vocab)

    def eos_token(self) -> int:
        return llama_cpp.llama_vocab_eos(self.vocab)

    def chat_template(self) -> str | None:
        self.require_open()
        template = llama_cpp.llama_model_chat_template(self.pointer, None)
        return template.decode("utf-8", "replace") if template else None

    def close(self) -> None:
        if self.pointer:
            llama_cpp.llama_model_free(self.pointer)
            self.pointer = None


class NativeContext:
    """Owns a ``llama_context``: the KV cache and compute buffers for ``n_seq_max`` sequences.

    llama.cpp sizes its compute and logits buffers for ``n_outputs_max`` rows per decode (by default, one per
    token of a batch: 1 MiB each for a 262k vocabulary) and aborts the process on a batch asking for more, so
    ``decode`` refuses such a batch first."""

    def __init__(self, model: NativeModel, *, n_ctx: int, n_batch: int, n_threads: int, n_seq_max: int = 1,
                 flash_attn: bool | None = None, n_ubatch: int | None = None,
                 n_outputs_max: int | None = None, kv_unified: bool = False, tap=None) -> None:
        params = llama_cpp.llama_context_default_params()
        self.tap = tap  # a ``hidden_state.LayerTap`` (kept alive here: llama.cpp holds its callback)
        if tap is not None:
            params.cb_eval = tap.callback
        params.kv_unified = self.kv_unified = kv_unified
        if flash_attn is not None:
            params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                      else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_ubatch or n_batch
        params.n_outputs_max = self.n_outputs_max = n_outputs_max or n_batch
        params.n_threads = params.n_threads_batch = n_threads
        params.n_seq_max = n_seq_max
        params.no_perf = True
        self.pointer = llama_cpp.llama_init_from_model(model.pointer, params)
        if not self.pointer:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx:,} tokens")
        self.n_ctx = llama_cpp.llama_n_ctx(self.pointer)
        self.n_vocab = model.n_vocab
        self.memory = llama_cpp.llama_get_memory(self.pointer)
        # numpy views of logits rows by address: llama.cpp hands out the same rows of one output buffer every
        # step (and a row at an address it returns always holds n_vocab floats), so a view is made once per row
        self._rows: dict[int, "np.ndarray"] = {}

    def decode(self, batch: "NativeBatch") -> None:
        if not self.pointer:
            raise BackendError("the context has been closed")
        if batch.outputs > self.n_outputs_max:
            raise BackendError(f"a batch asks for {batch.outputs} logits rows; the context keeps "
                               f"{self.n_outputs_max}")
        status = llama_cpp.llama_decode(self.pointer, batch.batch)
        if status == 2:
            raise DecodeAborted("llama_decode was aborted")
        if status != 0:
            raise BackendError(f"llama_decode failed with status {status} "
                               f"({'no KV cache slot' if status == 1 else 'error'})")

    def set_abort(self, should_abort) -> None:
        """Lets ggml stop a running decode between graph nodes when ``should_abort()`` says so.

        The check costs a trip into Python per graph node, so it is set for prefill (long, uninterruptible
        chunks otherwise) and cleared for single-token decode steps.
        """
        self._abort_callback = None if should_abort is None else llama_cpp.ggml_abort_callback(
            lambda _data: bool(should_abort()))
        callback = self._abort_callback or llama_cpp.ggml_abort_callback()
        llama_cpp.llama_set_abort_callback(self.pointer, callback, ctypes.c_void_p(0))

    def logits_row(self, index: int) -> "np.ndarray":
        """A view (no copy) of the logits of output ``index``; valid until the next decode."""
        import numpy as np  # not at module level: a cold start loads the model before numpy is imported

        pointer = llama_cpp.llama_get_logits_ith(self.pointer, index)
        if not pointer:
            raise BackendError(f"llama.cpp returned no logits for output {index}")
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        row = self._rows.get(address)
        if row is None:  # building a view costs more than the rest of a step's bookkeeping: one per address
            if len(self._rows) >= ROW_VIEWS_KEPT:
                self._rows.clear()
            row = self._rows[address] = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        return row

    def forget_from(self, sequence: int, position: int) -> bool:
        """Drops positions >= ``position`` of a sequence; False if llama.cpp cannot (then clear all)."""
        return bool(llama_cpp.llama_memory_seq_rm(self.memory, sequence, position, -1))

    def copy_sequence(self, source: int, target: int, end: int) -> None:
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, 0, end)

    def sequence_state_size(self, sequence: int) -> int:
        return int(llama_cpp.llama_state_seq_get_size(self.pointer, sequence))

    def save_sequence(self, sequence: int) -> bytes:
        """The KV state of one sequence as bytes (llama.cpp's own format), for ``restore_sequence``."""
        size = llama_cpp.llama_state_seq_get_size(self.pointer, sequence)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.pointer, buffer, size, sequence)
        if written != size:
            raise BackendError(f"llama.cpp saved {written:,} of {size:,} bytes of sequence {sequence}")
        return bytes(buffer)

    def restore_sequence(self, sequence: int, state: bytes) -> bool:
        """Replaces a sequence's KV cache with a saved state; False (sequence left empty) if it does not fit."""
        self.forget_from(sequence, 0)
        source = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self.pointer, source, len(state), sequence) == 0:
            self.forget_from(sequence, 0)
            return False
        return True

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.pointer:
            llama_cpp.llama_free(self.pointer)
            self.pointer = None


class NativeBatch:
    """Owns a ``llama_batch`` of up to ``capacity`` tokens; refilled in place for every decode."""

    def __init__(self, capacity: int, n_seq_max: int = 1) -> None:
        self.capacity, self.outputs = capacity, 0
        self.batch = llama_cpp.llama_batch_init(capacity, 0, n_seq_max)

    def fill(self, tokens: list[int], start_position: int, sequence: int = 0, *, all_logits: bool = False) -> None:
        """Loads ``tokens`` at consecutive positions of one sequence; logits for the last (or every) token."""
        batch, last = self.batch, len(tokens) - 1
        for index, token in enumerate(tokens):
            batch.token[index] = token
            batch.pos[index] = start_position + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = sequence
            batch.logits[index] = all_logits or index == last
        batch.n_tokens = len(tokens)
        self.outputs = len(tokens) if all_logits else min(1, len(tokens))

    def fill_entries(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Loads ``(token, position, sequence, wants_logits)`` entries from several sequences at once."""
        batch = self.batch
        for index, (token, position, sequence, wants_logits) in enumerate(entries):
            batch.token[index] = token
            batch.pos[index] = position
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = sequence
            batch.logits[index] = wants_logits
        batch.n_tokens = len(entries)
        self.outputs = sum(entry[3] for entry in entries)

    def close(self) -> None:
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None


def safe_high_level_llama(*, extra_buffers: bool | None = None, **kwargs) -> "llama_cpp.Llama":
    """llama-cpp-python's own ``Llama`` (for reference runs and benchmarks), with weights kept out of the extra
    buffer types where this CPU advertises AMX (``Llama`` has no option for it, so its default model parameters
    are adjusted for the duration of the construction). ``extra_buffers=False`` keeps them out on any CPU (a
    token's logits then do not depend on its batch, as with ``LoadSettings(extra_buffers=False)``)."""
    import llama_cpp as package  # the whole package: this is llama-cpp-python's own high-level class
    import llama_cpp.llama_cpp as bindings

    from edge_runtime.engine.cpu import extra_buffers_safe, system_info

    original = bindings.llama_model_default_params
    allowed = extra_buffers_safe(system_info()) and extra_buffers is not False

    def defaults():
        params = original()
        params.use_extra_bufts = params.use_extra_bufts and allowed
        return params

    bindings.llama_model_default_params = defaults
    try:
        return package.Llama(**kwargs)
    finally:
        bindings.llama_model_default_params = original
