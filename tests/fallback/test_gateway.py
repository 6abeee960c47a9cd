"""CloudGateway against the real loopback cloud over real HTTP: retries, deadlines, breakers, streams, privacy."""

from __future__ import annotations

import asyncio
import gc
import math
import random
import threading
import time
from typing import Any

import anyio
import httpx
import pytest

from fallback.errors import (
    AllProvidersFailedError, CircuitOpenError, PrivacyRefusalError, ProviderConnectError, ProviderHTTPError,
    ProviderProtocolError, ProviderRateLimitedError, ProviderTimeoutError, StreamInterruptedError,
)
from fallback.cloud_wire import WireChunk
from fallback.gateway_call import StreamTotals
from fallback.gateway import (
    CloudChunk, CloudGateway, CloudRequest, Usage, is_retryable, parse_retry_after,
)
from benchmarks.loopback_cloud import LoopbackCloud
from fallback.providers import GatewayConfig
from fallback.redaction import Redactor

QUESTION = "What is two plus two?"
ANSWER = f"Loopback cloud answer to: {QUESTION}"
REQUEST = CloudRequest(messages=[{"role": "user", "content": QUESTION}])


def provider(target: LoopbackCloud | str, name: str = "primary", **overrides: Any) -> dict[str, Any]:
    base_url = target if isinstance(target, str) else target.base_url
    return {"name": name, "base_url": base_url, "model": f"{name}-model", "timeout_s": 2.0,
            "connect_timeout_s": 1.0, "max_retries": 2, **overrides}


def make_gateway(*providers: dict[str, Any], sleep: Any = None, rng: random.Random | None = None,
                 breaker_clock: Any = time.monotonic, environ: dict[str, str] | None = None,
                 **settings: Any) -> CloudGateway:
    config = {"providers": list(providers), "overall_deadline_s": 5.0, "backoff_base_s": 0.01,
              "backoff_max_s": 0.05, "jitter": False, "breaker": {"min_calls": 100}, **settings}
    extra = {"sleep": sleep} if sleep is not None else {}
    return CloudGateway(GatewayConfig.build(config), rng=rng, breaker_clock=breaker_clock,
                        environ=environ or {}, **extra)


def summary(response: Any) -> list[tuple[str, int | None, str | None]]:
    return [(a.provider, a.status, a.error) for a in response.attempts]


async def collect(gateway: CloudGateway, request: CloudRequest, into: list[CloudChunk]) -> None:
    async for chunk in gateway.stream(request):
        into.append(chunk)


# ---------------------------------------------------------------- normal answers

@pytest.mark.anyio
async def test_complete_returns_answer_usage_and_cost(cloud: LoopbackCloud) -> None:
    async with make_gateway(provider(cloud, price_input_per_mtok=2.0, price_output_per_mtok=8.0)) as gateway:
        response = await gateway.complete(REQUEST)
    assert response.text == ANSWER and response.finish_reason == "stop"
    assert response.usage == Usage(prompt_tokens=5, completion_tokens=9)  # loopback counts words
    assert response.cost_usd == pytest.approx((5 * 2.0 + 9 * 8.0) / 1e6)
    assert (response.provider, response.model) == ("primary", "primary-model")
    assert summary(response) == [("primary", 200, None)]
    assert response.attempts[0].breaker_state == "closed" and response.latency_s > 0
    assert response.raw["choices"][0]["message"]["content"] == ANSWER
    assert cloud.received[0]["model"] == "primary-model"


@pytest.mark.anyio
async def test_request_options_reach_the_server(cloud: LoopbackCloud) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    request = CloudRequest(messages=REQUEST.messages, max_tokens=3, temperature=0.2, stop=["\n"],
                           response_format={"type": "json_object"}, tools=tools, tool_choice="auto",
                           extra_body={"seed": 7, "top_p": 0.9})
    async with make_gateway(provider(cloud)) as gateway:
        response = await gateway.complete(request)
    body = cloud.received[0]
    assert body["max_tokens"] == 3 and body["temperature"] == 0.2 and body["stop"] == ["\n"]
    assert body["response_format"] == {"type": "json_object"} and body["tools"] == tools
    assert body["tool_choice"] == "auto" and body["seed"] == 7 and body["top_p"] == 0.9
    assert "stream" not in body
    assert response.text == "Loopback cloud answer" and response.finish_reason == "length"


