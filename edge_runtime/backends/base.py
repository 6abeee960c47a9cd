"""The one protocol every model format implements, and the sampling settings it receives.

A backend owns the native model and context of one format (GGUF, ONNX, Core ML) and knows nothing of caps,
stop strings or deadlines: it turns token ids into token steps with log-probabilities, and scores given
continuations. ``edge_runtime.runtime.Runtime`` puts policy on top, the way httpx's client sits on a transport.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edge_runtime.results import TokenStep


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    top_logprobs: int = 0
    max_tokens: int = 256
    grammar: str | None = None  # GBNF; the backend only offers tokens the grammar allows


ShouldAbort = Callable[[], bool]


@runtime_checkable
class Backend(Protocol):
    """A loaded model of one format. Implementations live in ``edge_runtime/backends/<format>.py``."""

    format: str
    n_ctx: int
    n_vocab: int

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the beginning-of-sequence token when the model uses one."""

    def token_piece(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (may be part of a UTF-8 character)."""

    def chat_template(self) -> str | None:
        """The Jinja chat template the model file carries, or None."""

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        """Prefills ``prompt_ids`` and yields one step per new token until end of generation or
        ``sampling.max_tokens``. ``should_abort`` is polled between prefill chunks and tokens; when it says
        True the iterator ends early. Log-probabilities come from the last row of logits only."""

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-probability of each token of each continuation, given ``prefix_ids`` before it."""

    def close(self) -> None:
        """Frees native memory; the backend cannot be used afterwards."""
