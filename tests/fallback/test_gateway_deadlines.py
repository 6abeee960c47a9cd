"""Wall-clock deadlines against clouds that hang or drip, over real HTTP on 127.0.0.1.

A hanging cloud accepts the request and never answers (``LoopbackCloud`` with ``latency:600``); a dripping
one sends a valid answer a byte at a time (``DripCloud``), so no single read ever times out. Whatever the
cloud does, a gateway call must be over within its budget + 10%: the overall deadline, or the shorter
escalation budget when a local answer is ready. Budgets are small here so each test takes a second or two.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from fallback.errors import AllProvidersFailedError, ConfigError, ProviderTimeoutError, StreamInterruptedError
from fallback.gateway import CloudChunk, CloudGateway, CloudRequest
from benchmarks.loopback_cloud import LoopbackCloud
from fallback.providers import DEFAULT_ESCALATION_BUDGET_S, GatewayConfig
from fallback.retry_policy import escalation_deadline
from tests.fallback.drip_cloud import DripCloud

SLACK = 1.10  # "within the budget + 10%"
MESSAGES = [{"role": "user", "content": "What is two plus two?"}]
INTERACTIVE_LIMIT_S = 30.0  # the interface: an escalation with a local answer ready is over in 30 s


@contextmanager
def misbehaving(kind: str, **drip: Any) -> Iterator[LoopbackCloud | DripCloud]:
    if kind == "hang":
        with LoopbackCloud(default_fault="latency:600") as cloud:
            yield cloud
    else:
        with DripCloud(**drip) as cloud:
            yield cloud


def patient_provider(cloud: LoopbackCloud | DripCloud, **overrides: Any) -> dict[str, Any]:
    """Per-attempt timeouts far above every budget here, so only the wall-clock budget can end a call."""
    return {"name": "slow", "base_url": cloud.base_url, "model": "m", "timeout_s": 30.0, "connect_timeout_s": 1.0,
            "max_retries": 2, **overrides}


def gateway_for(cloud: LoopbackCloud | DripCloud, provider: dict[str, Any] | None = None, *,
                sleep: Any = anyio.sleep, **settings: Any) -> CloudGateway:
    config = {"providers": [provider or patient_provider(cloud)], "overall_deadline_s": 30.0,
              "escalation_budget_s": 1.5, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **settings}
    return CloudGateway(GatewayConfig.build(config), environ={}, sleep=sleep)


async def drain(stream: AsyncIterator[CloudChunk], into: list[CloudChunk]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def timed_failure(gateway: CloudGateway, request: CloudRequest, *, stream: bool) -> tuple[float, Exception]:
    """Seconds until the call failed, and how; failing is the only acceptable outcome here."""
    started = time.monotonic()
    with pytest.raises((AllProvidersFailedError, StreamInterruptedError)) as info:
        if stream:
            await drain(gateway.stream(request), [])
        else:
            await gateway.complete(request)
    return time.monotonic() - started, info.value


# ---------------------------------------------------------------- hang and drip, streamed and not

@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["hang", "drip"])
async def test_local_answer_ready_gives_up_within_the_escalation_budget(kind: str, stream: bool) -> None:
    with misbehaving(kind) as cloud:
        async with gateway_for(cloud, escalation_budget_s=1.5) as gateway:
            request = CloudRequest(messages=MESSAGES, local_answer_ready=True)
            elapsed, error = await timed_failure(gateway, request, stream=stream)
    assert 1.5 <= elapsed <= 1.5 * SLACK, f"{kind}: gave up after {elapsed:.2f} s"
    assert isinstance(error, AllProvidersFailedError) and error.deadline_exceeded
    assert isinstance(error.errors[0], ProviderTimeoutError)
    assert gateway.breakers["slow"].failure_rate() == 0.0  # cut short by our budget: not the cloud's fault


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["hang", "drip"])
async def test_without_a_local_answer_the_overall_deadline_holds(kind: str, stream: bool) -> None:
    with misbehaving(kind) as cloud:
        async with gateway_for(cloud, overall_deadline_s=1.2, escalation_budget_s=0.3) as gateway:
            elapsed, error = await timed_failure(gateway, CloudRequest(messages=MESSAGES), stream=stream)
    assert 1.2 <= elapsed <= 1.2 * SLACK, f"{kind}: gave up after {elapsed:.2f} s"  # the 0.3 s budget is unused
    assert isinstance(error, AllProvidersFailedError) and error.deadline_exceeded


@pytest.mark.anyio
async def test_a_drip_outlasting_every_per_attempt_timeout_is_still_cut() -> None:
    """Per-read timeouts of 0.5 s never fire on a drip (a byte every 0.05 s); the 1.2 s deadline does."""
    with DripCloud() as cloud:
        async with gateway_for(cloud, patient_provider(cloud, timeout_s=5.0), overall_deadline_s=1.2) as gateway:
            elapsed, error = await timed_failure(gateway, CloudRequest(messages=MESSAGES), stream=False)
    assert 1.2 <= elapsed <= 1.2 * SLACK and cloud.requests == 1


@pytest.mark.anyio
async def test_a_stream_already_answering_runs_past_the_budget_until_the_overall_deadline() -> None:
    """Chunks every 0.3 s (each read is quick) for a 20-word answer (~6 s): the 1.5 s escalation budget bounds
    only the wait for the first chunk; once the cloud's answer is arriving, the 3 s overall deadline cuts it."""
    answer = " ".join(f"word{i}" for i in range(20))
    with LoopbackCloud(answer_fn=lambda body: answer, chunk_delay_s=0.3) as cloud:
        async with gateway_for(cloud, patient_provider(cloud), overall_deadline_s=3.0) as gateway:
            chunks: list[CloudChunk] = []
            started = time.monotonic()
            with pytest.raises(StreamInterruptedError, match="deadline reached") as info:
                await drain(gateway.stream(CloudRequest(messages=MESSAGES, local_answer_ready=True)), chunks)
            elapsed = time.monotonic() - started
    assert 3.0 <= elapsed <= 3.0 * SLACK
    assert 6 <= info.value.chunks_yielded == len(chunks) < 20  # text went out; it is not repeated or resumed
    assert gateway.breakers["slow"].failure_rate() == 0.0
    assert len(cloud.received) == 1