@pytest.mark.anyio
async def test_missing_usage_is_estimated_and_flagged() -> None:
    with LoopbackCloud(include_usage=False) as cloud:
        async with make_gateway(provider(cloud, price_input_per_mtok=1.0, price_output_per_mtok=1.0)) as gateway:
            response = await gateway.complete(REQUEST)
    assert response.usage.estimated
    assert response.usage.prompt_tokens == math.ceil(len(QUESTION) / 4)
    assert response.usage.completion_tokens == math.ceil(len(ANSWER) / 4)
    assert response.cost_usd == pytest.approx(response.usage.total_tokens / 1e6)


@pytest.mark.anyio
async def test_stream_yields_content_then_a_final_chunk_with_totals(cloud: LoopbackCloud) -> None:
    chunks: list[CloudChunk] = []
    async with make_gateway(provider(cloud, price_input_per_mtok=1.0, price_output_per_mtok=1.0)) as gateway:
        await collect(gateway, REQUEST, chunks)
    *content, final = chunks
    assert "".join(c.text for c in content) == ANSWER and len(content) == 9
    assert final.response is not None and final.text == "" and final.finish_reason == "stop"
    assert final.response.text == ANSWER
    assert final.response.usage == Usage(5, 9) and final.response.cost_usd == pytest.approx(14 / 1e6)
    assert summary(final.response) == [("primary", 200, None)]
    assert all(c.response is None for c in content)
    body = cloud.received[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.anyio
async def test_stream_usage_is_estimated_when_not_requested(cloud: LoopbackCloud) -> None:
    chunks: list[CloudChunk] = []
    request = CloudRequest(messages=REQUEST.messages, extra_body={"stream_options": None})
    async with make_gateway(provider(cloud)) as gateway:
        await collect(gateway, request, chunks)
    assert "stream_options" not in cloud.received[0]
    assert chunks[-1].response is not None and chunks[-1].response.usage.estimated


# ---------------------------------------------------------------- retries

@pytest.mark.anyio
async def test_slow_attempt_times_out_then_retry_succeeds(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["latency:3"])
    async with make_gateway(provider(cloud, timeout_s=0.3, max_retries=1)) as gateway:
        response = await gateway.complete(REQUEST)
    assert summary(response) == [("primary", None, "ProviderTimeoutError"), ("primary", 200, None)]
    assert 0.25 <= response.attempts[0].latency_s <= 0.6
    assert response.text == ANSWER


@pytest.mark.anyio
async def test_429_retry_after_is_honoured(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["429:0.5"])
    async with make_gateway(provider(cloud)) as gateway:
        started = time.monotonic()
        response = await gateway.complete(REQUEST)
        waited = time.monotonic() - started
    assert summary(response) == [("primary", 429, "ProviderRateLimitedError"), ("primary", 200, None)]
    assert 0.5 <= waited < 1.2  # backoff alone would be 0.01 s


@pytest.mark.anyio
async def test_429_without_retry_after_uses_full_jitter_backoff(cloud: LoopbackCloud) -> None:
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    cloud.enqueue_faults(["429-no-retry-after", "429-no-retry-after"])
    gateway = make_gateway(provider(cloud), sleep=record_sleep, rng=random.Random(7), jitter=True,
                           backoff_base_s=0.2, backoff_max_s=10.0)
    async with gateway:
        response = await gateway.complete(REQUEST)
    expected = random.Random(7)
    assert delays == [expected.uniform(0, 0.2), expected.uniform(0, 0.4)]
    assert [a.status for a in response.attempts] == [429, 429, 200]


@pytest.mark.anyio
async def test_backoff_doubles_up_to_its_cap(cloud: LoopbackCloud) -> None:
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    cloud.enqueue_faults(["500", "502", "503"])
    gateway = make_gateway(provider(cloud, max_retries=3), sleep=record_sleep, backoff_base_s=0.1,
                           backoff_max_s=0.3)
    async with gateway:
        response = await gateway.complete(REQUEST)
    assert delays == [0.1, 0.2, 0.3]
    assert [a.status for a in response.attempts] == [500, 502, 503, 200]


@pytest.mark.anyio
async def test_500_then_success_resends_the_same_body(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["500"])
    async with make_gateway(provider(cloud)) as gateway:
        response = await gateway.complete(REQUEST)
    assert summary(response) == [("primary", 500, "ProviderHTTPError"), ("primary", 200, None)]
    assert len(cloud.received) == 2 and cloud.received[0] == cloud.received[1]


@pytest.mark.anyio
async def test_connection_reset_mid_body_is_retried(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["reset"])
    async with make_gateway(provider(cloud)) as gateway:
        response = await gateway.complete(REQUEST)
    assert response.attempts[0].error in {"ProviderConnectError", "ProviderProtocolError"}
    assert response.text == ANSWER and len(cloud.received) == 2


@pytest.mark.anyio
async def test_malformed_json_is_retried_once_only(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["malformed"])
    async with make_gateway(provider(cloud, max_retries=3)) as gateway:
        response = await gateway.complete(REQUEST)
        assert summary(response) == [("primary", None, "ProviderProtocolError"), ("primary", 200, None)]
        cloud.enqueue_faults(["malformed", "malformed"])
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(REQUEST)
    assert isinstance(info.value.errors[0], ProviderProtocolError)
    assert len(cloud.received) == 4  # 2 + 2: not a third try despite max_retries=3


# ---------------------------------------------------------------- streams that break

@pytest.mark.anyio
async def test_stream_cut_after_content_is_not_retried(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["stream-cut"])
    chunks: list[CloudChunk] = []
    async with make_gateway(provider(cloud, max_retries=3)) as gateway:
        with pytest.raises(StreamInterruptedError) as info:
            await collect(gateway, REQUEST, chunks)
    assert [c.text for c in chunks] == ["Loopback ", "cloud "]  # delivered once, never repeated
    assert isinstance(info.value, ProviderProtocolError) and info.value.chunks_yielded == 2
    assert len(cloud.received) == 1


@pytest.mark.anyio
async def test_stream_failing_before_first_chunk_is_retried_without_duplicates(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["500", "malformed"])
    chunks: list[CloudChunk] = []
    async with make_gateway(provider(cloud)) as gateway:
        await collect(gateway, REQUEST, chunks)
    assert "".join(c.text for c in chunks) == ANSWER
    final = chunks[-1].response
    assert final is not None
    assert summary(final) == [("primary", 500, "ProviderHTTPError"), ("primary", None, "ProviderProtocolError"),
                              ("primary", 200, None)]
    assert len(cloud.received) == 3


@pytest.mark.anyio
async def test_stream_stall_after_content_raises_after_the_read_timeout(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["stall"])
    chunks: list[CloudChunk] = []
    async with make_gateway(provider(cloud, timeout_s=0.3)) as gateway:
        started = time.monotonic()
        with pytest.raises(StreamInterruptedError, match="no chunk within"):
            await collect(gateway, REQUEST, chunks)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.8
    assert len(chunks) == 2 and len(cloud.received) == 1


@pytest.mark.anyio
async def test_stall_without_stream_times_out_then_retries(cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["stall"])
    async with make_gateway(provider(cloud, timeout_s=0.3)) as gateway:
        response = await gateway.complete(REQUEST)
    assert summary(response) == [("primary", None, "ProviderTimeoutError"), ("primary", 200, None)]


# ---------------------------------------------------------------- connection failures

@pytest.mark.anyio
async def test_refused_connection_is_a_translated_connect_error(closed_port: int) -> None:
    async with make_gateway(provider(f"http://127.0.0.1:{closed_port}/v1", max_retries=1)) as gateway:
        started = time.monotonic()
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(REQUEST)
    assert time.monotonic() - started < 1.0
    (error,) = info.value.errors
    assert isinstance(error, ProviderConnectError) and isinstance(error.__cause__, httpx.ConnectError)


@pytest.mark.anyio
async def test_unresolvable_host_is_a_connect_error() -> None:
    target = provider("http://edge-runtime-test.invalid/v1", max_retries=0)
    async with make_gateway(target) as gateway:
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(REQUEST)
    assert isinstance(info.value.errors[0], ProviderConnectError)


# ---------------------------------------------------------------- breaker, deadline, fallback order

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_breaker_opens_then_half_opens_then_closes(cloud: LoopbackCloud) -> None:
    clock = FakeClock()
    breaker = {"window_size": 2, "min_calls": 2, "failure_rate_threshold": 0.5, "cooldown_s": 30.0}
    cloud.default_fault = "500"
    async with make_gateway(provider(cloud, max_retries=0), breaker=breaker, breaker_clock=clock) as gateway:
        for _ in range(2):
            with pytest.raises(AllProvidersFailedError):
                await gateway.complete(REQUEST)
        assert gateway.breakers["primary"].state == "open"
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(REQUEST)
        assert isinstance(info.value.errors[0], CircuitOpenError) and len(cloud.received) == 2
        clock.now += 30.0
        assert gateway.breakers["primary"].state == "half_open"
        cloud.default_fault = None
        response = await gateway.complete(REQUEST)
        assert gateway.breakers["primary"].state == "closed" and len(cloud.received) == 3
        assert response.attempts[-1].breaker_state == "closed"


@pytest.mark.anyio
async def test_breaker_failure_in_half_open_reopens(cloud: LoopbackCloud) -> None:
    clock = FakeClock()
    breaker = {"window_size": 1, "min_calls": 1, "cooldown_s": 10.0}
    cloud.default_fault = "503"
    async with make_gateway(provider(cloud, max_retries=0), breaker=breaker, breaker_clock=clock) as gateway:
        with pytest.raises(AllProvidersFailedError):
            await gateway.complete(REQUEST)
        clock.now += 10.0
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(REQUEST)  # the half-open trial call fails
        assert isinstance(info.value.errors[0], ProviderHTTPError)
        assert gateway.breakers["primary"].state == "open" and len(cloud.received) == 2


@pytest.mark.anyio
async def test_overall_deadline_is_respected_across_retries(cloud: LoopbackCloud) -> None:
    cloud.default_fault = "latency:5"
    gateway = make_gateway(provider(cloud, timeout_s=0.4, max_retries=10), backoff_max_s=0.01)
    request = CloudRequest(messages=REQUEST.messages, deadline_s=1.5)
    async with gateway:
        started = time.monotonic()
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(request)
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed <= 1.65  # within +10%
    assert info.value.deadline_exceeded
    assert isinstance(info.value.errors[0], ProviderTimeoutError)
    assert len(cloud.received) >= 3  # full 0.4 s attempts, then one cut short (fewer full ones on a busy machine)


@pytest.mark.anyio
async def test_one_long_attempt_is_capped_by_the_deadline(cloud: LoopbackCloud,
                                                          second_cloud: LoopbackCloud) -> None:
    cloud.default_fault = "latency:5"
    gateway = make_gateway(provider(cloud, timeout_s=30.0), provider(second_cloud, "backup"),
                           overall_deadline_s=1.0)
    async with gateway:
        started = time.monotonic()
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(REQUEST)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= 1.1 and info.value.deadline_exceeded
    assert second_cloud.received == []  # no time was left for the backup
    assert gateway.breakers["primary"].failure_rate() == 0.0  # cut short by us, not the provider's fault


@pytest.mark.anyio
async def test_retry_after_past_the_deadline_moves_on_without_sleeping(cloud: LoopbackCloud,
                                                                      second_cloud: LoopbackCloud) -> None:
    cloud.enqueue_faults(["429:30"])
    async with make_gateway(provider(cloud), provider(second_cloud, "backup"), overall_deadline_s=2.0) as gateway:
        started = time.monotonic()
        response = await gateway.complete(REQUEST)
    assert time.monotonic() - started < 0.5
    assert summary(response) == [("primary", 429, "ProviderRateLimitedError"), ("backup", 200, None)]


@pytest.mark.anyio
async def test_falls_through_to_second_provider(cloud: LoopbackCloud, second_cloud: LoopbackCloud) -> None:
    cloud.default_fault = "500"
    async with make_gateway(provider(cloud, max_retries=1), provider(second_cloud, "backup")) as gateway:
        response = await gateway.complete(REQUEST)
    assert response.provider == "backup" and response.model == "backup-model"
    assert [a.provider for a in response.attempts] == ["primary", "primary", "backup"]
    assert len(cloud.received) == 2 and len(second_cloud.received) == 1


@pytest.mark.anyio
async def test_client_error_is_not_retried_nor_counted(cloud: LoopbackCloud, second_cloud: LoopbackCloud) -> None:
    cloud.default_fault = "400"
    breaker = {"window_size": 1, "min_calls": 1}
    async with make_gateway(provider(cloud, max_retries=3), provider(second_cloud, "backup"),
                            breaker=breaker) as gateway:
        response = await gateway.complete(REQUEST)
        assert gateway.breakers["primary"].state == "closed"
    assert summary(response) == [("primary", 400, "ProviderHTTPError"), ("backup", 200, None)]
    assert len(cloud.received) == 1


@pytest.mark.anyio
async def test_all_failures_are_reported_per_provider(cloud: LoopbackCloud, closed_port: int) -> None:
    cloud.default_fault = "401"
    gateway = make_gateway(provider(cloud, max_retries=0),
                           provider(f"http://127.0.0.1:{closed_port}/v1", "dead", max_retries=0))
    async with gateway:
        with pytest.raises(AllProvidersFailedError) as info:
            await gateway.complete(REQUEST)
    first, second = info.value.errors
    assert isinstance(first, ProviderHTTPError) and first.status == 401 and first.provider == "primary"
    assert isinstance(second, ProviderConnectError) and second.provider == "dead"
    assert not info.value.deadline_exceeded


# ---------------------------------------------------------------- privacy and keys

@pytest.mark.anyio
async def test_never_send_makes_no_request_at_all(cloud: LoopbackCloud) -> None:
    request = CloudRequest(messages=REQUEST.messages, never_send=True)
    async with make_gateway(provider(cloud)) as gateway:
        with pytest.raises(PrivacyRefusalError):
            await gateway.complete(request)
        with pytest.raises(PrivacyRefusalError):
            await collect(gateway, request, [])
    assert cloud.requests == []


@pytest.mark.anyio
async def test_server_receives_redacted_text(cloud: LoopbackCloud) -> None:
    messages = [{"role": "system", "content": "Reply to jane@corp.example."},
                {"role": "user", "content": [{"type": "text", "text": "Card 4111 1111 1111 1111, "
                                              "mail jane@corp.example, phone +1 415 555 0132"}]}]
    async with make_gateway(provider(cloud)) as gateway:
        response = await gateway.complete(CloudRequest(messages=messages))
    sent = cloud.received[0]["messages"]
    assert sent[0]["content"] == "Reply to [EMAIL_1]."
    assert sent[1]["content"][0]["text"] == "Card [CARD_1], mail [EMAIL_1], phone [PHONE_1]"
    assert response.redaction_counts == {"email": 2, "card": 1, "phone": 1}
    assert "jane@corp.example" not in str(cloud.requests)
    assert messages[0]["content"] == "Reply to jane@corp.example."  # the caller's list is untouched


@pytest.mark.anyio
async def test_callers_redactor_can_restore_the_answer(cloud: LoopbackCloud) -> None:
    redactor = Redactor()
    request = CloudRequest(messages=[{"role": "user", "content": "Greet jane@corp.example"}])
    async with make_gateway(provider(cloud)) as gateway:
        response = await gateway.complete(request, redactor=redactor)
    assert response.text == "Loopback cloud answer to: Greet [EMAIL_1]"
    assert redactor.restore(response.text) == "Loopback cloud answer to: Greet jane@corp.example"


@pytest.mark.anyio
async def test_redaction_can_be_disabled(cloud: LoopbackCloud) -> None:
    request = CloudRequest(messages=[{"role": "user", "content": "mail jane@corp.example"}])
    async with make_gateway(provider(cloud), redact=False) as gateway:
        response = await gateway.complete(request)
    assert cloud.received[0]["messages"][0]["content"] == "mail jane@corp.example"
    assert response.redaction_counts == {}


@pytest.mark.anyio
async def test_api_key_and_extra_headers_are_sent_but_not_shown(cloud: LoopbackCloud) -> None:
    key = "sk-loopback-test-key-0123456789"
    gateway = make_gateway(provider(cloud, api_key_env="LOOP_KEY", extra_headers={"X-Team": "edge"}),
                           environ={"LOOP_KEY": key})
    async with gateway:
        await gateway.complete(REQUEST)
    headers = cloud.requests[0].headers
    assert headers["Authorization"] == f"Bearer {key}" and headers["X-Team"] == "edge"
    assert key not in repr(gateway) and key not in repr(gateway.config)


# ---------------------------------------------------------------- concurrency and sync use

@pytest.mark.anyio
async def test_concurrent_requests_do_not_mix(cloud: LoopbackCloud) -> None:
    cloud.latency_s = 0.3
    results: dict[int, Any] = {}

    async def ask(gateway: CloudGateway, index: int) -> None:
        request = CloudRequest(messages=[{"role": "user", "content": f"question {index}"}])
        results[index] = await gateway.complete(request)

    async with make_gateway(provider(cloud)) as gateway:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(ask, gateway, index)
        elapsed = time.monotonic() - started
    assert elapsed < 1.2  # 8 x 0.3 s if they had run one after another
    for index, response in results.items():
        assert response.text.endswith(f"question {index}") and len(response.attempts) == 1


def test_complete_sync_without_a_loop(cloud: LoopbackCloud) -> None:
    with make_gateway(provider(cloud)) as gateway:
        assert gateway.complete_sync(REQUEST).text == ANSWER


@pytest.mark.anyio
async def test_complete_sync_inside_a_running_loop(cloud: LoopbackCloud) -> None:
    async with make_gateway(provider(cloud)) as gateway:
        assert gateway.complete_sync(REQUEST).text == ANSWER
        assert (await gateway.complete(REQUEST)).text == ANSWER  # the shared async client still works


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # connections left behind by the first, closed loop
def test_one_gateway_survives_two_event_loops(cloud: LoopbackCloud) -> None:
    gateway = make_gateway(provider(cloud))
    assert asyncio.run(gateway.complete(REQUEST)).text == ANSWER
    assert asyncio.run(gateway.complete(REQUEST)).text == ANSWER  # a client bound to the dead loop would fail
    gateway.close()
    gc.collect()


# ---------------------------------------------------------------- pure policy

def test_streamed_tool_call_deltas_are_merged() -> None:
    totals = StreamTotals()
    deltas = [
        [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"a": 2, '}}],
        [{"index": 1, "id": "call_2", "function": {"name": "mul", "arguments": "{}"}}],
        [{"index": 0, "function": {"arguments": '"b": 2}'}}],
    ]
    for delta in deltas:
        chunk = WireChunk.model_validate({"choices": [{"index": 0, "delta": {"tool_calls": delta}}]})
        assert totals.add(chunk) is not None
    assert totals.tool_calls[0] == {"id": "call_1", "type": "function",
                                    "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
    assert totals.tool_calls[1]["function"] == {"name": "mul", "arguments": "{}"}


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412490.0) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


@pytest.mark.parametrize("error, retryable", [
    (ProviderHTTPError("p", 500), True), (ProviderHTTPError("p", 503), True), (ProviderHTTPError("p", 408), True),
    (ProviderRateLimitedError("p", 429), True), (ProviderHTTPError("p", 400), False),
    (ProviderHTTPError("p", 401), False), (ProviderHTTPError("p", 404), False),
    (ProviderTimeoutError("p", "t"), True), (ProviderConnectError("p", "c"), True),
    (ProviderProtocolError("p", "bad json"), True),
    (StreamInterruptedError("p", "cut", chunks_yielded=1), False),
])
def test_retry_classification_is_by_type(error: Any, retryable: bool) -> None:
    assert is_retryable(error) is retryable


# ---------------------------------------------------------------- the loopback server itself

def test_loopback_serves_models_completions_and_oracle_answers() -> None:
    gold = {"capital of France?": "Paris"}
    with LoopbackCloud(answer_fn=lambda body: gold.get(body.get("prompt", ""), "unknown")) as cloud, \
            httpx.Client(base_url=cloud.base_url, timeout=2) as client:
        assert client.get("/models").json()["data"][0]["id"] == "loopback-1"
        answer = client.post("/completions", json={"prompt": "capital of France?"}).json()
        assert answer["choices"][0]["text"] == "Paris"
        assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        with client.stream("POST", "/completions", json={"prompt": "capital of France?", "stream": True}) as sse:
            lines = [line for line in sse.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and '"text": "Paris"' in lines[0]
        assert client.post("/nope", json={}).status_code == 404


def test_loopback_shutdown_does_not_wait_for_a_stall() -> None:
    cloud = LoopbackCloud(default_fault="stall", stall_limit_s=30.0).start()
    client_done = threading.Event()

    def stalled_client() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{cloud.base_url}/chat/completions", json={"messages": []}, timeout=0.2)
        client_done.set()

    thread = threading.Thread(target=stalled_client)
    thread.start()
    thread.join(timeout=5)
    started = time.monotonic()
    cloud.close()
    assert client_done.is_set() and time.monotonic() - started < 2.0


def test_unknown_fault_is_rejected() -> None:
    with LoopbackCloud() as cloud, pytest.raises(ValueError, match="unknown fault"):
        cloud.enqueue_faults(["teapot"])
