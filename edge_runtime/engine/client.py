"""The parent's side of the engine worker: a ``Backend`` whose model runs in a child process.

Calls and generations are multiplexed over one pipe (request ids); a reader thread hands each answer to the
request waiting for it (a batching engine sends one step's answers for all its requests in one message).
When the child dies, every waiting request raises ``EngineCrashedError`` naming how it died ("killed by
SIGSEGV") and the caller's process carries on. Deadlines stay with the caller: a generation
polls ``should_abort`` while it waits and tells the child to stop.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import queue
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from edge_runtime.backends.base import BackendStats, Capabilities, SamplingParams, ShouldAbort
from edge_runtime.caps import LoadSettings
from edge_runtime.child_process import describe_exit, python_module_argv, signal_name
from edge_runtime.engine.messages import decode_error
from edge_runtime.errors import BackendError, EngineCrashedError
from edge_runtime.results import TokenStep

log = logging.getLogger("edge_runtime.engine")
WORKER_MODULE = "edge_runtime.engine.worker"
POLL_S = 0.02  # how often a generation asks ``should_abort`` while it waits for a token...
MAX_WAIT_S = 0.25  # ...unless it says when it will (``Deadlines.seconds_left``): then it sleeps until then, this
# long at most, instead of waking between tokens (a wake-up on a machine whose cores decode costs them time)
_DIED = ("died",)


class ProcessBackend:
    """A backend in a child process. ``start`` returns once the model is loaded there."""

    def __init__(self, process: subprocess.Popen, connection: Connection, info: dict,
                 on_death: Callable[["ProcessBackend"], None] | None = None) -> None:
        self.process, self.connection, self.info = process, connection, info
        self.format, self.n_ctx, self.n_vocab = info["format"], info["n_ctx"], info["n_vocab"]
        self.capabilities: Capabilities = info["capabilities"]  # the child's backend's, as it declared them
        self.pid = process.pid
        self.on_death = on_death
        self.steps_served = 0
        self.batches_received = 0  # messages that carried one engine step's answers for several requests
        self.death: str | None = None
        self.closing = False
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.SimpleQueue] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pieces: dict[int, bytes] = {}
        self._reader = threading.Thread(target=self._read, name=f"edge-engine-{process.pid}", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, model_format: str, path: Path, settings: LoadSettings, *, argv: Sequence[str] | None = None,
              on_death: Callable[["ProcessBackend"], None] | None = None) -> "ProcessBackend":
        """Starts the worker and loads the model in it; raises the load's own error, or ``EngineCrashedError``
        when the child dies while loading."""
        ours, theirs = socket.socketpair()
        command = [*(argv or python_module_argv(WORKER_MODULE)), str(theirs.fileno())]
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        connection = Connection(ours.detach())
        try:
            connection.send(("load", model_format, str(path), settings.model_dump_json()))
            answer = connection.recv()
        except (EOFError, OSError):
            connection.close()
            raise _crashed_while_loading(process, path) from None
        if answer[0] != "ready":
            connection.close()
            process.wait(timeout=30)
            raise decode_error(answer[1])
        return cls(process, connection, answer[1], on_death)

    # -- the pipe --------------------------------------------------------------------------------------------
    def _send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self.connection.send(message)
        except (OSError, ValueError):
            raise self._crash_error() from None

    def _read(self) -> None:
        while True:
            try:
                message = pickle.loads(self.connection.recv_bytes())  # Connection.recv, minus its indirection
            except (EOFError, OSError):
                break
            if message[0] == "closed":
                break
            # a batching engine sends one step's answers for every request as one ("batch", [...])
            if message[0] == "batch":
                self.batches_received += 1
            for answer in message[1] if message[0] == "batch" else (message,):
                self._hand_out(answer)
        self._mark_dead()

    def _hand_out(self, answer: tuple) -> None:
        waiting = self._waiting.get(answer[1])  # a dict read is atomic; _open/_done change it under the lock
        if waiting is not None:
            waiting.put(answer)

    def _mark_dead(self) -> None:
        try:
            returncode = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait()
        self.death = describe_exit(returncode)
        with self._lock:
            waiting = list(self._waiting.values())
        for queue_ in waiting:
            queue_.put(_DIED)
        if not self.closing:
            log.error("the engine process %d %s", self.pid, self.death)
            if self.on_death is not None:
                self.on_death(self)

    @property
    def alive(self) -> bool:
        return self.death is None and not self.closing

    @property
    def ready(self) -> bool:
        return self.alive

    @property
    def cause(self) -> str:
        """How the child died, short: "SIGSEGV", "exit 1" (None while it lives)."""
        returncode = self.process.returncode
        if returncode is None:
            return "unknown"
        return signal_name(-returncode) if returncode < 0 else f"exit {returncode}"

    def _crash_error(self) -> EngineCrashedError:
        if self.death is None and self.process.poll() is not None:
            self.death = describe_exit(self.process.returncode)
        return EngineCrashedError(f"the engine process {self.pid} {self.death or 'is gone'}", self.cause)

    def _open(self) -> tuple[int, queue.SimpleQueue]:
        request_id, answers = next(self._ids), queue.SimpleQueue()
        with self._lock:
            self._waiting[request_id] = answers
        if self.death is not None:
            answers.put(_DIED)
        return request_id, answers

    def _done(self, request_id: int) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    def call(self, method: str, *args, **kwargs):
        request_id, answers = self._open()
        try:
            self._send(("call", request_id, method, args, kwargs))
            answer = answers.get()
        finally:
            self._done(request_id)
        if answer[0] == "result":
            return answer[2]
        if answer is _DIED:
            raise self._crash_error()
        raise decode_error(answer[2])

    # -- the Backend protocol --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self.call("tokenize", text, add_special=add_special)

    def token_piece(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.call("token_piece", token_id)
        return piece

    def chat_template(self) -> str | None:
        return self.info["chat_template"]

    def special_tokens(self) -> tuple[str, str]:
        return tuple(self.info["special_tokens"])

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        request_id, answers = self._open()
        finished = False
        try:
            self._send(("generate", request_id, list(prompt_ids), sampling))
            for answer in self._answers(request_id, answers, should_abort):
                if answer[0] == "end":
                    finished = True
                    return
                step = TokenStep(*answer[2])
                if answer[3]:
                    self._pieces.update(answer[3])
                if not step.is_end_of_generation:
                    self._pieces.setdefault(step.token_id, step.piece)
                self.steps_served += 1
                yield step
        finally:
            if not finished and self.alive:
                self._send_quietly(("abort", request_id))
            self._done(request_id)

    def _answers(self, request_id: int, answers: queue.SimpleQueue, should_abort: ShouldAbort) -> Iterator[tuple]:
        """The answers to one generation, asking the child to stop once ``should_abort`` says so."""
        aborted = False
        seconds_left = getattr(should_abort, "seconds_left", None)
        while True:
            try:
                answer = answers.get(timeout=POLL_S if seconds_left is None else _wait_for(seconds_left()))
            except queue.Empty:
                if not aborted and should_abort():
                    self._send_quietly(("abort", request_id))
                    aborted = True
                continue
            if answer is _DIED:
                raise self._crash_error()
            if answer[0] == "error":
                raise decode_error(answer[2])
            yield answer
            if answer[0] == "end":
                return

    def _send_quietly(self, message: tuple) -> None:
        try:
            self._send(message)
        except BackendError:
            pass

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        return self.call("score_continuations", list(prefix_ids), [list(c) for c in continuations])

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        return self.call("cache_prefix", list(prefix_ids)) if self.capabilities.prefix_store else 0

    def forget_prefixes(self) -> None:
        self.call("forget_prefixes")

    def stats(self) -> BackendStats:
        """The child's counters (queue depth, prefix cache) and pid; no counters once it is gone."""
        try:
            return self.call("stats") if self.alive else BackendStats(engine_pid=self.pid, engine_state="stopped")
        except BackendError:
            return BackendStats(engine_pid=self.pid, engine_state="stopped")

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.death is None:
            self._send_quietly(("close",))
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._reader.join(timeout=10)
        self.connection.close()


def _wait_for(seconds_left: float | None) -> float:
    return MAX_WAIT_S if seconds_left is None else min(MAX_WAIT_S, max(POLL_S, seconds_left))


def _crashed_while_loading(process: subprocess.Popen, path: Path) -> EngineCrashedError:
    try:
        returncode = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        returncode = process.wait()
    cause = signal_name(-returncode) if returncode < 0 else f"exit {returncode}"
    return EngineCrashedError(f"the engine process {process.pid} {describe_exit(returncode)} while loading "
                              f"{path.name}", cause)
