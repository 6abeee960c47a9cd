"""Fixtures for the fallback tests: real loopback cloud servers and a port nothing listens on."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from benchmarks.loopback_cloud import LoopbackCloud


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cloud() -> Iterator[LoopbackCloud]:
    """A fresh OpenAI-compatible server on 127.0.0.1; stalls give up after 5 s so shutdown stays quick."""
    with LoopbackCloud(stall_limit_s=5.0) as server:
        yield server


@pytest.fixture
def second_cloud() -> Iterator[LoopbackCloud]:
    with LoopbackCloud(stall_limit_s=5.0, model="second-model") as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    """A loopback port that was just free: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
