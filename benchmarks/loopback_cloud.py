"""An OpenAI-compatible cloud on 127.0.0.1, with fault injection, for tests, evaluations and demos.

Standard library only (``http.server.ThreadingHTTPServer`` on a background thread). It serves
``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain JSON, or SSE ``data: {...}`` chunks then
``data: [DONE]`` when ``"stream": true``) and ``GET /v1/models``.

Faults, queued per call with ``enqueue_faults([...])`` (one is used per completion request) or set for
every call with ``default_fault``::

    latency:<s>          wait <s> seconds, then answer normally
    429 | 429:<s>        429 with ``Retry-After: <s>`` (default ``retry_after_s``)
    429-date:<s>         429 with ``Retry-After`` as an HTTP date <s> seconds ahead
    429-no-retry-after   429 without the header
    500 | 502 | 503 | 503:<s>   that status (503:<s> adds Retry-After); any other 4xx/5xx code works too
    reset                send the headers and half the body, then RST the socket (SO_LINGER 0)
    malformed            200 with a body that is not valid JSON (streaming: a bad ``data:`` line)
    stall                stream two chunks (non-streaming: nothing) then hang until the client gives up
    stream-cut           stream two chunks then close without ``[DONE]`` (non-streaming: half a body)

Answers: ``answer_fn(body) -> str`` when given (the oracle mode, e.g. a gold-answer lookup), otherwise an
echo of the last user message. ``max_tokens`` truncates to that many words (``finish_reason: "length"``).
``usage`` counts whitespace-separated words of the input messages and of the answer: not a real tokenizer,
but deterministic and good enough to check cost arithmetic. Streams report usage only when asked with
``stream_options.include_usage``, as OpenAI does; ``include_usage=False`` leaves usage out everywhere.

Run ``python -m benchmarks.loopback_cloud --port 8081`` to try a client against it by hand.
"""

from __future__ import annotations

import argparse
import email.utils
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fallback.message_text import text_parts

AnswerFn = Callable[[dict[str, Any]], str]
COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")
FAULT_KINDS = ("latency", "429", "429-date", "429-no-retry-after", "500", "502", "503",
               "reset", "malformed", "stall", "stream-cut")  # plus any other 4xx/5xx status code


def _is_status(kind: str) -> bool:
    return kind.isdigit() and 400 <= int(kind) <= 599


@dataclass(frozen=True)
class Fault:
    """A parsed fault spec such as ``"latency:0.5"`` or ``"429:2"``."""

    kind: str
    seconds: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Fault:
        kind, _, argument = spec.strip().partition(":")
        if kind not in FAULT_KINDS and not _is_status(kind):
            raise ValueError(f"unknown fault {spec!r}; known: {', '.join(FAULT_KINDS)}")
        if kind == "latency" and not argument:
            raise ValueError("latency needs seconds, e.g. 'latency:0.5'")
        return cls(kind, float(argument) if argument else None)


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


def count_words(text: str) -> int:
    return len(text.split())


def message_text(content: Any) -> str:
    """Text of a chat message's content (a string or a list of ``{"type": "text"}`` parts), parts joined by
    spaces so their words count apart."""
    return " ".join(text_parts(content))


def prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return " ".join(message_text(m.get("content")) for m in body["messages"] if isinstance(m, dict))
    prompt = body.get("prompt", "")
    return " ".join(prompt) if isinstance(prompt, list) else str(prompt)


def echo_answer(body: dict[str, Any]) -> str:
    """The default answer: an echo of the last user message (or the prompt)."""
    users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    text = message_text(users[-1].get("content")) if users else prompt_text(body)
    return f"Loopback cloud answer to: {text}"


