"""Cloud fault matrix through the real server, cascade, gateway and ledger, against a cloud we break on purpose.

Each case sends one request that must go to the cloud (``X-Edge-Route: cloud``, or ``auto`` with threshold 1.0
so the local answer always escalates; streaming ``auto`` uses an early floor of 0.999 so the cloud streams the
answer) while the cloud misbehaves. What must hold, per case:

* answered: forced cloud -> the cloud's answer (200) or an OpenAI error object with code ``cloud_unavailable``
  (503 before headers; in-band after them when streaming); ``auto`` non-streaming -> the cloud's answer or the
  local answer marked ``local-degraded``;
* on time: the cloud leg ends within the gateway's overall deadline plus 10%. Forced cloud: the whole request.
  ``auto`` non-streaming: the request minus the local leg (``local_latency_s`` from the ledger). Streaming: from
  the response headers (sent once the route is chosen) to the end of the body;
* nothing sent twice: (1) the cloud receives at most ``max_retries + 1`` copies of a request, all identical;
  (2) once the cloud's answer began (a 200 whole answer, or a first content chunk streamed to the client) it
  receives no further copy: a recovered request is sent exactly ``faults before the first good answer + 1``
  times, a stream that breaks after content is sent exactly once. Retries *before* any content are allowed;
* recorded once: exactly one new ledger row per request, with the route the client saw: ``cloud``,
  ``local-degraded``, or ``failed`` (with the error's type) when the request ended in an error.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability.conftest import GatewayKnobs, build_server, refused_port, running, unanswered_port

# the overall deadline counts from the request's start, so an ``auto`` request's local turn uses part of it:
# 3 s leaves a recovering cloud room even when the local turn is slow on a busy machine
KNOBS = GatewayKnobs(timeout_s=0.8, connect_timeout_s=0.4, max_retries=2, overall_deadline_s=3.0)
SLACK = 1.10  # "within its deadline plus 10%"


@dataclass(frozen=True)
class Fault:
    """``faults`` are queued on the loopback cloud; ``target`` says where the gateway points instead."""

    faults: tuple[str, ...] = ()
    recovers: bool = False  # the cloud answers after the faults
    target: str = "cloud"  # cloud | refused | unanswered | unresolvable
    content_first: frozenset = frozenset()  # stream modes in which content reaches the client before the break
    error_says: str = ""  # what the error message (forced cloud) must name, so the fault is the one intended


STALLS_AFTER_CONTENT = frozenset({True})
MATRIX = {
    "connect-timeout": Fault(target="unanswered", error_says="ConnectTimeout"),
    "read-timeout": Fault(("latency:10",) * 3, error_says="within"),
    "429-retry-after": Fault(("429:0.2",), recovers=True),
    "429-no-retry-after": Fault(("429-no-retry-after",), recovers=True),
    "429-retry-after-past-deadline": Fault(("429:30",), error_says="HTTP 429 (Retry-After 30 s)"),
    "500": Fault(("500",) * 3),
    "502": Fault(("502",) * 3),
    "503": Fault(("503",) * 3),
    "503-then-ok": Fault(("503", "502"), recovers=True),
    "reset-mid-body": Fault(("reset",) * 3),
    "malformed-json": Fault(("malformed",) * 3),
    "malformed-then-ok": Fault(("malformed",), recovers=True),
    "stall": Fault(("stall",) * 3, content_first=STALLS_AFTER_CONTENT),
    "stream-cut-halfway": Fault(("stream-cut",) * 3, content_first=STALLS_AFTER_CONTENT),
    "refused-port": Fault(target="refused", error_says="ConnectError"),
    "unresolvable-name": Fault(target="unresolvable", error_says="ConnectError"),
}

def _request(stream: bool, marker: str) -> dict:
    content = f"Name the capital of France. [{marker}]"
    # a stream holds 8 local tokens back before it may escalate early; a whole answer needs only a few
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8 if stream else 3, "stream": stream}


class Harness:
    """One loopback cloud; per gateway target, one server (threshold 1.0, early floor 0.999) with a ledger."""

    def __init__(self, runtime, cloud, folder, stack) -> None:
        self.runtime, self.cloud, self.folder, self.stack = runtime, cloud, folder, stack
        self.targets = {"cloud": cloud.base_url, "unresolvable": "http://edge-cloud.invalid/v1",
                        "refused": f"http://127.0.0.1:{stack.enter_context(refused_port())}/v1",
                        "unanswered": f"http://127.0.0.1:{stack.enter_context(unanswered_port())}/v1"}
        self.servers: dict[str, tuple[object, str]] = {}

    def server(self, target: str):
        if target not in self.servers:
            built = build_server(self.runtime, base_url=self.targets[target], knobs=KNOBS, threshold=1.0,
                                 early_floor=0.999, ledger_path=self.folder / f"{target}.sqlite3")
            self.servers[target] = built, self.stack.enter_context(running(built.app))
        return self.servers[target]

    def queue(self, faults) -> None:
        with self.cloud._lock:  # LoopbackCloud has no public clear; a case's unused faults must not leak
            self.cloud._faults.clear()
        self.cloud.enqueue_faults(list(faults))


@pytest.fixture(scope="module")
def harness(runtime, tmp_path_factory):
    from benchmarks.loopback_cloud import LoopbackCloud

    with contextlib.ExitStack() as stack:
        cloud = stack.enter_context(LoopbackCloud(answer_fn=lambda body: "Cloud says Paris.",
                                                  stall_limit_s=5.0))
        yield Harness(runtime, cloud, tmp_path_factory.mktemp("fault-ledgers"), stack)


@dataclass
class Outcome:
    status: int
    route_taken: str | None
    text: str
    error: dict | None
    elapsed_s: float
    cloud_leg_s: float
    received: list
    new_rows: list
    done: bool = True


def _send(harness: Harness, fault: Fault, route: str, stream: bool) -> Outcome:
    built, url = harness.server(fault.target)
    harness.queue(fault.faults)
    marker = uuid.uuid4().hex
    rows_before = {entry.id for entry in built.ledger.entries()}
    headers = {"X-Edge-Route": route}
    started = time.monotonic()
    with httpx.Client(timeout=30) as http:
        if stream:
            outcome = _read_stream(http, url, _request(True, marker), headers, started)
        else:
            response = http.post(url + "/v1/chat/completions", json=_request(False, marker), headers=headers)
            body = response.json()
            text = body["choices"][0]["message"]["content"] if response.status_code == 200 else ""
            outcome = Outcome(response.status_code, response.headers.get("x-edge-route-taken"), text,
                              body.get("error"), time.monotonic() - started, 0.0, [], [])
    outcome.received = [body for body in harness.cloud.received if marker in json.dumps(body)]
    outcome.new_rows = [entry for entry in built.ledger.entries() if entry.id not in rows_before]
    if not stream:
        local_s = outcome.new_rows[0].local_latency_s if outcome.new_rows and route == "auto" else 0.0
        outcome.cloud_leg_s = outcome.elapsed_s - (local_s or 0.0)
    return outcome


def _read_stream(http: httpx.Client, url: str, body: dict, headers: dict, started: float) -> Outcome:
    with http.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
        headers_at = time.monotonic()
        texts, error, done = [], None, False
        if response.status_code != 200:  # refused before any stream began: a plain error object
            error = json.loads(response.read() or b"{}").get("error")
            ended = time.monotonic()
            return Outcome(response.status_code, response.headers.get("x-edge-route-taken"), "", error,
                           ended - started, ended - headers_at, [], [], done)
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                continue
            event = json.loads(data)
            if "error" in event:
                error = event["error"]
            elif response.status_code == 200:
                texts += [choice["delta"].get("content") or "" for choice in event["choices"]]
    ended = time.monotonic()
    return Outcome(response.status_code, response.headers.get("x-edge-route-taken"), "".join(texts), error,
                   ended - started, ended - headers_at, [], [], done)


# Forced-cloud cases need no local generation and all run by default; an ``auto`` case runs the bundled model
# first (~1 s on a busy two-core box), so by default only one fault per kind of failure runs that way.
AUTO_BY_DEFAULT = ("500", "stall", "refused-port", "429-retry-after", "malformed-then-ok")


def _case(name: str, route: str, stream: bool, marks=()):
    slow = route == "auto" and name not in AUTO_BY_DEFAULT
    return pytest.param(name, route, stream, id=f"{name}-{route}-{'stream' if stream else 'whole'}",
                        marks=[*marks, *([pytest.mark.slow] if slow else [])])


CASES = [_case(name, route, stream) for name in MATRIX for route in ("cloud", "auto") for stream in (False, True)]


@pytest.mark.parametrize("name, route, stream", CASES)
def test_fault_is_answered_on_time_and_never_resent(harness, name, route, stream):
    fault = MATRIX[name]
    outcome = _send(harness, fault, route, stream)
    deadline = KNOBS.overall_deadline_s * SLACK
    assert outcome.cloud_leg_s <= deadline, f"cloud leg took {outcome.cloud_leg_s:.2f} s > {deadline:.2f} s"
    _check_answered(fault, route, stream, outcome)
    _check_never_resent(fault, stream, outcome)
    _check_recorded_once(fault, outcome)


def _check_answered(fault: Fault, route: str, stream: bool, outcome: Outcome) -> None:
    if fault.recovers:
        assert outcome.status == 200 and outcome.route_taken == "cloud" and outcome.error is None
        assert outcome.text == "Cloud says Paris."
    elif route == "auto" and stream not in fault.content_first:
        # the cloud failed before sending anything (a stream tries it up to its first chunk before the headers)
        assert outcome.status == 200 and outcome.route_taken == "local-degraded" and outcome.text
    else:
        assert outcome.error is not None and outcome.error["code"] == "cloud_unavailable"
        assert set(outcome.error) == {"message", "type", "param", "code"}
        assert outcome.status in (200, 503) and (outcome.status == 503 or stream)
        assert fault.error_says in outcome.error["message"]
    if stream and outcome.status == 200:
        assert outcome.done, "a stream must end with data: [DONE], also after an in-band error"
    if stream and stream in fault.content_first:
        assert outcome.text == "Cloud says ", "the content streamed before the break reaches the client"


def _check_never_resent(fault: Fault, stream: bool, outcome: Outcome) -> None:
    sent = outcome.received
    assert len(sent) <= KNOBS.max_retries + 1
    assert all(body == sent[0] for body in sent), "retries must send the same body"
    if fault.target != "cloud":
        assert sent == []
    elif fault.recovers:
        assert len(sent) == len(fault.faults) + 1, "no copy may follow the answer that was used"
    elif stream in fault.content_first:
        assert len(sent) == 1, "a stream that already delivered content is never sent again"
    else:
        assert len(sent) >= 1


def _check_recorded_once(fault: Fault, outcome: Outcome) -> None:
    assert len(outcome.new_rows) == 1, f"{len(outcome.new_rows)} ledger rows for one request"
    row = outcome.new_rows[0]
    if outcome.error is None:
        assert row.route == outcome.route_taken and row.error is None
    else:
        assert row.route == "failed" and row.error, "a request that ended in an error is recorded as failed"
        assert (row.error == "StreamInterruptedError") == (outcome.text != ""), "the row names the error"
    assert row.route != "cloud" or fault.recovers


def test_streaming_auto_escalation_degrades_to_local_when_the_cloud_fails(harness):
    outcome = _send(harness, MATRIX["500"], "auto", True)
    assert outcome.route_taken == "local-degraded" and outcome.error is None and outcome.text


def test_forced_cloud_stream_that_never_starts_is_a_503(harness):
    outcome = _send(harness, MATRIX["500"], "cloud", True)
    assert outcome.status == 503


def _breaker_state(http: httpx.Client, url: str) -> float:
    line = next(line for line in http.get(url + "/metrics").text.splitlines()
                if line.startswith('edge_breaker_state{provider="loopback"}'))
    return float(line.split()[-1])


def test_breaker_opens_then_recovers_through_half_open(runtime, fault_cloud, tmp_path):
    """Two failures open the breaker; while open the cloud is not called and answers come at once (503 when
    forced, local-degraded on auto); after the cooldown one failing trial re-opens it, one good trial closes it."""
    now = [1000.0]
    knobs = GatewayKnobs(timeout_s=0.8, max_retries=0, overall_deadline_s=3.0, breaker_min_calls=2,
                         breaker_cooldown_s=30.0)
    built = build_server(runtime, base_url=fault_cloud.base_url, knobs=knobs, threshold=1.0,
                         ledger_path=tmp_path / "ledger.sqlite3", breaker_clock=lambda: now[0])
    forced, auto = {"X-Edge-Route": "cloud"}, {"X-Edge-Route": "auto"}
    with running(built.app) as url, httpx.Client(base_url=url, timeout=30) as http:
        def ask(headers, stream=False):
            started = time.monotonic()
            response = http.post("/v1/chat/completions", json=_request(stream, uuid.uuid4().hex), headers=headers)
            return response, time.monotonic() - started

        fault_cloud.enqueue_faults(["500", "500"])
        assert [ask(forced)[0].status_code for _ in range(2)] == [503, 503]
        assert _breaker_state(http, url) == 2.0 and len(fault_cloud.received) == 2
        refused, took = ask(forced)
        assert refused.status_code == 503 and "circuit breaker is open" in refused.json()["error"]["message"]
        assert took < 0.5, "an open breaker answers at once instead of waiting on the provider"
        degraded = ask(auto)[0]
        assert degraded.headers["x-edge-route-taken"] == "local-degraded"
        assert "circuit breaker is open" in degraded.json()["edge"]["degraded_reason"]
        assert "circuit breaker is open" in ask(forced, stream=True)[0].text
        assert len(fault_cloud.received) == 2, "nothing reaches the provider while the breaker is open"

        now[0] += 31
        assert _breaker_state(http, url) == 1.0
        fault_cloud.enqueue_faults(["500"])
        assert ask(forced)[0].status_code == 503 and len(fault_cloud.received) == 3
        assert _breaker_state(http, url) == 2.0, "a failed half-open trial opens the breaker again"

        now[0] += 31
        recovered = ask(forced)[0]
        assert recovered.status_code == 200 and recovered.json()["choices"][0]["message"]["content"]
        assert _breaker_state(http, url) == 0.0
        assert [ask(forced)[0].status_code for _ in range(2)] == [200, 200]
        assert len(fault_cloud.received) == 6
