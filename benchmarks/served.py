"""Servers on loopback for the test suite and the benchmarks that drive the real server.

The production builder (``edge_runtime.server.build.build_server``) with explicit test knobs, uvicorn run in a
thread on a free loopback port, and ``TinyBackend``: a byte-level fake model for HTTP-layer
fuzzing (10,000 cases through llama.cpp would take hours on two busy cores). Test doubles live here, outside
the product's packages, so benchmarks can use them without importing the tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.ports import free_port  # noqa: F401  (re-exported: tests import it from here)
from edge_runtime.backends.base import BackendStats, Capabilities, SamplingParams, ShouldAbort
from edge_runtime.results import TokenStep

TINY_ANSWER = b" Paris is the capital."
BOS = 256


@contextmanager
def running(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class GatewayKnobs:
    """The cloud side's patience, kept small so faults resolve quickly and deadlines can be measured."""

    timeout_s: float = 1.0
    connect_timeout_s: float = 0.5
    max_retries: int = 2
    overall_deadline_s: float = 2.0
    backoff_base_s: float = 0.01
    breaker_min_calls: int = 1000  # effectively off unless a test turns it on
    breaker_cooldown_s: float = 30.0


@dataclass
class Built:
    """A server and what a test needs to look inside it."""

    server: object
    app: object
    ledger: object
    knobs: GatewayKnobs = field(default_factory=GatewayKnobs)


def build_server(runtime, *, base_url: str | None, ledger_path: Path | None = None, threshold: float = 0.0,
                 knobs: GatewayKnobs | None = None, early_floor: float | None = None,
                 max_in_flight: int = 64, breaker_clock=None) -> Built:
    """The production builder (``edge_runtime.server.build``) over ``runtime``, with the cloud at ``base_url``
    (None: no cloud) as patient as ``knobs`` say, and a ledger at ``ledger_path`` (None: none)."""
    from edge_runtime.server.build import build_server as build
    from edge_runtime.server.settings import ServerSettings

    knobs = knobs or GatewayKnobs()
    settings = ServerSettings(cloud=loopback_gateway(base_url, knobs) if base_url is not None else None,
                              confidence_threshold=threshold, early_floor=early_floor, max_in_flight=max_in_flight,
                              max_body_bytes=200_000, ledger=ledger_path is not None, ledger_path=ledger_path)
    app, server = build(settings, runtime=runtime, breaker_clock=breaker_clock or time.monotonic)
    return Built(server, app, server.cascade.ledger, knobs)


def loopback_gateway(base_url: str, knobs: GatewayKnobs):
    """Gateway settings for one loopback provider (priced like a real one) with ``knobs``' patience."""
    from fallback.providers import BreakerConfig, GatewayConfig, ProviderConfig

    provider = ProviderConfig(name="loopback", base_url=base_url, model="loopback-1", timeout_s=knobs.timeout_s,
                              connect_timeout_s=knobs.connect_timeout_s, max_retries=knobs.max_retries,
                              price_input_per_mtok=2.5, price_output_per_mtok=10.0)
    breaker = BreakerConfig(window_size=10, min_calls=knobs.breaker_min_calls, failure_rate_threshold=0.5,
                            cooldown_s=knobs.breaker_cooldown_s)
    return GatewayConfig(providers=[provider], overall_deadline_s=knobs.overall_deadline_s,
                         backoff_base_s=knobs.backoff_base_s, backoff_max_s=0.05, breaker=breaker)


class TinyBackend:
    """Bytes are tokens; every answer is ``TINY_ANSWER`` (cut at ``max_tokens``). No native code, ~0 ms."""

    format = "gguf"
    n_ctx = 2048
    n_vocab = 257
    capabilities = Capabilities(concurrent=True, max_top_logprobs=3)  # no grammar: it would ignore one
    ready = True

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return ([BOS] if add_special else []) + list(text.encode("utf-8"))

    def token_piece(self, token_id: int) -> bytes:
        return b"" if token_id == BOS else bytes([token_id])

    def chat_template(self) -> str | None:
        return None

    def special_tokens(self) -> tuple[str, str]:
        return "", ""

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        for index, byte in enumerate(TINY_ANSWER[: sampling.max_tokens]):
            if should_abort():
                return
            top = tuple((other, -1.0 - rank) for rank, other in enumerate((byte, 32, 101)[: sampling.top_logprobs]))
            yield TokenStep(byte, bytes([byte]), -0.05 * (index % 3), top)
        yield TokenStep(BOS, b"", 0.0, (), is_end_of_generation=True)

    def score_continuations(self, prefix_ids, continuations) -> list[list[float]]:
        return [[-1.0] * len(ids) for ids in continuations]

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        return 0

    def stats(self) -> BackendStats:
        return BackendStats()

    def close(self) -> None:
        pass


def tiny_runtime():
    from edge_runtime.caps import Caps
    from edge_runtime.models import ResolvedModel
    from edge_runtime.runtime import Runtime

    return Runtime(TinyBackend(), ResolvedModel("gguf", Path("tiny.gguf")), Caps(), 0.0)
