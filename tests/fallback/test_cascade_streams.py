"""Streams decide like whole answers: the hold, its decision, and the route every header and body names.

The local leg is a scripted backend (tokens with chosen log-probabilities, no native code) so each decision is
exact; the cloud is the real loopback cloud over HTTP.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from edge_runtime.backends.base import BackendStats, Capabilities, SamplingParams, ShouldAbort
from edge_runtime.caps import Caps
from edge_runtime.models import ResolvedModel
from edge_runtime.results import TokenStep
from edge_runtime.runtime import Runtime
from edge_runtime.server.local_leg import RuntimeLocalLeg
from fallback.cascade import Cascade, CascadeRequest, CascadeResult, StreamPiece
from fallback.policy import PolicyConfig

END = 0


class ScriptedBackend:
    """Bytes are tokens; the answer is ``text`` with one log-probability per byte; it counts what it made."""

    format, n_ctx, n_vocab, ready = "gguf", 4096, 257, True
    capabilities = Capabilities(concurrent=True, max_top_logprobs=0)

    def __init__(self, text: bytes, logprob: float, gate_after: int | None = None, gate_s: float = 10.0) -> None:
        self.text, self.logprob, self.gate_after, self.gate_s = text, logprob, gate_after, gate_s
        self.generated = 0
        self.gate = threading.Event()  # generation past ``gate_after`` tokens waits for it

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(text.encode()) or [32]

    def token_piece(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id else b""

    def chat_template(self) -> str | None:
        return None

    def special_tokens(self) -> tuple[str, str]:
        return "", ""

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        self.generated = 0
        for byte in self.text[: sampling.max_tokens]:
            if should_abort():
                return
            if self.generated == self.gate_after:
                self.gate.wait(self.gate_s)
            self.generated += 1
            yield TokenStep(byte, bytes([byte]), self.logprob, ())
        yield TokenStep(END, b"", 0.0, (), is_end_of_generation=True)

    def score_continuations(self, prefix_ids, continuations):
        return [[-1.0] * len(ids) for ids in continuations]

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        return 0

    def stats(self) -> BackendStats:
        return BackendStats()

    def close(self) -> None:
        pass


def runtime_for(text: bytes, confidence: float, gate_after: int | None = None,
                gate_s: float = 10.0) -> RuntimeLocalLeg:
    """The scripted backend in a real runtime, behind the server's adapter (as the server wires it)."""
    return RuntimeLocalLeg(Runtime(ScriptedBackend(text, math.log(confidence), gate_after, gate_s),
                                   ResolvedModel("gguf", Path("scripted.gguf")), Caps(), 0.0))


@pytest.fixture()
def cloud():
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(answer_fn=lambda body: "Cloud answer.") as loopback:
        yield loopback


def gateway_for(cloud):
    from fallback.gateway import CloudGateway
    from fallback.providers import GatewayConfig, ProviderConfig

    provider = ProviderConfig(name="loopback", base_url=cloud.base_url, model="m", timeout_s=2, max_retries=0)
    return CloudGateway(GatewayConfig(providers=[provider], overall_deadline_s=5, backoff_base_s=0.01))


async def open_and_drain(cascade: Cascade, request: CascadeRequest) -> tuple[str, list, CascadeResult]:
    opened = await cascade.open_stream(request)
    items = [item async for item in opened.items]
    return opened.route, [i for i in items if isinstance(i, StreamPiece)], items[-1]


def stream(cascade: Cascade, **fields):
    return asyncio.run(open_and_drain(cascade, CascadeRequest(prompt="Q?", **fields)))


def complete(cascade: Cascade, **fields) -> CascadeResult:
    return asyncio.run(cascade.complete(CascadeRequest(prompt="Q?", **fields)))


def test_threshold_one_escalates_streams_and_whole_answers_alike(cloud):
    cascade = Cascade(runtime_for(b" Paris.", 0.99), gateway_for(cloud), PolicyConfig(threshold=1.0))
    for max_tokens in (4, 8, 64):  # the whole answer inside the hold, exactly the hold, longer than it
        route, pieces, result = stream(cascade, max_tokens=max_tokens)
        assert route == result.route_taken == "cloud", max_tokens
        assert "".join(p.text for p in pieces) == "Cloud answer."
        assert complete(cascade, max_tokens=max_tokens).route_taken == "cloud"


def test_a_confident_stream_commits_after_the_minimum_hold(cloud):
    local = runtime_for(b" Paris is the capital of France, a city on the Seine.", 0.97, gate_after=3)
    cascade = Cascade(local, gateway_for(cloud), PolicyConfig(threshold=0.5), hold_min_tokens=3)

    async def first_route():
        # the backend stops after 3 tokens until released: the stream must open (commit) on those 3 alone
        opened = await asyncio.wait_for(cascade.open_stream(CascadeRequest(prompt="Q?", max_tokens=64)), 5)
        route, generated = opened.route, local.runtime.backend.generated
        local.runtime.backend.gate.set()
        items = [item async for item in opened.items]
        return route, generated, items[-1]

    route, generated_at_commit, result = asyncio.run(first_route())
    assert generated_at_commit == 3
    assert route == result.route_taken == "local" and result.decision.reason.value == "confident"
    assert result.policy_wanted_cloud is False