@pytest.mark.anyio
async def test_backoff_never_sleeps_past_the_budget() -> None:
    """500s with 0.4 s backoffs under a 1.0 s budget: every wait ends before the budget does."""
    wait_ends: list[float] = []
    started = time.monotonic()

    async def sleep(seconds: float) -> None:
        wait_ends.append(time.monotonic() + seconds - started)
        await anyio.sleep(seconds)

    with LoopbackCloud(default_fault="500") as cloud:
        gateway = gateway_for(cloud, patient_provider(cloud, max_retries=10), escalation_budget_s=1.0,
                              backoff_base_s=0.4, backoff_max_s=0.4, jitter=False, sleep=sleep)
        async with gateway:
            started = time.monotonic()
            elapsed, _ = await timed_failure(gateway, CloudRequest(messages=MESSAGES, local_answer_ready=True),
                                             stream=False)
    assert elapsed <= 1.0 * SLACK
    assert wait_ends and all(end < 1.0 for end in wait_ends), wait_ends
    assert len(cloud.received) == len(wait_ends) + 1 <= 3  # tries at ~0, ~0.4, ~0.8 s at the most


# ---------------------------------------------------------------- which budget applies

@pytest.mark.anyio
@pytest.mark.parametrize("provider_budget, request_budget, deadline_s, expected", [
    (None, None, None, 1.5),  # the config's escalation budget
    (0.8, None, None, 0.8),   # the provider's overrides it
    (0.8, 0.5, None, 0.5),    # the request's overrides both
    (None, 3.0, 0.6, 0.6),    # a shorter overall deadline still wins
])
async def test_budget_precedence(provider_budget: float | None, request_budget: float | None,
                                 deadline_s: float | None, expected: float) -> None:
    with misbehaving("hang") as cloud:
        provider = patient_provider(cloud, escalation_budget_s=provider_budget)
        async with gateway_for(cloud, provider) as gateway:
            request = CloudRequest(messages=MESSAGES, local_answer_ready=True, escalation_budget_s=request_budget,
                                   deadline_s=deadline_s)
            elapsed, _ = await timed_failure(gateway, request, stream=False)
    assert expected <= elapsed <= expected * SLACK


@pytest.mark.anyio
async def test_overall_deadline_counts_from_the_request_start() -> None:
    """1.0 s of the 1.5 s overall deadline went to the local model already: the cloud gets the 0.5 s left."""
    with misbehaving("hang") as cloud:
        async with gateway_for(cloud, overall_deadline_s=1.5) as gateway:
            elapsed, _ = await timed_failure(gateway, CloudRequest(messages=MESSAGES, elapsed_s=1.0), stream=False)
            late, error = await timed_failure(gateway, CloudRequest(messages=MESSAGES, elapsed_s=2.0), stream=True)
    assert 0.5 <= elapsed <= 0.5 * SLACK
    assert late < 0.1 and isinstance(error, AllProvidersFailedError) and error.deadline_exceeded
    assert len(cloud.received) == 1  # the late one never left the device


