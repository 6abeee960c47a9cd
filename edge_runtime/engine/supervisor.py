"""Keeps an engine worker running: starts it (probe first), restarts it with backoff when it dies.

``SupervisedBackend`` is the ``Backend`` the server (and ``Runtime.load(..., isolation="process")``) uses.
Requests in flight when the worker dies raise ``EngineCrashedError`` (the cascade escalates them, reason
``local_crashed``); requests that arrive while it starts or restarts wait for it (up to ``start_wait_s``), or
are sent to the cloud by a cascade that asks ``ready`` first (reason ``local_starting``). A worker that dies
while loading, or by a native fault within its first decodes, marks its configuration bad in the verdict cache
and comes back one step down the safety ladder.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from edge_runtime.backends.base import BackendStats, Capabilities, SamplingParams, ShouldAbort
from edge_runtime.caps import LoadSettings
from edge_runtime.engine.client import ProcessBackend
from edge_runtime.errors import BackendError, EngineCrashedError, EngineStartingError
from edge_runtime.results import TokenStep

log = logging.getLogger("edge_runtime.engine")
EARLY_STEPS = 8  # a native fault within this many decoded tokens of a fresh worker blames its configuration
OUTSIDE_KILLS = {signal.SIGKILL.name, signal.SIGTERM.name, signal.SIGINT.name}


class SupervisedBackend:
    """A ``ProcessBackend`` that comes back after it dies. ``start`` (blocking) or ``start_in_background``."""

    def __init__(self, model_format: str, path: Path, settings: LoadSettings, *, start_wait_s: float = 120.0,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0, worker_argv: Sequence[str] | None = None,
                 verdicts=None) -> None:
        self.model_format, self.path, self.settings = model_format, path, settings
        self.start_wait_s, self.backoff_s, self.max_backoff_s = start_wait_s, backoff_s, max_backoff_s
        self.worker_argv, self.verdicts = worker_argv, verdicts
        self.notes: list[str] = []
        self.restarts: collections.Counter[str] = collections.Counter()
        self.state = "starting"
        self.failure: Exception | None = None
        self._engine: ProcessBackend | None = None
        self._ready = threading.Event()
        self._closed = False
        self._consecutive_failures = 0
        self._info: dict | None = None

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self) -> "SupervisedBackend":
        """Probes and starts the worker now; raises what the load raised (the caller learns of a bad model)."""
        self._bring_up(raise_errors=True)
        return self

    def start_in_background(self) -> "SupervisedBackend":
        threading.Thread(target=self._bring_up, name="edge-engine-start", daemon=True).start()
        return self

    def _bring_up(self, raise_errors: bool = False) -> None:
        while not self._closed:
            try:
                self._launch()
                return
            except EngineCrashedError as exc:
                self._after_crash(exc.cause, loading=True)
                if self._closed or self.state == "failed":
                    self._fail(exc, raise_errors)
                    return
                time.sleep(self._backoff())
            except Exception as exc:  # noqa: BLE001 - a model that cannot load is not retried
                self._fail(exc, raise_errors)
                return

    def _launch(self) -> None:
        from edge_runtime.engine.probe import safe_settings

        if self.model_format == "gguf":  # the probe and its ladder are about llama.cpp's native configurations
            choice = safe_settings(self.path, self.settings, **({"store": self.verdicts} if self.verdicts else {}))
            self.settings = choice.settings
            self._add_notes(choice.notes)
        engine = ProcessBackend.start(self.model_format, self.path, self.settings, argv=self.worker_argv,
                                      on_death=self._on_death)
        self._engine, self._info, self.state = engine, engine.info, "ready"
        self._ready.set()
        log.info("engine process %d ready (%s)", engine.pid, self.path.name)

    def _fail(self, exc: Exception, raise_errors: bool) -> None:
        self.state, self.failure = "failed", exc
        self._ready.set()  # waiters wake up and raise the failure
        if raise_errors:
            raise exc

    def _on_death(self, engine: ProcessBackend) -> None:
        if self._closed or engine is not self._engine:
            return
        self._ready.clear()
        self._engine, self.state = None, "restarting"
        self._after_crash(engine.cause, loading=False, early=engine.steps_served < EARLY_STEPS)
        if self.state == "failed":
            self._ready.set()
            return
        delay = self._backoff()
        log.warning("engine process %d %s; restarting in %.1f s", engine.pid, engine.death, delay)
        threading.Timer(delay, self._bring_up).start()

    def _after_crash(self, cause: str, *, loading: bool, early: bool = True) -> None:
        """Counts the death; a native fault while loading or early blames the configuration: step down."""
        self.restarts[cause] += 1
        self._consecutive_failures += 1
        if not (loading or early) or cause in OUTSIDE_KILLS or cause.startswith("exit") or self.model_format != "gguf":
            return
        self._step_down(cause)

    def _step_down(self, cause: str) -> None:
        from edge_runtime.engine.cpu import system_info
        from edge_runtime.engine.probe import mark_crashed
        from edge_runtime.engine.safety import next_safer

        info = system_info()
        mark_crashed(self.path, self.settings, info, f"was killed by {cause} early in the engine process",
                     store=self.verdicts)
        safer = next_safer(self.settings, info)
        if safer is None:
            self.state, self.failure = "failed", EngineCrashedError(
                f"the engine crashed ({cause}) in every native configuration", cause)
            return
        self.settings = safer[1]
        self._add_notes([f"the engine was killed by {cause} early; restarting with {safer[0]}"])

    def _backoff(self) -> float:
        return min(self.backoff_s * 2 ** max(self._consecutive_failures - 1, 0), self.max_backoff_s)

    def _add_notes(self, notes: list[str]) -> None:
        self.notes.extend(note for note in notes if note not in self.notes)

    @property
    def ready(self) -> bool:
        return self._engine is not None and self._engine.alive

    @property
    def engine_pid(self) -> int | None:
        return self._engine.pid if self._engine is not None else None

    def engine(self) -> ProcessBackend:
        """The running worker, waiting up to ``start_wait_s`` for a start or restart."""
        if not self._ready.wait(self.start_wait_s):
            raise EngineStartingError(f"the engine is {self.state} and was not ready within {self.start_wait_s:.0f} s")
        engine = self._engine
        if engine is None:
            if self.failure is not None:
                raise self.failure
            raise EngineStartingError(f"the engine is {self.state}")
        if engine.steps_served >= EARLY_STEPS:
            self._consecutive_failures = 0
        return engine

    # -- the Backend protocol ---------------------------------------------------------------------------------
    @property
    def format(self) -> str:
        return self.model_format

    @property
    def n_ctx(self) -> int:
        return self._metadata()["n_ctx"]

    @property
    def n_vocab(self) -> int:
        return self._metadata()["n_vocab"]

    @property
    def capabilities(self) -> Capabilities:
        """The child's backend's, as it declared them (waits for the first start, like the other metadata)."""
        return self._metadata()["capabilities"]

    def _metadata(self) -> dict:
        return self._info if self._info is not None else self.engine().info

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self.engine().tokenize(text, add_special=add_special)

    def token_piece(self, token_id: int) -> bytes:
        return self.engine().token_piece(token_id)

    def chat_template(self) -> str | None:
        return self._metadata()["chat_template"]

    def special_tokens(self) -> tuple[str, str]:
        return tuple(self._metadata()["special_tokens"])

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        return self.engine().generate_tokens(prompt_ids, sampling, should_abort)

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        return self.engine().score_continuations(prefix_ids, continuations)

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        return self.engine().cache_prefix(prefix_ids)

    def forget_prefixes(self) -> None:
        self.engine().forget_prefixes()

    def stats(self) -> BackendStats:
        """The running child's counters, with this supervisor's view of the engine: pid, state, restarts."""
        engine = self._engine
        counters = engine.stats() if engine is not None else BackendStats()
        return replace(counters, engine_pid=self.engine_pid, engine_state=self.state,
                       engine_restarts=dict(self.restarts))

    def close(self) -> None:
        self._closed = True
        engine, self._engine = self._engine, None
        self._ready.set()
        if engine is not None:
            engine.close()