def test_the_hold_decision_uses_the_threshold_on_the_held_tokens(cloud):
    # running confidence 0.6 never clears threshold 0.55 + margin 0.1: the hold runs to its end, then 0.6 >= 0.55
    # commits; at threshold 0.7 the same stream escalates, exactly as a whole answer of confidence 0.6 would
    text = b" an answer that goes on for a while"
    committed = Cascade(runtime_for(text, 0.6), gateway_for(cloud), PolicyConfig(threshold=0.55))
    route, pieces, result = stream(committed, max_tokens=32)
    assert route == result.route_taken == "local" and len(pieces) == 32
    # the backend pauses 0.5 s after the 8-token hold: time for the escalation to stop it
    escalated = Cascade(runtime_for(text, 0.6, gate_after=8, gate_s=0.5), gateway_for(cloud),
                        PolicyConfig(threshold=0.7))
    route, pieces, result = stream(escalated, max_tokens=32)
    assert route == result.route_taken == "cloud" and result.decision.reason.value == "low_confidence"
    assert escalated.local.runtime.backend.generated < 32, "local decoding stops at the escalation"


def test_no_cloud_streams_at_once_and_says_the_policy_wanted_the_cloud():
    """A whole answer the policy would escalate is ``local-degraded`` when no cloud is configured; a stream cannot
    be escalated either, so it holds only its first token (no wait for a decision that changes nothing), says
    ``local`` and marks ``policy_wanted_cloud``."""
    cascade = Cascade(runtime_for(b" Paris.", 0.99), None, PolicyConfig(threshold=1.0))
    route, pieces, result = stream(cascade, max_tokens=16)
    assert route == result.route_taken == "local" and "".join(p.text for p in pieces) == " Paris."
    assert result.policy_wanted_cloud and result.decision.escalate
    assert complete(cascade, max_tokens=16).route_taken == "local-degraded"


def test_a_stream_without_a_cloud_is_not_held_for_a_decision():
    """The backend pauses after its first token: a stream that holds tokens for a decision (as one with a cloud
    does, up to 8) could not hand over its first piece before the pause ends."""
    text = b" an answer that goes on for a while"
    cascade = Cascade(runtime_for(text, 0.6, gate_after=1, gate_s=1.0), None, PolicyConfig(threshold=0.7))

    async def first_piece_seconds() -> float:
        started = time.perf_counter()
        opened = await cascade.open_stream(CascadeRequest(prompt="Q?", max_tokens=16))
        async for item in opened.items:
            if isinstance(item, StreamPiece):
                seconds = time.perf_counter() - started
                break
        await opened.items.aclose()
        return seconds

    assert asyncio.run(first_piece_seconds()) < 0.5


def test_a_committed_stream_stays_local_and_says_the_policy_wanted_the_cloud(cloud):
    # confident first tokens (commit), then a long unsure tail drags the whole answer below the threshold
    backend = ScriptedBackend(b" Paris" + b"?" * 40, math.log(0.99))
    original = backend.generate_tokens

    def tail_doubts(prompt_ids, sampling, should_abort):
        for index, step in enumerate(original(prompt_ids, sampling, should_abort)):
            yield step if index < 6 or step.is_end_of_generation else TokenStep(step.token_id, step.piece,
                                                                                 math.log(0.05), ())
    backend.generate_tokens = tail_doubts
    runtime = Runtime(backend, ResolvedModel("gguf", Path("scripted.gguf")), Caps(), 0.0)
    cascade = Cascade(RuntimeLocalLeg(runtime), gateway_for(cloud), PolicyConfig(threshold=0.5))
    route, _, result = stream(cascade, max_tokens=46)
    assert route == result.route_taken == "local"
    assert result.policy_wanted_cloud is True and result.decision.escalate


def test_a_json_answer_is_judged_by_its_value_tokens_not_the_forced_punctuation():
    from edge_runtime.results import TokenLogprob

    pieces = ['{"', "from", '":"', "bos", "ton", '","', "to", '":"', "den", "ver", '"}']
    values = {"bos", "ton", "den", "ver"}
    tokens = [TokenLogprob(i, text, math.log(0.98) if text in values else -10.0, ()) for i, text in enumerate(pieces)]
    schema = {"type": "json_schema", "json_schema": {"name": "f", "schema": {
        "type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}}}}}
    cascade = Cascade(runtime_for(b"x", 0.9), None, PolicyConfig(threshold=0.5))
    as_json = cascade.confidence_of_tokens(tokens, CascadeRequest(prompt="Q?", response_format=schema))
    as_text = cascade.confidence_of_tokens(tokens, CascadeRequest(prompt="Q?"))
    assert as_json == pytest.approx(0.98) and as_text < 0.05
