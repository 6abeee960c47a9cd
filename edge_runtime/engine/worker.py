"""The engine's child process: one backend, served over a pipe to the process that started it.

``python -m edge_runtime.engine.worker FD`` (FD: one end of a socket pair) receives ``("load", format, path,
settings_json)``, loads the backend and answers ``("ready", info)``; then each request runs in its own thread:
``("generate", id, prompt_ids, sampling)`` streams ``("step", id, step, pieces)`` and ``("end", id)``;
``("call", id, method, args, kwargs)`` answers ``("result", id, value)``; ``("abort", id)`` stops a generation;
failures answer ``("error", id, encoded)``. A backend that is not thread-safe is used by one request at a time.
The worker exits when the pipe closes: it never outlives its parent.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from multiprocessing.connection import Connection

from edge_runtime.engine.messages import encode_error

CALLS = ("tokenize", "token_piece", "score_continuations", "cache_prefix", "forget_prefixes", "stats")
LOCKED_CALLS = ("score_continuations", "cache_prefix", "forget_prefixes")


def backend_info(backend) -> dict:
    """What the parent needs without asking again: sizes, template, special tokens and the capabilities."""
    return {"format": backend.format, "n_ctx": backend.n_ctx, "n_vocab": backend.n_vocab,
            "capabilities": backend.capabilities, "chat_template": backend.chat_template(),
            "special_tokens": backend.special_tokens(), "pid": os.getpid()}


class Worker:
    """Serves one loaded backend until the pipe closes or a ``close`` arrives."""

    def __init__(self, backend, connection: Connection) -> None:
        self.backend, self.connection = backend, connection
        self.send_lock = threading.Lock()
        self.backend_lock = contextlib.nullcontext() if backend.capabilities.concurrent else threading.Lock()
        self.aborts: dict[int, threading.Event] = {}
        self.pieces_sent: set[int] = set()

    def send(self, message: tuple) -> None:
        with self.send_lock:
            self.connection.send(message)

    def serve(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                return
            if message[0] == "close":
                with self.backend_lock:
                    self.backend.close()
                self.send(("closed",))
                return
            self.dispatch(message)

    def dispatch(self, message: tuple) -> None:
        kind, request_id = message[0], message[1]
        if kind == "abort":
            self.aborts.get(request_id, threading.Event()).set()
            return
        if kind == "generate":
            self.aborts[request_id] = threading.Event()
            target = self.generate
        else:
            target = self.call
        threading.Thread(target=target, args=message[1:], daemon=True).start()

    def call(self, request_id: int, method: str, args: tuple, kwargs: dict) -> None:
        try:
            if method not in CALLS:
                raise ValueError(f"the engine has no call {method!r}")
            with self.backend_lock if method in LOCKED_CALLS else contextlib.nullcontext():
                value = getattr(self.backend, method)(*args, **kwargs)
            self.send(("result", request_id, value))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller, typed
            self.send(("error", request_id, encode_error(exc)))

    def generate(self, request_id: int, prompt_ids: list[int], sampling) -> None:
        abort = self.aborts[request_id]
        try:
            with self.backend_lock:
                if not abort.is_set():
                    for step in self.backend.generate_tokens(prompt_ids, sampling, abort.is_set):
                        self.send(("step", request_id, step, self.new_pieces(step)))
            self.send(("end", request_id))
        except Exception as exc:  # noqa: BLE001
            self.send(("error", request_id, encode_error(exc)))
        finally:
            self.aborts.pop(request_id, None)

    def new_pieces(self, step) -> dict[int, bytes] | None:
        """Pieces of the step's top alternatives the client has not been sent yet (it caches them)."""
        if not step.top:
            return None
        fresh = {token: self.backend.token_piece(token) for token, _ in step.top if token not in self.pieces_sent}
        self.pieces_sent.update(fresh)
        return fresh or None


def load(connection: Connection):
    from edge_runtime.backends import load_backend
    from edge_runtime.caps import LoadSettings

    _, model_format, path, settings_json = connection.recv()
    from pathlib import Path

    return load_backend(model_format, Path(path), LoadSettings.model_validate_json(settings_json))


def main(argv: list[str]) -> int:
    connection = Connection(int(argv[0]))
    try:
        backend = load(connection)
    except Exception as exc:  # noqa: BLE001 - a load failure is an answer, not a crash
        connection.send(("load_failed", encode_error(exc)))
        return 1
    connection.send(("ready", backend_info(backend)))
    Worker(backend, connection).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