class LoopbackCloud:
    """The server; a context manager that starts on enter and shuts down cleanly on exit."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, answer_fn: AnswerFn | None = None,
                 default_fault: str | None = None, latency_s: float = 0.0, chunk_delay_s: float = 0.0,
                 retry_after_s: float = 1.0, model: str = "loopback-1", stall_limit_s: float = 30.0,
                 include_usage: bool = True) -> None:
        self.answer_fn = answer_fn or echo_answer
        self.default_fault = default_fault
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s
        self.retry_after_s = retry_after_s
        self.model = model
        self.stall_limit_s = stall_limit_s
        self.include_usage = include_usage
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._requests: list[ReceivedRequest] = []
        self._ids = itertools.count(1)
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    @property
    def default_fault(self) -> str | None:
        return self._default_fault.kind if self._default_fault else None

    @default_fault.setter
    def default_fault(self, spec: str | None) -> None:
        self._default_fault = Fault.parse(spec) if spec else None

    def enqueue_faults(self, specs: Iterable[str]) -> None:
        """Queue faults; each completion request takes the next one (``"ok"`` means no fault)."""
        parsed = [None if spec == "ok" else Fault.parse(spec) for spec in specs]
        with self._lock:
            self._faults.extend(parsed)  # type: ignore[arg-type]

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def received(self) -> list[dict[str, Any]]:
        """JSON bodies of the completion requests received so far, oldest first."""
        return [r.body for r in self.requests if r.path in COMPLETION_PATHS and r.body is not None]

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else self._default_fault

    def record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def next_id(self) -> int:
        return next(self._ids)

    def start(self) -> LoopbackCloud:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="loopback-cloud", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Wake every stalled or sleeping handler, stop serving and release the port."""
        self.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns early (True) when the server is shutting down."""
        return self.stopping.wait(seconds)

    def __enter__(self) -> LoopbackCloud:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default backlog of 5 drops bursts of connections (1 s SYN retry)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 cloud: LoopbackCloud) -> None:
        self.cloud = cloud
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end on their own
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and demos do not want a line per request

    def do_GET(self) -> None:
        self.server.cloud.record(ReceivedRequest("GET", self.path, dict(self.headers), None))
        if self.path.rstrip("/") != "/v1/models":
            return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        model = {"id": self.server.cloud.model, "object": "model", "owned_by": "loopback"}
        self._send_json(200, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        body = self._read_json()
        self.server.cloud.record(ReceivedRequest("POST", self.path, dict(self.headers), body))
        if self.path not in COMPLETION_PATHS:
            return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        if body is None:
            return self._send_json(400, {"error": {"message": "request body is not a JSON object"}})
        try:
            _Exchange(self, body).run(self.server.cloud.next_fault())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (it timed out); nothing to do

    def _read_json(self) -> dict[str, Any] | None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Exchange:
    """One completion request: builds the answer, then sends it or the injected fault."""

    def __init__(self, handler: _Handler, body: dict[str, Any]) -> None:
        self.handler = handler
        self.cloud = handler.server.cloud
        self.body = body
        self.chat = handler.path == "/v1/chat/completions"
        self.stream = bool(body.get("stream"))
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-loopback-{self.cloud.next_id()}"
        self.words, self.finish_reason = self._answer_words()

    def _answer_words(self) -> tuple[list[str], str]:
        pieces = re.findall(r"\S+\s*", self.cloud.answer_fn(self.body))
        limit = self.body.get("max_tokens") or self.body.get("max_completion_tokens")
        if isinstance(limit, int) and 0 < limit < len(pieces):
            return [p.rstrip() if i == limit - 1 else p for i, p in enumerate(pieces[:limit])], "length"
        return pieces, "stop"

    def run(self, fault: Fault | None) -> None:
        if self.cloud.latency_s and self.cloud.wait(self.cloud.latency_s):
            return
        if fault is not None and fault.kind == "latency" and self.cloud.wait(fault.seconds or 0.0):
            return
        if fault is not None and self._send_fault(fault):
            return
        self._send_stream() if self.stream else self._send_whole()

    # ------------------------------------------------------------ faults

    def _send_fault(self, fault: Fault) -> bool:
        """Send ``fault``; False when the fault only shapes a normal answer (latency, stream faults)."""
        if _is_status(fault.kind[:3]):
            self._send_status(fault)
        elif fault.kind == "reset":
            self._send_partial_then(self._reset)
        elif fault.kind == "malformed":
            self._send_malformed()
        elif fault.kind == "stream-cut" and not self.stream:
            self._send_partial_then(lambda: None)
        elif fault.kind == "stall" and not self.stream:
            self.cloud.wait(self.cloud.stall_limit_s)
            self.handler.close_connection = True
        elif fault.kind in ("stall", "stream-cut"):
            self._send_stream(interrupt=fault.kind)
        else:
            return False
        return True

    def _send_status(self, fault: Fault) -> None:
        status = int(fault.kind[:3])
        headers = {}
        if fault.kind in ("429", "503") and (fault.seconds is not None or status == 429):
            headers["Retry-After"] = f"{fault.seconds if fault.seconds is not None else self.cloud.retry_after_s:g}"
        if fault.kind == "429-date":
            headers["Retry-After"] = email.utils.formatdate(time.time() + (fault.seconds or 0), usegmt=True)
        error = {"error": {"message": f"injected fault {fault.kind}", "type": "loopback_fault", "code": status}}
        self.handler._send_json(status, error, headers)

    def _send_partial_then(self, finish: Callable[[], None]) -> None:
        data = json.dumps(self._whole_payload()).encode()
        self.handler.send_response(200)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Content-Length", str(len(data)))
        self.handler.end_headers()
        self.handler.wfile.write(data[: len(data) // 2])
        self.handler.close_connection = True
        finish()

    def _reset(self) -> None:
        connection = self.handler.connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.handler.rfile.close()  # drop makefile's reference so close() really closes (with RST)
        connection.close()

    def _send_malformed(self) -> None:
        if self.stream:
            self._start_sse()
            self._write_sse('{"choices": [{"delta": {"content": "broken')
            self._write_sse("[DONE]")
            return
        data = b'{"id": "loopback", "choices": [{"message": {"content": "trunc'
        self.handler.send_response(200)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Content-Length", str(len(data)))
        self.handler.end_headers()
        self.handler.wfile.write(data)

    # ------------------------------------------------------------ answers

    def _usage(self) -> dict[str, int]:
        prompt = count_words(prompt_text(self.body))
        completion = count_words("".join(self.words))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind,
                "created": int(time.time()), "model": self.body.get("model") or self.cloud.model}

    def _whole_payload(self) -> dict[str, Any]:
        text = "".join(self.words)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            payload = self._envelope("chat.completion")
        else:
            choice, payload = {"index": 0, "text": text}, self._envelope("text_completion")
        choice["finish_reason"] = self.finish_reason
        usage = {"usage": self._usage()} if self.cloud.include_usage else {}
        return {**payload, "choices": [choice], **usage}

    def _send_whole(self) -> None:
        self.handler._send_json(200, self._whole_payload())

    def _chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text or ""}
        choice["finish_reason"] = finish_reason
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._envelope(kind), "choices": [choice]}

    def _send_stream(self, interrupt: str | None = None) -> None:
        self._start_sse()
        if self.chat:
            self._write_sse(json.dumps(self._chunk("", role=True)))
        for index, word in enumerate(self.words):
            if interrupt and index == 2:
                return self._interrupt(interrupt)
            self._write_sse(json.dumps(self._chunk(word)))
            if self.cloud.chunk_delay_s and self.cloud.wait(self.cloud.chunk_delay_s):
                return
        if interrupt:
            return self._interrupt(interrupt)
        self._write_sse(json.dumps(self._chunk(None, self.finish_reason)))
        if self.cloud.include_usage and (self.body.get("stream_options") or {}).get("include_usage"):
            self._write_sse(json.dumps({**self._envelope("chat.completion.chunk"), "choices": [],
                                        "usage": self._usage()}))
        self._write_sse("[DONE]")

    def _interrupt(self, kind: str) -> None:
        if kind == "stall":
            self.cloud.wait(self.cloud.stall_limit_s)

    def _start_sse(self) -> None:
        self.handler.send_response(200)
        self.handler.send_header("Content-Type", "text/event-stream")
        self.handler.send_header("Cache-Control", "no-cache")
        self.handler.send_header("Connection", "close")  # the body ends when the socket closes
        self.handler.end_headers()
        self.handler.close_connection = True

    def _write_sse(self, data: str) -> None:
        self.handler.wfile.write(f"data: {data}\n\n".encode())
        self.handler.wfile.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible loopback cloud with fault injection.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--fault", default=None, help=f"default fault for every call: {', '.join(FAULT_KINDS)}")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    args = parser.parse_args(argv)
    cloud = LoopbackCloud(args.host, args.port, default_fault=args.fault, latency_s=args.latency,
                          chunk_delay_s=args.chunk_delay)
    with cloud:
        print(f"loopback cloud serving at {cloud.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while not cloud.wait(3600):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
