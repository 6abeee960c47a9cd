"""The server through the real ``openai`` client and raw HTTP: wire format, streaming, logprobs, structured
output, errors, admission, escalation to a loopback cloud, cancellation, metrics."""

from __future__ import annotations

import json
import threading
import time

import httpx
import jsonschema
import openai
import pytest

from tests.greedy import assert_same_greedy_path

from tests.edge_runtime.server.conftest import make_server, running

CAPITAL = [{"role": "user", "content": "Q: What is the capital of France?\nA:"}]
PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                 "required": ["name", "age"], "additionalProperties": False}


def test_chat_completion_wire_format_and_route_headers(client):
    raw_response = client.chat.completions.with_raw_response.create(model="any", messages=CAPITAL, max_tokens=6)
    completion = raw_response.parse()
    assert raw_response.headers["x-edge-route-taken"] == "local"
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 6
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.model_extra["edge"]["route"] == "local"


def test_completions_with_logprobs(client):
    completion = client.completions.create(model="any", prompt="Q: What is the capital of France?\nA:",
                                           max_tokens=4, logprobs=3)
    logprobs = completion.choices[0].logprobs
    assert completion.object == "text_completion"
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert all(value <= 0 for value in logprobs.token_logprobs)
    assert all(len(alternatives) == 3 for alternatives in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0


def test_chat_logprobs_are_sorted_alternatives(client):
    completion = client.chat.completions.create(model="any", messages=CAPITAL, max_tokens=3, logprobs=True,
                                                top_logprobs=2)
    for token in completion.choices[0].logprobs.content:
        assert len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
        assert bytes(token.bytes).decode() == token.token


def test_streaming_matches_the_non_streamed_answer(client):
    expected = client.chat.completions.create(model="any", messages=CAPITAL, max_tokens=8).choices[0].message.content
    chunks = list(client.chat.completions.create(model="any", messages=CAPITAL, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert len(finishing) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_json_schema_output_is_valid(client):
    completion = client.chat.completions.create(
        model="any", max_tokens=48, messages=[{"role": "user", "content": "Describe a person as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}})
    document = json.loads(completion.choices[0].message.content)
    jsonschema.validate(document, PERSON_SCHEMA)


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400), (b'{"messages": "hi"}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "8"}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000000}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "surprise": 1}', 400),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400),
    (b'{"messages": [{"role": "user", "content": "caf\xc3("}]}', 400),
    (b'{"messages": [{"role": "user", "content": "' + b"x" * 300_000 + b'"}]}', 413),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(raw, body, status):
    response = raw.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    healthy = raw.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 1})
    assert healthy.status_code == 200


def test_guard_refuses_an_undeclared_oversized_body_and_counts_its_errors(raw):
    """A chunked body (no content-length) is cut off at the limit; every refusal shows in edge_errors_total."""
    def errors_413() -> float:
        lines = raw.get("/metrics").text.splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.startswith('edge_errors_total{status="413"}'))

    before = errors_413()
    chunks = iter([b'{"prompt": "', *([b"x" * 65_536] * 8), b'", "max_tokens": 1}'])
    response = raw.post("/v1/completions", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert errors_413() == before + 1
    bad_utf8 = raw.post("/v1/completions", content=b'{"prompt": "caf\xc3(", "max_tokens": 1}')
    assert bad_utf8.status_code == 400 and "UTF-8" in bad_utf8.json()["error"]["message"]
    assert raw.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 1}).status_code == 200


