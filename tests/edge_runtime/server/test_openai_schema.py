"""Every kind of body the real server emits, checked against the official OpenAI schemas (``openai_spec``).

Real servers on loopback over the bundled model: answers local and from the loopback cloud, whole and
streamed (every chunk, the usage chunk, in-band errors), with and without logprobs; errors of each status
the server sends; the model list. Bodies are parsed as strict JSON (no ``NaN``/``Infinity``) and every
schema violation of every body is reported at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.edge_runtime.server import openai_spec as spec
from tests.edge_runtime.server.conftest import make_server, running

PROMPT = "Q: What is the capital of France?\nA:"
CHAT = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 5}
COMPLETION = {"prompt": PROMPT, "max_tokens": 5}
CHAT_PATH, COMPLETION_PATH = "/v1/chat/completions", "/v1/completions"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> dict[str, Any]:
    return json.loads(text, parse_constant=_refuse_constant)


def violations(schema: spec.Schema, body: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
            for error in validator.iter_errors(body)]


def assert_valid(bodies: list[tuple[str, spec.Schema, dict[str, Any]]]) -> None:
    problems = {label: found for label, schema, body in bodies if (found := violations(schema, body))}
    assert not problems, json.dumps(problems, indent=1)


def sse_bodies(http: httpx.Client, path: str, body: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    with http.stream("POST", path, json={**body, "stream": True}, headers=headers) as response:
        assert response.status_code == 200, response.read()
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [strict_json(item) for item in data[:-1]]


def chunk_schema(path: str, body: dict[str, Any]) -> spec.Schema:
    if "error" in body:
        return spec.ERROR_RESPONSE
    return spec.CHAT_CHUNK if path == CHAT_PATH else spec.COMPLETION_CHUNK


def assert_stream_valid(path: str, chunks: list[dict[str, Any]], label: str) -> None:
    """Each chunk fits the schema; ``finish_reason`` is null on every choice but the last, as OpenAI streams."""
    assert_valid([(f"{label} chunk {i}", chunk_schema(path, c), c) for i, c in enumerate(chunks)])
    reasons = [choice["finish_reason"] for chunk in chunks for choice in chunk.get("choices", [])]
    if reasons:
        assert all(reason is None for reason in reasons[:-1]) and reasons[-1] is not None, (label, reasons)


@pytest.fixture()
def local(local_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_server[1], timeout=120) as http:
        yield http


@pytest.fixture()
def via_cloud(cloud_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cloud_server[1], timeout=120) as http:
        yield http


# ---------------------------------------------------------------- answers

WHOLE = [
    (CHAT_PATH, CHAT, spec.CHAT_COMPLETION),
    (CHAT_PATH, {**CHAT, "logprobs": True, "top_logprobs": 2}, spec.CHAT_COMPLETION),
    (COMPLETION_PATH, COMPLETION, spec.COMPLETION),
    (COMPLETION_PATH, {**COMPLETION, "logprobs": 2}, spec.COMPLETION),
]


@pytest.mark.parametrize("path, body, schema", WHOLE, ids=["chat", "chat-logprobs", "completion",
                                                            "completion-logprobs"])
def test_local_answers_fit_the_spec(local: httpx.Client, path: str, body: dict, schema: spec.Schema) -> None:
    response = local.post(path, json=body)
    assert response.status_code == 200 and response.headers["x-edge-route-taken"] == "local"
    answer = strict_json(response.text)
    assert_valid([(path, schema, answer)])
    assert "system_fingerprint" not in answer  # we send none (see openai_format); never null
    assert (answer["choices"][0]["logprobs"] is not None) == ("logprobs" in body)


@pytest.mark.parametrize("path, body", [(CHAT_PATH, {**CHAT, "logprobs": True, "top_logprobs": 2}),
                                        (COMPLETION_PATH, {**COMPLETION, "logprobs": 2})], ids=["chat", "completion"])
@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
def test_local_stream_chunks_fit_the_spec(local: httpx.Client, path: str, body: dict, usage: bool) -> None:
    chunks = sse_bodies(local, path, {**body, "stream_options": {"include_usage": usage}})
    assert_stream_valid(path, chunks, f"{path} usage={usage}")
    assert len(chunks) >= 3  # content chunks, then the finishing one
    if usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] >= 1


@pytest.mark.parametrize("route", ["cloud", "auto"])
@pytest.mark.parametrize("path, body, schema", [WHOLE[1], WHOLE[3]], ids=["chat", "completion"])
def test_cloud_and_auto_answers_fit_the_spec(via_cloud: httpx.Client, route: str, path: str, body: dict,
                                             schema: spec.Schema) -> None:
    response = via_cloud.post(path, json=body, headers={"X-Edge-Route": route})
    assert response.status_code == 200
    assert_valid([(f"{route} {path}", schema, strict_json(response.text))])
    chunks = sse_bodies(via_cloud, path, {**body, "stream_options": {"include_usage": True}}, **{"X-Edge-Route": route})
    assert_stream_valid(path, chunks, f"{route} {path} streamed")


# ---------------------------------------------------------------- errors and the model list

@pytest.fixture(scope="module")
def guarded_server(batched_runtime) -> Iterator[str]:
    """Needs a key, takes small bodies, and has no room at all: 401, 413 and 429 on demand."""
    _, app = make_server(batched_runtime, api_key="sk-schema-test", max_in_flight=0, max_body_bytes=2_000)
    with running(app) as url:
        yield url


ERRORS = [
    ("POST", CHAT_PATH, {"content": b"{not json"}, {}, 400),
    ("POST", CHAT_PATH, {"json": {**CHAT, "surprise": 1}}, {}, 400),
    ("POST", COMPLETION_PATH, {"json": {**COMPLETION, "max_tokens": "5"}}, {}, 400),
    ("POST", CHAT_PATH, {"json": CHAT}, {"X-Edge-Route": "sideways"}, 400),
    ("GET", "/v1/nothing-here", {}, {}, 404),
    ("GET", CHAT_PATH, {}, {}, 405),
    ("POST", CHAT_PATH, {"json": CHAT}, {"X-Edge-Route": "cloud"}, 503),  # no cloud configured
]


@pytest.mark.parametrize("method, path, payload, headers, status", ERRORS,
                         ids=["bad-json", "unknown-field", "wrong-type", "bad-route", "404", "405", "503"])
def test_error_bodies_fit_the_spec(local: httpx.Client, method: str, path: str, payload: dict, headers: dict,
                                   status: int) -> None:
    response = local.request(method, path, headers=headers, **payload)
    assert response.status_code == status
    assert_valid([(f"{status} {path}", spec.ERROR_RESPONSE, strict_json(response.text))])


@pytest.mark.parametrize("headers, content, status", [
    ({}, json.dumps(CHAT), 401),
    ({"Authorization": "Bearer sk-schema-test"}, json.dumps({**CHAT, "user": "x" * 3_000}), 413),
    ({"Authorization": "Bearer sk-schema-test"}, json.dumps(CHAT), 429),
], ids=["401", "413", "429"])
def test_guard_error_bodies_fit_the_spec(guarded_server: str, headers: dict, content: str, status: int) -> None:
    response = httpx.post(f"{guarded_server}{CHAT_PATH}", content=content,
                          headers={"Content-Type": "application/json", **headers}, timeout=30)
    assert response.status_code == status
    assert_valid([(str(status), spec.ERROR_RESPONSE, strict_json(response.text))])


def test_a_stream_that_cannot_be_answered_fits_the_spec(local: httpx.Client) -> None:
    """Forced to a cloud that is not configured: an error object, in-band or as the response itself."""
    with local.stream("POST", CHAT_PATH, json={**CHAT, "stream": True}, headers={"X-Edge-Route": "cloud"}) as response:
        text = response.read().decode()
    if response.status_code != 200:
        bodies = [strict_json(text)]
    else:
        bodies = [strict_json(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert any("error" in body for body in bodies)
    assert_valid([(f"item {i}", chunk_schema(CHAT_PATH, body), body) for i, body in enumerate(bodies)])


def test_model_list_fits_the_spec(local: httpx.Client) -> None:
    response = local.get("/v1/models")
    assert response.status_code == 200
    assert_valid([("/v1/models", spec.LIST_MODELS, strict_json(response.text))])


# ---------------------------------------------------------------- the transcription itself

def test_transcription_refuses_what_the_spec_refuses() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None}],
             "edge": {"route": "local"}}
    assert violations(spec.CHAT_CHUNK, chunk) == []
    assert violations(spec.CHAT_CHUNK, {**chunk, "system_fingerprint": None})  # string or absent, never null
    assert violations(spec.CHAT_CHUNK, {**chunk, "route": "local"})  # our additions belong in "edge"
    answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None}, "logprobs": None,
         "finish_reason": None}]}
    assert violations(spec.CHAT_COMPLETION, answer)  # a whole answer always says why it finished
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": None}
    assert violations(spec.COMPLETION_USAGE, usage)
    error = {"error": {"message": "m", "type": "t", "param": None, "code": 503}}
    assert violations(spec.ERROR_RESPONSE, error)  # codes are strings