@pytest.mark.anyio
async def test_escalation_budget_counts_from_the_escalation_start() -> None:
    """The escalation budget is the cloud's own time: a long local turn does not shrink it."""
    with misbehaving("hang") as cloud:
        async with gateway_for(cloud, overall_deadline_s=30.0, escalation_budget_s=0.8) as gateway:
            request = CloudRequest(messages=MESSAGES, local_answer_ready=True, elapsed_s=5.0)
            elapsed, _ = await timed_failure(gateway, request, stream=False)
    assert 0.8 <= elapsed <= 0.8 * SLACK


def test_escalation_deadline_is_the_earlier_of_the_two() -> None:
    common = {"request_started": 100.0, "escalation_started": 103.0}
    assert escalation_deadline(**common, overall_s=60.0, escalation_budget_s=None) == 160.0
    assert escalation_deadline(**common, overall_s=60.0, escalation_budget_s=8.0) == 111.0
    assert escalation_deadline(**common, overall_s=5.0, escalation_budget_s=8.0) == 105.0


# ---------------------------------------------------------------- defaults and configuration

def test_default_escalation_budget_fits_interactive_use() -> None:
    config = GatewayConfig(providers=[{"name": "p", "base_url": "http://127.0.0.1:9/v1", "model": "m"}])
    assert config.escalation_budget_s == DEFAULT_ESCALATION_BUDGET_S <= INTERACTIVE_LIMIT_S * 0.9
    assert config.escalation_budget_s < config.overall_deadline_s
    assert config.providers[0].escalation_budget_s is None


@pytest.mark.anyio
async def test_default_config_with_a_local_answer_gives_up_within_the_default_budget() -> None:
    """Stock settings (30 s attempts, 2 retries, 60 s overall); hang and drip, streamed and not, at once."""
    timings: dict[str, float] = {}

    async def one(cloud: LoopbackCloud | DripCloud, label: str, stream: bool) -> None:
        provider = {"name": "stock", "base_url": cloud.base_url, "model": "m"}
        async with CloudGateway(GatewayConfig.build({"providers": [provider]}), environ={}) as gateway:
            request = CloudRequest(messages=MESSAGES, local_answer_ready=True)
            timings[label], _ = await timed_failure(gateway, request, stream=stream)

    with misbehaving("hang") as hang, misbehaving("drip", byte_delay_s=0.1) as drip:
        async with anyio.create_task_group() as group:
            for cloud, kind in ((hang, "hang"), (drip, "drip")):
                for stream in (False, True):
                    group.start_soon(one, cloud, f"{kind}-{'streamed' if stream else 'whole'}", stream)
    budget = DEFAULT_ESCALATION_BUDGET_S
    assert all(budget <= seconds <= budget * SLACK for seconds in timings.values()), timings
    assert max(timings.values()) < INTERACTIVE_LIMIT_S and len(timings) == 4


def test_escalation_budget_from_toml(tmp_path: Any) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('escalation_budget_s = 5\n\n[[providers]]\nname = "a"\nbase_url = "http://127.0.0.1:9/v1"\n'
                    'model = "m"\nescalation_budget_s = 12.5\n\n[[providers]]\nname = "b"\n'
                    'base_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n', encoding="utf-8")
    config = GatewayConfig.from_toml(path)
    assert config.escalation_budget_s == 5.0
    assert [p.escalation_budget_s for p in config.providers] == [12.5, None]


def test_escalation_budget_from_env() -> None:
    environ = {"EDGE_CLOUD_BASE_URL": "http://127.0.0.1:9/v1", "EDGE_CLOUD_MODEL": "m",
               "EDGE_CLOUD_ESCALATION_BUDGET_S": "4.5"}
    config = GatewayConfig.from_env(environ)
    assert config is not None and config.escalation_budget_s == 4.5
    with pytest.raises(ConfigError, match="EDGE_CLOUD_ESCALATION_BUDGET_S must be a number"):
        GatewayConfig.from_env({**environ, "EDGE_CLOUD_ESCALATION_BUDGET_S": "soon"})
    with pytest.raises(ConfigError, match="escalation_budget_s"):
        GatewayConfig.from_env({**environ, "EDGE_CLOUD_ESCALATION_BUDGET_S": "0"})


def test_request_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="escalation_budget_s"):
        CloudRequest(messages=MESSAGES, escalation_budget_s=0)
    with pytest.raises(ValueError, match="elapsed_s"):
        CloudRequest(messages=MESSAGES, elapsed_s=-1)
