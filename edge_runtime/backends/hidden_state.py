"""Hidden states next to the logits, opt-in: what a probe of the model's confidence reads (``fallback.probe``).

llama.cpp hands back the final hidden state (the final norm's output, the lm_head's input: ``n_embd`` floats)
of every output position when a context has embeddings turned on, with pooling NONE (a generation model's
default), and keeps computing the logits beside it. But with embeddings on, every token of a batch becomes an
output (a prefill chunk would ask for hundreds of vocabulary-sized rows, past ``n_outputs_max``, and llama.cpp
aborts), so they are turned on only around decodes of single-token rows: the prompt's last token (decoded on
its own after the rest of the prefill) and the first few generated tokens; the batched backend decodes such
rows apart from other requests' prompt chunks (``llamacpp_batched.split_for_hidden``). The cost is one more decode call per request
and a copy of ``n_embd`` floats per recorded position; a request that records nothing pays nothing.

A context loaded with ``LoadSettings.middle_layer`` also reads the middle layer's output (``LayerTap``) in those
decodes: a recorded state is then two rows, the final state and the middle layer's (``fallback.probe``'s
``final_state`` and ``middle_state`` read either form). Linear probes of whether an answer is right read the
middle of a network better than its end on this project's dev data (Gemma 3 270M, layer 10 of 18: sst2 0.929
against 0.910 AUROC, capitals 0.856 against 0.764). The tap is a ggml evaluation callback, which llama.cpp
calls for every graph node of every decode (about 730 trips into Python a token: 1 % of decode speed here,
``benchmarks.runtime_overhead`` (b3)), so it is installed only where asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class HiddenRecorder:
    """What one request recorded: the prompt's last hidden state and those of its first ``tokens`` generated
    tokens (each the state after the token is fed, the one its successor is chosen from)."""

    tokens: int = 4
    prompt: np.ndarray | None = None
    generated: list[np.ndarray] = field(default_factory=list)

    def reset(self) -> None:
        self.prompt, self.generated = None, []

    def wants(self, produced: int) -> bool:
        """Whether the decode of the ``produced``-th generated token (0-based) is recorded."""
        return produced < self.tokens

    def chosen_from(self, produced: int) -> np.ndarray | None:
        """The hidden state the ``produced``-th generated token (0-based) was chosen from, if recorded."""
        if produced == 0:
            return self.prompt
        return self.generated[produced - 1] if produced - 1 < len(self.generated) else None


def request_recorder(sampling) -> HiddenRecorder | None:
    """A recorder for one request that asks for hidden states (``SamplingParams.record_hidden``), else None."""
    return HiddenRecorder(sampling.record_hidden) if sampling.record_hidden is not None else None


MIDDLE_DEPTH = 0.6  # where the tapped layer sits, as a share of the depth: layer 10 of Gemma 3 270M's 18


def middle_layer(n_layer: int) -> int:
    """The index of the layer whose output ``LayerTap`` reads."""
    return round(MIDDLE_DEPTH * (n_layer - 1))


class LayerTap:
    """Copies one layer's output (llama.cpp's graph tensor ``l_out-<layer>``: ``n_embd`` floats per batch row)
    while armed; unarmed, it tells llama.cpp it wants nothing and the graph computes as one piece."""

    def __init__(self, layer: int, n_embd: int) -> None:
        import ctypes

        from edge_runtime.backends.llama_bindings import llama_cpp
        from edge_runtime.errors import BackendError

        self.name, self.n_embd = f"l_out-{layer}".encode(), n_embd
        self.armed, self.rows = False, None
        try:  # ggml's symbols resolve through libllama's handle (ggml is its dependency)
            library = llama_cpp._lib
            self._name_of = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(("ggml_get_name", library))
            self._count = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(("ggml_nelements", library))
            self._copy = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                          ctypes.c_size_t)(("ggml_backend_tensor_get", library))
        except (AttributeError, OSError) as error:
            raise BackendError("this llama-cpp-python build does not expose ggml's tensor functions, which the "
                               f"middle layer's tap needs; load without middle_layer ({error})") from error
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_tensor)

    def _on_tensor(self, tensor, ask: bool, _user_data) -> bool:
        if not self.armed:
            return not ask  # asked: not wanted; computed (never, unasked): go on
        if ask:
            return self._name_of(tensor) == self.name
        import numpy as np

        rows = np.empty((self._count(tensor) // self.n_embd, self.n_embd), dtype=np.float32)
        self._copy(tensor, rows.ctypes.data, 0, rows.nbytes)
        # a decode llama.cpp splits into micro-batches calls once per micro-batch: the rows follow each other
        self.rows = rows if self.rows is None else np.vstack([self.rows, rows])
        return True

    def arm(self, on: bool) -> None:
        """Arms (dropping what the last armed decode left) or disarms (keeping it to be read) the tap."""
        self.armed = on
        if on:
            self.rows = None

    def row(self, batch_index: int):
        """The tapped layer's output for row ``batch_index`` (-1: the last) of the last armed decode."""
        return None if self.rows is None else self.rows[batch_index].copy()


def middle_tap(model) -> LayerTap:
    """A tap on the middle layer of ``model`` (a ``NativeModel``)."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    return LayerTap(middle_layer(int(llama_cpp.llama_model_n_layer(model.pointer))), embedding_size(model))


def set_embeddings(context, on: bool) -> None:
    """Turns llama.cpp's embeddings output of ``context`` (a ``NativeContext``) on or off, and its layer tap
    with it."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    llama_cpp.llama_set_embeddings(context.pointer, on)
    tap = getattr(context, "tap", None)
    if tap is not None:
        tap.arm(on)


def last_hidden(context, n_embd: int) -> np.ndarray:
    """A copy of the hidden state of the last decode's last output (embeddings must have been on)."""
    return hidden_at(context, -1, n_embd)


def hidden_at(context, batch_index: int, n_embd: int) -> np.ndarray:
    """A copy of the hidden state of row ``batch_index`` (-1: the last) of the last decode, made with
    embeddings on; with a layer tap, two rows (the final state, the middle layer's)."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    from edge_runtime.errors import BackendError

    pointer = llama_cpp.llama_get_embeddings_ith(context.pointer, batch_index)
    if not pointer:
        raise BackendError(f"llama.cpp returned no hidden state for batch row {batch_index}")
    final = np.ctypeslib.as_array(pointer, shape=(n_embd,)).copy()
    tap = getattr(context, "tap", None)
    middle = tap.row(batch_index) if tap is not None else None
    return final if middle is None else np.stack([final, middle])


def embedding_size(model) -> int:
    """The width of ``model``'s (a ``NativeModel``) hidden state."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    return int(llama_cpp.llama_model_n_embd(model.pointer))
