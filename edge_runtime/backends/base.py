"""The one protocol every model format implements, what a backend says it can do, and what it counts.

A backend owns the native model and context of one format (GGUF, ONNX, Core ML) and knows nothing of caps,
stop strings or deadlines: it turns token ids into token steps with log-probabilities, and scores given
continuations. ``edge_runtime.runtime.Runtime`` puts policy on top, the way httpx's client sits on a transport.

Every backend declares its ``Capabilities`` (grammar, prefix store, speculation, concurrent requests, top-k
log-probabilities): the runtime reads them instead of probing attributes, and refuses a request that needs one
the backend lacks (``UnsupportedCapabilityError`` names both), so nothing is silently ignored. ``stats()`` is
the one typed read of a backend's counters (``BackendStats``) that the server's health and metrics show,
whether the backend runs in this process or in the engine's child process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from edge_runtime.requests import MAX_TOP_LOGPROBS
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
    # the final hidden states of the prompt's last token and of the first ``record_hidden`` generated tokens
    # travel on the ``TokenStep``s chosen from them (a backend with ``Capabilities.hidden_states``)
    record_hidden: int | None = None


# asked between prefill chunks and tokens; one that also has ``seconds_left()`` (``Deadlines``) lets a backend
# that waits for tokens sleep until the deadline instead of polling
ShouldAbort = Callable[[], bool]


@dataclass(frozen=True)
class Capabilities:
    """What a loaded backend can do; a request that needs more is refused, never silently served without it.

    ``grammar``: ``SamplingParams.grammar`` (GBNF) constrains sampling. ``prefix_store``: ``cache_prefix`` keeps
    prefix KV states beyond the live cache. ``speculation``: greedy decoding verifies drafts in batches.
    ``concurrent``: requests may run at the same time (continuous batching), so the runtime does not serialise
    them. ``max_top_logprobs``: how many alternatives per token it reports. ``hidden_states``: it hands back the model's
    final hidden states on request (``SamplingParams.record_hidden``, on the ``TokenStep``s; read by the
    calibration's hidden-state probes)."""

    grammar: bool = False
    prefix_store: bool = False
    speculation: bool = False
    concurrent: bool = False
    max_top_logprobs: int = MAX_TOP_LOGPROBS
    hidden_states: bool = False

    def missing_for(self, sampling: SamplingParams) -> tuple[str, str] | None:
        """(capability, detail) of the first thing ``sampling`` asks for that this backend cannot do, or None."""
        if sampling.grammar and not self.grammar:
            return "grammar", "constrained output (response_format json_object / json_schema, or a grammar)"
        if sampling.record_hidden is not None and not self.hidden_states:
            return "hidden_states", "the model's hidden states (a hidden-state probe's calibration)"
        if sampling.top_logprobs > self.max_top_logprobs:
            return "top_logprobs", f"{sampling.top_logprobs} alternatives per token; it reports at most " \
                                   f"{self.max_top_logprobs}"
        return None


@dataclass(frozen=True)
class PrefixCacheCounters:
    """How well prompt prefixes are reused: share of prompt tokens not prefilled again, KV bytes held for reuse
    (live sequences plus saved prefixes), and the prefix store's own bytes, entries and restores."""

    hit_ratio: float = 0.0
    bytes_held: int = 0
    store_bytes: int = 0
    store_entries: int = 0
    store_restores: int = 0


@dataclass(frozen=True)
class BackendStats:
    """A backend's counters at one moment, as the server's ``/health`` and ``/metrics`` show them.

    ``queue_depth`` (requests decoding, requests waiting for a slot) exists for a batching backend only, and
    ``prefix_cache`` for a backend that counts prefix reuse; the engine fields describe the process that runs the
    model (this one for an in-process backend) and its restarts by cause."""

    queue_depth: tuple[int, int] | None = None
    prefix_cache: PrefixCacheCounters | None = None
    engine_pid: int | None = field(default_factory=os.getpid)
    engine_state: str = "ready"
    engine_restarts: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A loaded model of one format. Implementations live in ``edge_runtime/backends/<format>.py``."""

    format: str
    n_ctx: int
    n_vocab: int
    capabilities: Capabilities
    ready: bool  # False while an engine process starts or restarts; always True in this process

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the beginning-of-sequence token when the model uses one."""

    def token_piece(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (may be part of a UTF-8 character)."""

    def chat_template(self) -> str | None:
        """The Jinja chat template the model file carries, or None."""

    def special_tokens(self) -> tuple[str, str]:
        """The text of the beginning- and end-of-sequence tokens ("" where the model has none)."""

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        """Prefills ``prompt_ids`` and yields one step per new token until end of generation or
        ``sampling.max_tokens``. ``should_abort`` is polled between prefill chunks and tokens; when it says
        True the iterator ends early. Log-probabilities come from the last row of logits only."""

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-probability of each token of each continuation, given ``prefix_ids`` before it."""

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        """Keeps the KV state of ``prefix_ids`` in the prefix store; how many tokens are kept. Called only when
        ``capabilities.prefix_store``; a backend without a store returns 0."""

    def stats(self) -> BackendStats:
        """The counters the server's health and metrics read."""

    def close(self) -> None:
        """Frees native memory; the backend cannot be used afterwards."""
