"""The engine's child process: one backend, served over a pipe to the process that started it.

``python -m edge_runtime.engine.worker FD`` (FD: one end of a socket pair) receives ``("load", format, path,
settings_json)``, loads the backend and answers ``("ready", info)``; then ``("generate", id, prompt_ids,
sampling)`` streams ``("step", id, (token_id, piece, logprob, top, end[, hidden]), pieces)`` and ``("end", id)``;
``("call", id, method, args, kwargs)`` answers ``("result", id, value)``; ``("abort", id)`` stops a generation;
failures answer ``("error", id, encoded)``. A backend that is not thread-safe is used by one request at a time,
each in its own thread. A batching backend (one that can ``submit``) gets no thread per request: its scheduler
thread hands every step's items to a ``StepOutbox``, which sends them as one ``("batch", [message, ...])``, so
eight decoding requests cost one pickle and one write per step, and no request thread takes the GIL from
the scheduler between decodes. The worker exits when the pipe closes: it never outlives its parent.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import threading
from multiprocessing.connection import Connection

from edge_runtime.engine.messages import encode_error

CALLS = ("tokenize", "token_piece", "score_continuations", "cache_prefix", "forget_prefixes", "stats")
LOCKED_CALLS = ("score_continuations", "cache_prefix", "forget_prefixes")


def step_payload(step) -> tuple:
    """A ``TokenStep`` as a plain tuple (cheaper to pickle than the dataclass); ``TokenStep(*payload)`` again.
    A recorded hidden state travels as its own numpy vector (2.5 kB for 640 float32s), only on the steps that
    carry one."""
    if step.hidden is None:
        return step.token_id, step.piece, step.logprob, step.top, step.is_end_of_generation
    return step.token_id, step.piece, step.logprob, step.top, step.is_end_of_generation, step.hidden


def _never() -> bool:
    return False


class _RequestOutput:
    """One request's output for a batching backend: its items become messages in the outbox."""

    def __init__(self, outbox: "StepOutbox", request_id: int) -> None:
        self.outbox, self.request_id, self.job = outbox, request_id, None

    def put(self, item: object) -> None:
        self.outbox.add(self.request_id, item)


class StepOutbox:
    """Everything one scheduler step produced, for every request, sent to the parent as one message.

    Items arrive on the scheduler thread only (``put`` of a job's output, then ``flush`` after the step)."""

    def __init__(self, worker: "Worker", end_of_stream: object) -> None:
        self.worker, self.end_of_stream = worker, end_of_stream
        self.outputs: dict[int, _RequestOutput] = {}
        self.messages: list[tuple] = []

    def open(self, request_id: int) -> _RequestOutput:
        output = self.outputs[request_id] = _RequestOutput(self, request_id)
        return output

    def add(self, request_id: int, item: object) -> None:
        if item is self.end_of_stream:
            self.outputs.pop(request_id, None)
            self.messages.append(("end", request_id))
        elif isinstance(item, BaseException):
            self.outputs.pop(request_id, None)
            self.messages.append(("error", request_id, encode_error(item)))
        else:
            self.messages.append(("step", request_id, step_payload(item), self.worker.new_pieces(item)))

    def flush(self) -> None:
        messages, self.messages = self.messages, []
        if messages:
            self.worker.send(("batch", messages))


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
        self.outbox: StepOutbox | None = None
        if hasattr(backend, "submit"):  # a batching backend: one message per scheduler step
            from edge_runtime.backends.llamacpp_batched import END_OF_STREAM

            self.outbox = StepOutbox(self, END_OF_STREAM)
            backend.on_step(self.outbox.flush)

    def send(self, message: tuple) -> None:
        payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)  # what Connection.send writes, minus its
        with self.send_lock:                                      # per-message ForkingPickler and BytesIO
            self.connection.send_bytes(payload)

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
            self.cancel_submitted(request_id)
            return
        if kind == "generate" and self.outbox is not None:
            self.submit(*message[1:])
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

    def submit(self, request_id: int, prompt_ids: list[int], sampling) -> None:
        """Queues a generation on the batching backend, on this (the pipe's) thread: no thread per request."""
        output = self.outbox.open(request_id)
        try:
            output.job = self.backend.submit(prompt_ids, sampling, _never, output)
        except Exception as exc:  # noqa: BLE001 - a full queue or a bad prompt is the caller's error
            self.outbox.outputs.pop(request_id, None)
            self.send(("error", request_id, encode_error(exc)))

    def cancel_submitted(self, request_id: int) -> None:
        output = self.outbox.outputs.get(request_id) if self.outbox is not None else None
        if output is not None and output.job is not None:
            output.job.cancelled = True
            self.backend.poke()

    def generate(self, request_id: int, prompt_ids: list[int], sampling) -> None:
        abort = self.aborts[request_id]
        try:
            with self.backend_lock:
                if not abort.is_set():
                    for step in self.backend.generate_tokens(prompt_ids, sampling, abort.is_set):
                        self.send(("step", request_id, step_payload(step), self.new_pieces(step)))
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
