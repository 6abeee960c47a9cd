"""A cloud on 127.0.0.1 that sends a valid answer one byte at a time: the "slow drip" fault.

Bytes keep arriving, so no single read ever waits long and a per-read timeout never fires; only a wall-clock
deadline over the whole answer cuts it. The headers go out at once, then the body (plain JSON, or SSE chunks
and ``[DONE]`` when the request says ``"stream": true``) drips at ``byte_delay_s`` per byte. The
``LoopbackCloud`` in ``benchmarks.loopback_cloud`` covers the other slow faults (``latency:<s>`` hangs).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class DripCloud:
    """The server; a context manager, like ``LoopbackCloud``. ``requests`` counts completion requests."""

    def __init__(self, *, byte_delay_s: float = 0.05, answer: str = "Slowly dripping cloud answer.") -> None:
        self.byte_delay_s = byte_delay_s
        self.answer = answer
        self.requests = 0
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _DripHandler)
        self._server.daemon_threads = True
        self._server.cloud = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="drip-cloud", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def body(self, stream: bool) -> tuple[str, bytes]:
        """The content type and the whole body it will drip for one request."""
        if not stream:
            message = {"role": "assistant", "content": self.answer}
            payload = {"id": "chatcmpl-drip", "object": "chat.completion", "created": 0, "model": "drip-1",
                       "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
            return "application/json", json.dumps(payload).encode()
        events = [{"id": "chatcmpl-drip", "object": "chat.completion.chunk", "created": 0, "model": "drip-1",
                   "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
                  for word in self.answer.split()]
        data = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
        return "text/event-stream", data.encode()

    def __enter__(self) -> DripCloud:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()


class _DripHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        cloud: DripCloud = self.server.cloud  # type: ignore[attr-defined]
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        cloud.requests += 1
        content_type, body = cloud.body(bool(request.get("stream")))
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for index in range(len(body)):
                self.wfile.write(body[index:index + 1])
                if cloud.stopping.wait(cloud.byte_delay_s):
                    return
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up: that is the point
