"""The cascade's whole answers, decided end to end: a scripted local leg and a real loopback cloud over HTTP.

The local leg is a fake behind the fallback's own ``LocalLeg`` protocol (pure logic: chosen tokens and
log-probabilities, or a chosen failure), so every decision is exact; the cloud is the loopback
OpenAI-compatible server on 127.0.0.1, reached through the real gateway; every request is checked against
the one ledger row it leaves.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from fallback.cascade import Cascade, CascadeRequest, CascadeResult
from fallback.errors import (CloudUnavailableError, LocalCrashedError, LocalInputTooLongError, LocalLegError,
                             LocalStartingError, PrivacyRefusalError, RequestRejectedError)
from fallback.ledger import Ledger
from fallback.local_leg import LocalLeg, LocalRequest
from fallback.policy import PolicyConfig, RouteTaken

CLOUD_ANSWER = "Cloud says Paris."


@dataclass(frozen=True)
class Token:
    token_id: int
    text: str
    logprob: float
    top: tuple = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Timings:
    time_to_first_token_s: float | None = 0.01


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    tokens: list[Token]
    usage: Usage
    timings: Timings = field(default_factory=Timings)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Piece:
    text: str
    token: Token | None


class FakeStream:
    def __init__(self, leg: FakeLocalLeg) -> None:
        self.leg, self.result = leg, None

    def __iter__(self) -> Iterator[Piece]:
        self.tokens = tokens = []
        for index, word in enumerate(self.leg.words):
            if self.leg.fail_after is not None and index == self.leg.fail_after:
                raise self.leg.failure
            tokens.append(Token(index + 1, word, math.log(self.leg.probability)))
            yield Piece(word, tokens[-1])
        self.result = Answer("".join(self.leg.words), "stop", tokens, Usage(5, len(tokens)))

    def close(self) -> None:
        """As a runtime stream closed early: the answer so far, finish reason ``cancelled``."""
        if self.result is None:
            tokens = getattr(self, "tokens", [])
            self.result = Answer("".join(t.text for t in tokens), "cancelled", tokens, Usage(5, len(tokens)))


class FakeLocalLeg:
    """Answers ``words`` with one probability per token, or raises ``failure`` (at the start, or after
    ``fail_after`` tokens); records every request it was asked."""

    def __init__(self, words=(" Paris", "."), probability: float = 0.95, *, ready: bool = True,
                 failure: Exception | None = None, fail_after: int | None = None) -> None:
        self.words, self.probability, self.ready = list(words), probability, ready
        self.failure, self.fail_after = failure, fail_after
        self.asked: list[LocalRequest] = []

    def stream(self, request: LocalRequest) -> FakeStream:
        self.asked.append(request)
        if self.failure is not None and self.fail_after is None:
            raise self.failure
        return FakeStream(self)


@pytest.fixture()
def cloud():
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(answer_fn=lambda body: CLOUD_ANSWER) as loopback:
        yield loopback


@pytest.fixture()
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as opened:
        yield opened


def gateway_for(cloud):
    from fallback.gateway import CloudGateway
    from fallback.providers import GatewayConfig, ProviderConfig

    provider = ProviderConfig(name="loopback", base_url=cloud.base_url, model="m", timeout_s=5, max_retries=0,
                              price_input_per_mtok=1.0, price_output_per_mtok=2.0)
    return CloudGateway(GatewayConfig(providers=[provider], overall_deadline_s=10, escalation_budget_s=10,
                                      backoff_base_s=0.01))


def answer(local: LocalLeg, cloud=None, ledger=None, threshold: float = 0.5, **fields) -> CascadeResult:
    cascade = Cascade(local, gateway_for(cloud) if cloud is not None else None, PolicyConfig(threshold=threshold),
                      ledger)
    return asyncio.run(cascade.complete(CascadeRequest(prompt="Capital of France?", task="t", **fields)))


def only_row(ledger: Ledger):
    rows = ledger.entries()
    assert len(rows) == 1, [row.route for row in rows]
    return rows[0]


def test_a_confident_local_answer_is_kept_and_the_cloud_never_called(cloud, ledger):
    result = answer(FakeLocalLeg(probability=0.95), cloud, ledger)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("local", " Paris.", "confident")
    assert result.confidence == pytest.approx(0.95) and result.completion_tokens == 2
    assert cloud.received == []
    row = only_row(ledger)
    assert (row.route, row.reason, row.local_tokens_in, row.local_tokens_out) == ("local", "confident", 5, 2)
    assert row.id == result.ledger_id
    assert row.cloud_cost_usd == 0.0 and row.provider is None
    assert (row.price_input_per_mtok, row.price_output_per_mtok) == (1.0, 2.0)  # priced for the cloud-only estimate


def test_a_low_confidence_answer_is_escalated_to_the_cloud(cloud, ledger):
    local = FakeLocalLeg(probability=0.2)
    result = answer(local, cloud, ledger)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("cloud", CLOUD_ANSWER,
                                                                               "low_confidence")
    assert result.confidence == pytest.approx(0.2) and result.local.text == " Paris."
    assert len(cloud.received) == 1 and cloud.received[0]["messages"][-1]["content"] == "Capital of France?"
    row = only_row(ledger)
    assert (row.route, row.reason, row.provider, row.task) == ("cloud", "low_confidence", "loopback", "t")
    assert row.local_tokens_out == 2 and row.cloud_tokens_out == len(CLOUD_ANSWER.split()) and row.cloud_cost_usd > 0


@pytest.mark.parametrize(("failure", "reason"), [
    (LocalCrashedError("EngineCrashedError: the engine died (signal 9)"), "local_crashed"),
    (LocalStartingError("EngineStartingError: the engine is restarting"), "local_starting"),
    (LocalLegError("BackendError: decode failed"), "local_error"),
])
def test_a_local_failure_mid_answer_goes_to_the_cloud(cloud, ledger, failure, reason):
    result = answer(FakeLocalLeg(failure=failure, fail_after=1), cloud, ledger)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("cloud", CLOUD_ANSWER, reason)
    assert result.decision.detail == str(failure) and result.local is None
    assert len(cloud.received) == 1
    row = only_row(ledger)
    assert (row.route, row.reason, row.local_tokens_out, row.provider) == ("cloud", reason, 0, "loopback")


def test_a_starting_engine_sends_the_request_to_the_cloud_without_asking_it(cloud, ledger):
    local = FakeLocalLeg(ready=False)
    result = answer(local, cloud, ledger)
    assert (result.route_taken, result.decision.reason.value) == ("cloud", "local_starting")
    assert local.asked == [] and len(cloud.received) == 1
    assert only_row(ledger).route == "cloud"


def test_a_starting_engine_without_a_cloud_is_still_asked(ledger):
    local = FakeLocalLeg(ready=False)
    result = answer(local, None, ledger)
    assert result.route_taken == "local" and len(local.asked) == 1


def test_a_prompt_too_long_for_the_local_model_goes_to_the_cloud(cloud, ledger):
    too_long = LocalInputTooLongError("prompt is 9,412 tokens; cap is 4,096")
    result = answer(FakeLocalLeg(failure=too_long), cloud, ledger)
    assert (result.route_taken, result.decision.reason.value) == ("cloud", "input_too_long")
    assert only_row(ledger).route == "cloud"


@pytest.mark.parametrize("never_send", [False, True])
def test_a_prompt_too_long_with_no_cloud_to_take_it_is_the_callers_error(cloud, ledger, never_send):
    too_long = LocalInputTooLongError("prompt is 9,412 tokens; cap is 4,096")
    with pytest.raises(RequestRejectedError, match="9,412 tokens; cap is 4,096: too long for the local model"):
        answer(FakeLocalLeg(failure=too_long), cloud if never_send else None, ledger, never_send=never_send)
    assert cloud.received == [] and ledger.entries() == []  # a rejected request is not a served one


def test_an_invalid_request_is_rejected_not_escalated(cloud, ledger):
    with pytest.raises(RequestRejectedError, match="max_tokens"):
        answer(FakeLocalLeg(failure=RequestRejectedError("max_tokens must be >= 1")), cloud, ledger)
    assert cloud.received == [] and ledger.entries() == []


def test_a_cloud_that_is_down_leaves_the_local_answer_marked_degraded(cloud, ledger):
    cloud.default_fault = "503"
    result = answer(FakeLocalLeg(probability=0.2), cloud, ledger)
    assert (result.route_taken, result.text, result.decision.reason.value) == ("local-degraded", " Paris.",
                                                                               "low_confidence")
    assert "AllProvidersFailedError" in result.degraded_reason and "503" in result.degraded_reason
    assert len(cloud.received) == 1
    row = only_row(ledger)
    assert (row.route, row.local_tokens_out, row.cloud_tokens_out) == ("local-degraded", 2, 0)


def test_no_cloud_configured_means_local_degraded(ledger):
    result = answer(FakeLocalLeg(probability=0.2), None, ledger)
    assert (result.route_taken, result.degraded_reason) == ("local-degraded", "no cloud is configured")
    assert only_row(ledger).route == "local-degraded"


def test_never_send_keeps_an_unsure_answer_on_the_device(cloud, ledger):
    result = answer(FakeLocalLeg(probability=0.2), cloud, ledger, never_send=True)
    assert (result.route_taken, result.degraded_reason) == ("local-degraded", "request is tagged never_send")
    assert cloud.requests == []
    assert only_row(ledger).route == "local-degraded"


def test_never_send_with_a_crashed_local_model_fails_without_sending(cloud, ledger):
    crashed = LocalCrashedError("EngineCrashedError: the engine died")
    with pytest.raises(CloudUnavailableError, match="request is tagged never_send"):
        answer(FakeLocalLeg(failure=crashed), cloud, ledger, never_send=True)
    assert cloud.requests == []
    row = only_row(ledger)
    assert (row.route, row.reason, row.error) == ("failed", "local_crashed", "CloudUnavailableError")


def test_never_send_forced_to_the_cloud_is_refused_before_anything(cloud, ledger):
    local = FakeLocalLeg()
    with pytest.raises(PrivacyRefusalError):
        answer(local, cloud, ledger, never_send=True, route="cloud")
    assert local.asked == [] and cloud.requests == [] and ledger.entries() == []


def test_neither_leg_answering_is_one_failed_row(cloud, ledger):
    cloud.default_fault = "503"
    with pytest.raises(CloudUnavailableError):
        answer(FakeLocalLeg(failure=LocalCrashedError("EngineCrashedError: died"), fail_after=0), cloud, ledger)
    row = only_row(ledger)
    assert (row.route, row.reason, row.error) == ("failed", "local_crashed", "CloudUnavailableError")


@pytest.mark.parametrize(("route", "taken", "reason"), [("local", "local", "forced_local"),
                                                        ("cloud", "cloud", "forced_cloud")])
def test_a_forced_route_is_taken_whatever_the_confidence(cloud, ledger, route, taken, reason):
    local = FakeLocalLeg(probability=0.01 if route == "local" else 0.99)
    result = answer(local, cloud, ledger, route=route)
    assert (result.route_taken, result.decision.reason.value) == (taken, reason)
    assert len(local.asked) == (1 if route == "local" else 0)
    assert len(cloud.received) == (1 if route == "cloud" else 0)
    assert only_row(ledger).route == taken


def test_the_local_request_carries_what_the_caller_asked(ledger):
    local = FakeLocalLeg()
    answer(local, None, ledger, max_tokens=7, temperature=0.3, stop=["\n"], deadline_s=2.5, grammar="root ::= x")
    asked = local.asked[0]
    assert (asked.prompt, asked.max_tokens, asked.temperature, asked.stop, asked.deadline_s, asked.grammar) == (
        "Capital of France?", 7, 0.3, ["\n"], 2.5, "root ::= x")


def test_routes_taken_are_the_strings_every_interface_shows():
    assert [route.value for route in RouteTaken] == ["local", "cloud", "both", "local-degraded", "failed",
                                                     "cancelled"]
    assert f"{RouteTaken.LOCAL_DEGRADED}" == str(RouteTaken.LOCAL_DEGRADED) == "local-degraded"


def stream(local: LocalLeg, cloud=None, ledger=None, threshold: float = 0.5, **fields):
    cascade = Cascade(local, gateway_for(cloud) if cloud is not None else None, PolicyConfig(threshold=threshold),
                      ledger)

    async def drain():
        opened = await cascade.open_stream(CascadeRequest(prompt="Capital of France?", **fields))
        items = [item async for item in opened.items]
        return opened.route, "".join(item.text for item in items[:-1]), items[-1]

    return asyncio.run(drain())


def test_a_stream_whose_local_leg_crashes_in_the_hold_is_answered_by_the_cloud(cloud, ledger):
    crashed = LocalCrashedError("EngineCrashedError: the engine died")
    route, text, result = stream(FakeLocalLeg(failure=crashed, fail_after=1), cloud, ledger)
    assert (route, text, result.route_taken, result.decision.reason.value) == ("cloud", CLOUD_ANSWER, "cloud",
                                                                               "local_crashed")
    assert only_row(ledger).route == "cloud"


def test_a_stream_with_the_cloud_down_streams_the_local_answer_degraded(cloud, ledger):
    cloud.default_fault = "503"
    route, text, result = stream(FakeLocalLeg(probability=0.2), cloud, ledger)
    assert (route, text, result.route_taken) == ("local-degraded", " Paris.", "local-degraded")
    assert "the cloud failed before answering" in result.degraded_reason
    assert only_row(ledger).route == "local-degraded"


def test_a_confident_stream_stays_local(cloud, ledger):
    route, text, result = stream(FakeLocalLeg(probability=0.95), cloud, ledger)
    assert (route, text, result.route_taken, result.policy_wanted_cloud) == ("local", " Paris.", "local", False)
    assert cloud.received == [] and only_row(ledger).route == "local"