def test_unknown_route_header_is_refused(raw):
    response = raw.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, headers={"X-Edge-Route": "moon"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "X-Edge-Route"


def test_models_health_and_metrics(raw, client):
    assert raw.get("/health").json()["status"] == "ok"
    assert [model.id for model in client.models.list()] == ["edge-runtime-local"]
    for _ in range(2):
        client.completions.create(model="any", prompt="Tell me about the weather in Lisbon", max_tokens=1)
    text = raw.get("/metrics").text
    assert 'edge_requests_total{endpoint="/v1/completions"' in text
    assert "edge_request_latency_seconds_bucket" in text and "edge_queue_depth" in text
    hit_ratio = float(next(line.split()[-1] for line in text.splitlines()
                           if line.startswith("edge_prefix_cache_hit_ratio")))
    assert 0.0 < hit_ratio <= 1.0, "a repeated prompt must reuse its cached prefix"
    assert "edge_prefix_cache_bytes" in text


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_prefixes_beyond_the_slots_come_back_from_the_store(raw, client):
    """Five long prompts over four slots, twice: the second round restores saved states, same greedy text."""
    prompts = [" ".join(f"{noun} {index}: keep answers short." for index in range(20)) + "\nQ: Which rule?\nA:"
               for noun in ("Alpha", "Bravo", "Charlie", "Delta", "Echo")]
    before = _metric(raw.get("/metrics").text, "edge_prefix_store_restores")
    rounds = [[client.completions.create(model="any", prompt=prompt, max_tokens=4, temperature=0,
                                         logprobs=5).choices[0].logprobs for prompt in prompts] for _ in range(2)]
    text = raw.get("/metrics").text
    for first, second in zip(*rounds):
        assert_same_greedy_path(first.tokens, second.tokens, first.top_logprobs)
    assert _metric(text, "edge_prefix_store_restores") > before
    assert _metric(text, "edge_prefix_store_entries") >= 1 and _metric(text, "edge_prefix_store_bytes") > 0
    assert _metric(text, "edge_prefix_cache_bytes") >= _metric(text, "edge_prefix_store_bytes")


def test_api_key_is_required_when_configured(batched_runtime):
    server, app = make_server(batched_runtime, api_key="s3cret")
    with running(app) as url:
        wrong = openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.completions.create(model="any", prompt="Hi", max_tokens=1)
        right = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert right.completions.create(model="any", prompt="Hi", max_tokens=1).choices
        assert httpx.get(url + "/health").status_code == 200


def test_full_queue_without_cloud_answers_429_with_retry_after(batched_runtime):
    server, app = make_server(batched_runtime, max_in_flight=1)
    with running(app) as url:
        slow = threading.Thread(target=lambda: httpx.post(url + "/v1/completions", timeout=120,
                                                          json={"prompt": "Once upon a time", "max_tokens": 60}))
        slow.start()
        while server.admission.in_flight == 0:
            time.sleep(0.01)
        refused = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, timeout=30)
        slow.join()
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_client_disconnect_cancels_generation(local_server):
    server, url = local_server
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", url + "/v1/completions",
                         json={"prompt": "Once upon a time", "max_tokens": 1000, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    break
    backend = server.runtime.backend
    deadline = time.monotonic() + 20
    while (server.admission.in_flight or backend.queue_depth != (0, 0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.admission.in_flight == 0
    assert server.runtime.backend.queue_depth == (0, 0)


def test_forced_cloud_route_goes_to_the_cloud_and_is_recorded(cloud_server, cloud):
    server, url = cloud_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    before = len(cloud.received)
    raw_response = client.chat.completions.with_raw_response.create(
        model="any", max_tokens=8, extra_headers={"X-Edge-Route": "cloud"},
        messages=[{"role": "user", "content": "Mail me at jane.doe@example.com please"}])
    completion = raw_response.parse()
    assert raw_response.headers["x-edge-route-taken"] == "cloud"
    assert completion.choices[0].message.content == "Cloud says Paris."
    sent = json.dumps(cloud.received[before:])
    assert "jane.doe@example.com" not in sent and "EMAIL" in sent
    ledger_id = completion.model_extra["edge"]["ledger_id"]
    assert server.cascade.ledger.get(ledger_id).route == "cloud"


def test_low_confidence_escalates_and_failing_cloud_degrades(cloud_server, cloud):
    server, url = cloud_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    prompt = [{"role": "user", "content": "xq zv wlp"}]
    server.cascade.policy = type(server.cascade.policy)(threshold=1.0)
    try:
        escalated = client.chat.completions.create(model="any", messages=prompt, max_tokens=4)
        assert escalated.model_extra["edge"] == {**escalated.model_extra["edge"], "route": "cloud",
                                                 "reason": "low_confidence"}
        cloud.enqueue_faults(["500", "500", "500"])
        degraded = client.chat.completions.with_raw_response.create(model="any", messages=prompt, max_tokens=4)
        assert degraded.headers["x-edge-route-taken"] == "local-degraded"
        assert degraded.parse().model_extra["edge"]["degraded_reason"]
    finally:
        server.cascade.policy = type(server.cascade.policy)(threshold=0.5)
        cloud.enqueue_faults([])


def test_streaming_escalates_early_when_confidence_is_low(batched_runtime, cloud):
    server, app = make_server(batched_runtime, cloud=cloud, threshold=0.0, early_floor=0.999)
    with running(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        response = client.chat.completions.with_raw_response.create(
            model="any", messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=40, stream=True)
        assert response.headers["x-edge-route-taken"] == "cloud"
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text == "Cloud says Paris."
