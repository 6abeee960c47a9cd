"""Servers for the reliability suite: the real server and cascade over a cloud we break on purpose.

``build_server`` (``benchmarks.served``) calls the builder the CLI calls, with a gateway whose timeouts, retries,
overall deadline and breaker are short and explicit, so a fault matrix finishes in seconds and every timing
can be checked against the configured deadline. ``TinyBackend`` is a byte-level fake model for the HTTP-layer
fuzz run only (10,000 cases through llama.cpp would take hours on two busy cores); the real model is fuzzed
with fewer cases next to it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_runtime.backends.base import SamplingParams, ShouldAbort
from edge_runtime.results import TokenStep
from benchmarks.served import (BOS, TINY_ANSWER, Built, GatewayKnobs, TinyBackend, build_server,  # noqa: F401
                               free_port, running, tiny_runtime)  # re-exported for the tests

# ------------------------------------------------------------------------------------------ cloud stand-ins

@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port with nothing listening: connecting is refused at once."""
    yield free_port()


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose listen backlog is full and never accepted: new SYNs are dropped, so a connect
    times out (the loopback stand-in for a black-holed address)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (backlog 0 still admits one or two)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# ------------------------------------------------------------------------------------------ tiny fake model

@pytest.fixture(scope="session")
def tiny():
    return tiny_runtime()


@pytest.fixture()
def fault_cloud() -> Iterator[object]:
    """A fresh loopback cloud per test (its ``received`` list starts empty); stalls end after 5 s."""
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(answer_fn=lambda body: "Cloud says Paris is the capital of France.",
                       stall_limit_s=5.0) as cloud:
        yield cloud
