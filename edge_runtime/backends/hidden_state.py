"""Hidden states next to the logits, opt-in: what a probe of the model's confidence reads (``fallback.probe``).

llama.cpp hands back the final hidden state (the final norm's output, the lm_head's input: ``n_embd`` floats)
of every output position when a context has embeddings turned on, with pooling NONE (a generation model's
default), and keeps computing the logits beside it. But with embeddings on, every token of a batch becomes an
output (a prefill chunk would ask for hundreds of vocabulary-sized rows, past ``n_outputs_max``, and llama.cpp
aborts), so they are turned on only around decodes of single-token rows: the prompt's last token (decoded on
its own after the rest of the prefill) and the first few generated tokens; the batched backend decodes such
rows apart from other requests' prompt chunks (``llamacpp_batched.split_for_hidden``). The cost is one more decode call per request
and a copy of ``n_embd`` floats per recorded position; a request that records nothing pays nothing.
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


def set_embeddings(context, on: bool) -> None:
    """Turns llama.cpp's embeddings output of ``context`` (a ``NativeContext``) on or off."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    llama_cpp.llama_set_embeddings(context.pointer, on)


def last_hidden(context, n_embd: int) -> np.ndarray:
    """A copy of the hidden state of the last decode's last output (embeddings must have been on)."""
    return hidden_at(context, -1, n_embd)


def hidden_at(context, batch_index: int, n_embd: int) -> np.ndarray:
    """A copy of the hidden state of row ``batch_index`` (-1: the last) of the last decode, made with
    embeddings on."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    from edge_runtime.errors import BackendError

    pointer = llama_cpp.llama_get_embeddings_ith(context.pointer, batch_index)
    if not pointer:
        raise BackendError(f"llama.cpp returned no hidden state for batch row {batch_index}")
    return np.ctypeslib.as_array(pointer, shape=(n_embd,)).copy()


def embedding_size(model) -> int:
    """The width of ``model``'s (a ``NativeModel``) hidden state."""
    from edge_runtime.backends.llama_bindings import llama_cpp

    return int(llama_cpp.llama_model_n_embd(model.pointer))
