"""The oracle cloud's HTTP side: an OpenAI-compatible completion endpoint on 127.0.0.1 for ``edge-runtime eval``.

The evaluation sends escalated (and reference) items through the real ``CloudGateway``, so it needs a server
that speaks the OpenAI wire format. The fault-injecting loopback cloud of the tests lives in ``benchmarks``,
which the product does not import; this one is the small part the evaluation needs: non-streaming
``POST /v1/chat/completions`` and ``/v1/completions``, an ``answer_fn(body)`` (the gold-answer lookup), a fixed
latency, ``max_tokens`` cut in whitespace-separated words, and usage as word counts (deterministic, enough for
cost arithmetic). Standard library only, on a background thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AnswerFn = Callable[[dict[str, Any]], str]
PATHS = {"/v1/chat/completions": "chat.completion", "/v1/completions": "text_completion"}


def _words(value: Any) -> int:
    if isinstance(value, list):
        return sum(_words(part.get("content", part.get("text", "")) if isinstance(part, dict) else part)
                   for part in value)
    return len(str(value).split()) if value else 0


def completion(body: dict[str, Any], answer: str, kind: str) -> dict[str, Any]:
    """The OpenAI response to ``body`` whose text is ``answer`` cut to ``max_tokens`` words."""
    words, limit = answer.split(), body.get("max_tokens") or body.get("max_completion_tokens")
    cut = isinstance(limit, int) and 0 < limit < len(words)
    text = " ".join(words[:limit]) if cut else answer
    choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if kind == "chat.completion"
              else {"index": 0, "text": text})
    choice["finish_reason"] = "length" if cut else "stop"
    prompt_words = _words(body.get("messages") or body.get("prompt"))
    usage = {"prompt_tokens": prompt_words, "completion_tokens": _words(text),
             "total_tokens": prompt_words + _words(text)}
    return {"id": "oracle", "object": kind, "created": int(time.time()), "model": "oracle",
            "choices": [choice], "usage": usage}


class OracleServer:
    """A context manager: serves on enter, records every completion body, stops and frees the port on exit."""

    def __init__(self, answer_fn: AnswerFn, latency_s: float = 0.0) -> None:
        self.answer_fn, self.latency_s = answer_fn, latency_s
        self._lock = threading.Lock()
        self._received: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 128
        self._server.oracle = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="oracle-cloud", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    @property
    def received(self) -> list[dict[str, Any]]:
        """The JSON bodies of the completion requests received so far, oldest first."""
        with self._lock:
            return list(self._received)

    def answer(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        with self._lock:
            self._received.append(body)
        time.sleep(self.latency_s)
        return completion(body, self.answer_fn(body), kind)

    def __enter__(self) -> OracleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        kind = PATHS.get(self.path)
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        except ValueError:
            body = None
        if kind is None or not isinstance(body, dict):
            self._send(404 if kind is None else 400, {"error": {"message": "not a completion request"}})
            return
        self._send(200, self.server.oracle.answer(body, kind))  # type: ignore[attr-defined]

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
