"""The public runtime: load a model under caps, then generate, stream and score label choices.

The backend turns token ids into token steps; this layer holds the policy around it: the fit plan before
loading, the input-token cap (reject or keep the end), the output cap, stop sequences, the time-to-first-token
and total deadlines (checked every token), timings and per-token log-probabilities in the result.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from edge_runtime import requests as checks
from edge_runtime.backends import Backend, SamplingParams, load_backend
from edge_runtime.caps import Caps, LoadSettings
from edge_runtime.chat import render_chat
from edge_runtime.deadlines import Deadlines
from edge_runtime.errors import InvalidRequestError, PromptTooLongError, UnsupportedCapabilityError
from edge_runtime.models import ResolvedModel, resolve_model
from edge_runtime.prefix import common_prefix_length
from edge_runtime.results import (ChoiceScores, GenerationResult, StreamEvent, Timings, TokenLogprob, TopLogprob,
                                  Usage)
from edge_runtime.stopping import StopScanner


Isolation = Literal["none", "process", "process-background"]
ISOLATIONS = ("none", "process", "process-background")


def open_backend(resolved: ResolvedModel, settings: LoadSettings, isolation: Isolation) -> tuple[Backend, list[str]]:
    """The backend for a resolved model, in this process or a supervised child ("process-background" returns
    at once and starts the child in the background: the server's cold start), and the load's notes."""
    if isolation not in ISOLATIONS:
        raise InvalidRequestError(f"isolation must be one of {', '.join(ISOLATIONS)}; got {isolation!r}")
    if isolation != "none":
        from edge_runtime.engine.supervisor import SupervisedBackend

        supervised = SupervisedBackend(resolved.format, resolved.path, settings)
        started = supervised.start_in_background() if isolation == "process-background" else supervised.start()
        return started, supervised.notes
    notes: list[str] = []
    if resolved.format == "gguf":
        from edge_runtime.engine.probe import safe_settings

        choice = safe_settings(resolved.path, settings)
        settings, notes = choice.settings, choice.notes
    return load_backend(resolved.format, resolved.path, settings), notes


class GenerationStream:
    """Iterate for ``StreamEvent``s; ``result`` holds the ``GenerationResult`` once the stream has ended."""

    def __init__(self, events: Iterator[StreamEvent]) -> None:
        self._events = events
        self.result: GenerationResult | None = None
        self.notes_on_cancel: str | None = None  # why the runtime cancelled it, when it did

    def __iter__(self) -> Iterator[StreamEvent]:
        return self._events

    def close(self) -> None:
        self._events.close()


class Runtime:
    """A loaded model with its caps. Thread-safe: requests on one runtime run one at a time, or together when
    ``settings.n_parallel`` > 1 gives a batching backend."""

    def __init__(self, backend: Backend, model: ResolvedModel, caps: Caps, load_s: float,
                 notes: list[str] | None = None) -> None:
        self.backend, self.model, self.caps, self.load_s = backend, model, caps, load_s
        self.notes = notes if notes is not None else []  # how loading adapted to this machine (shared, live)
        self._lock = threading.Lock()
        self._holder: tuple[int, GenerationStream | None] | None = None

    @classmethod
    def load(cls, model: str | Path | None = None, *, caps: Caps | None = None,
             settings: LoadSettings | None = None, isolation: Isolation = "none",
             backend: str | None = None) -> "Runtime":
        """Loads ``model`` (a path, a manifest, or None for the bundled default) after checking its fit plan.

        ``isolation="process"`` runs the backend in a supervised child process: a native crash there raises
        ``EngineCrashedError`` in the requests it was serving (never killing this process) and the child is
        restarted. ``"none"`` (the default) runs it in this process; a GGUF model's first load on a machine is
        still probed in a child (see ``edge_runtime.engine.probe``). ``backend`` ("gguf", "onnx", "coreml")
        makes a manifest choose among builds of that format only."""
        caps, settings = caps or Caps(), settings or LoadSettings()
        started = time.perf_counter()
        resolved = resolve_model(model, caps=caps, n_ctx=settings.n_ctx, formats=[backend] if backend else None)
        plan = resolved.require_fit(caps, settings)
        if resolved.format == "gguf" and plan.prefix_cache_bytes < settings.prefix_cache_bytes:
            settings = settings.model_copy(update={"prefix_cache_bytes": plan.prefix_cache_bytes})
        backend, notes = open_backend(resolved, settings, isolation)
        return cls(backend, resolved, caps, time.perf_counter() - started, notes)

    @property
    def ready(self) -> bool:
        """False while an isolated engine is starting or restarting (requests then wait for it)."""
        return self.backend.ready

    # -- prompts -------------------------------------------------------------------------------------------
    def chat_prompt(self, messages: object) -> str:
        """The prompt text for chat ``messages`` (the model's template, or the plain documented one)."""
        return render_chat(messages, self.backend.chat_template(), *self.backend.special_tokens())

    def _prompt_ids(self, prompt: object, messages: object) -> tuple[list[int], int]:
        """Token ids under the input cap, and how many were dropped by the ``truncate`` policy."""
        if (prompt is None) == (messages is None):
            raise InvalidRequestError("give exactly one of prompt or messages")
        text = self.chat_prompt(messages) if messages is not None else checks.prompt_text(prompt)
        ids = self.backend.tokenize(text)
        cap = min(self.caps.max_input_tokens or self.backend.n_ctx - 1, self.backend.n_ctx - 1)
        if len(ids) <= cap:
            return ids, 0
        if self.caps.input_policy == "reject":
            raise PromptTooLongError(len(ids), cap)
        return ids[:1] + ids[len(ids) - cap + 1:], len(ids) - cap

    def count_tokens(self, text: str) -> int:
        return len(self.backend.tokenize(checks.prompt_text(text)))

    # -- generation ----------------------------------------------------------------------------------------
    def stream(self, prompt: object = None, *, messages: object = None, max_tokens: int = 256,
               temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
               stop: object = None, top_logprobs: int = 0, ttft_deadline_s: float | None = None,
               total_deadline_s: float | None = None, grammar: str | None = None,
               record_hidden: int | None = None) -> GenerationStream:
        """Starts a generation; arguments are checked now, tokens flow as the stream is iterated. A request
        the backend cannot serve as asked (a grammar on ONNX) raises ``UnsupportedCapabilityError``.
        ``record_hidden``: the final hidden state each of the first ``record_hidden + 1`` tokens was chosen
        from rides on its ``TokenLogprob.hidden`` (a numpy vector; llama.cpp backends)."""
        checks.sampling_values(temperature, top_p, top_k, top_logprobs)
        requested = checks.max_tokens_value(max_tokens, self.backend.n_ctx)
        stops = checks.stop_sequences(stop)
        sampling = SamplingParams(float(temperature), float(top_p), top_k, seed, top_logprobs,
                                  min(requested, self.caps.max_output_tokens), grammar,
                                  checks.record_hidden_value(record_hidden))
        self._require_capabilities(sampling)
        prompt_ids, dropped = self._prompt_ids(prompt, messages)
        notes = [f"prompt truncated: kept the last {len(prompt_ids):,} tokens, dropped {dropped:,}"] if dropped else []
        if requested > self.caps.max_output_tokens:
            notes.append(f"max_tokens {requested:,} lowered to the output cap {self.caps.max_output_tokens:,}")
        deadlines = Deadlines.start(ttft_deadline_s or self.caps.ttft_deadline_s,
                                    total_deadline_s or self.caps.total_deadline_s)
        stream = GenerationStream(iter(()))
        stream._events = self._run(stream, prompt_ids, sampling, stops, deadlines, dropped, notes)
        return stream

    def _require_capabilities(self, sampling: SamplingParams) -> None:
        missing = self.backend.capabilities.missing_for(sampling)
        if missing is not None:
            raise UnsupportedCapabilityError(self.backend.format, *missing)

    def generate(self, prompt: object = None, **options) -> GenerationResult:
        """Runs a generation to the end and returns text, finish reason, per-token log-probabilities and timings."""
        stream = self.stream(prompt, **options)
        for _ in stream:
            pass
        return stream.result

    def _run(self, stream: GenerationStream, prompt_ids: list[int], sampling: SamplingParams,
             stops: tuple[str, ...], deadlines: Deadlines, dropped: int, notes: list[str]) -> Iterator[StreamEvent]:
        with self._exclusive(stream):
            record = _Recorder(self, prompt_ids, deadlines, dropped, [*self.notes, *notes])
            steps = self.backend.generate_tokens(prompt_ids, sampling, deadlines)
            try:
                yield from record.events(steps, StopScanner(stops))
            except GeneratorExit:
                record.finish_reason = "cancelled"
                if stream.notes_on_cancel:
                    record.notes.append(stream.notes_on_cancel)
                raise
            finally:
                steps.close()
                stream.result = record.result()

    @contextlib.contextmanager
    def _exclusive(self, stream: GenerationStream | None = None):
        """Holds the runtime for one generation or scoring (not needed by a batching backend).

        A stream holds the runtime while it is iterated. If this thread left an earlier stream suspended
        half-way and starts another request, the earlier stream is cancelled (it would otherwise hold the lock
        forever and deadlock its own thread); requests from other threads wait their turn.
        """
        if self.backend.capabilities.concurrent:
            yield
            return
        self._preempt_own_suspended_stream()
        with self._lock:
            self._holder = (threading.get_ident(), stream)
            try:
                yield
            finally:
                self._holder = None

    def _preempt_own_suspended_stream(self) -> None:
        holder = self._holder
        if holder is None or holder[0] != threading.get_ident() or holder[1] is None:
            return
        events = holder[1]._events
        if not events.gi_running:
            holder[1].notes_on_cancel = "cancelled: a newer request on this runtime started in the same thread"
            events.close()

    # -- prefix cache --------------------------------------------------------------------------------------
    def cache_prefix(self, prompt: object = None, *, messages: object = None) -> int:
        """Prefills a prefix later prompts will start with (a system prompt, a few-shot block) and keeps its KV
        state in the prefix store; returns how many tokens are kept (0 where the backend has no prefix store: it
        is an optimisation, so its absence is not an error).

        Prompts that share only part of it still reuse that part. Kept states leave the store least recently
        used first, within ``LoadSettings.prefix_cache_bytes``."""
        prompt_ids, _ = self._prompt_ids(prompt, messages)
        if not self.backend.capabilities.prefix_store:
            return 0
        with self._exclusive():
            return self.backend.cache_prefix(prompt_ids)

    # -- label scoring -------------------------------------------------------------------------------------
    def score_choices(self, prompt: str, choices: Sequence[str], *, separator: str = " ") -> ChoiceScores:
        """A normalised probability over whole label strings (every token of a label counts).

        Each label is scored as the text ``prompt + separator + label``; tokens shared by every candidate
        after the prompt (a merged boundary) are part of the common prefix.
        """
        if not choices or not all(isinstance(choice, str) and choice for choice in choices):
            raise InvalidRequestError("choices must be a non-empty list of non-empty strings")
        text = checks.prompt_text(prompt)
        with self._exclusive():
            full = [self.backend.tokenize(text + separator + choice) for choice in choices]
            shared = min(common_prefix_length(full[0], ids) for ids in full)
            shared = min(shared, min(len(ids) for ids in full) - 1)
            if shared < 1:
                raise InvalidRequestError("choices must differ from the prompt by at least one token")
            logprobs = self.backend.score_continuations(full[0][:shared], [ids[shared:] for ids in full])
        totals = [sum(values) for values in logprobs]
        peak = max(totals)
        weights = [math.exp(total - peak) for total in totals]
        return ChoiceScores(list(choices), [weight / sum(weights) for weight in weights], totals,
                            [len(values) for values in logprobs])

    def close(self) -> None:
        """Waits for the request holding the runtime, then frees the backend (without asking an engine that
        never started for its capabilities)."""
        self._preempt_own_suspended_stream()
        with self._lock:
            self.backend.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Recorder:
    """Collects tokens and times of one generation and builds its ``GenerationResult``."""

    def __init__(self, runtime: Runtime, prompt_ids: list[int], deadlines: Deadlines, dropped: int,
                 notes: list[str]) -> None:
        self.runtime, self.prompt_ids, self.deadlines = runtime, prompt_ids, deadlines
        self.dropped, self.notes = dropped, notes
        self.tokens: list[TokenLogprob] = []
        self.texts: list[str] = []
        self.first_token_at: float | None = None
        self.finish_reason = "deadline"

    def token(self, step) -> TokenLogprob:
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
            self.deadlines.saw_first_token()
        piece = self.runtime.backend.token_piece
        token = TokenLogprob(step.token_id, step.piece.decode("utf-8", "replace"), step.logprob,
                             tuple(TopLogprob(tid, piece(tid).decode("utf-8", "replace"), lp) for tid, lp in step.top),
                             step.hidden)
        if not step.is_end_of_generation:
            self.tokens.append(token)
        return token

    def timings(self) -> Timings:
        ended, started = time.perf_counter(), self.deadlines.started_at
        ttft = None if self.first_token_at is None else self.first_token_at - started
        decode_s = ended - self.first_token_at if self.first_token_at is not None else 0.0
        decoded = max(len(self.tokens) - 1, 0)
        return Timings(load_s=self.runtime.load_s, time_to_first_token_s=ttft, prefill_s=ttft or 0.0,
                       decode_s=decode_s, total_s=ended - started,
                       prefill_tokens_per_s=len(self.prompt_ids) / ttft if ttft else 0.0,
                       decode_tokens_per_s=decoded / decode_s if decoded and decode_s > 0 else 0.0)

    def events(self, steps: Iterator, scanner: StopScanner) -> Iterator[StreamEvent]:
        """Stream events for the backend's steps; sets ``finish_reason`` on the way out."""
        for step in steps:
            token = self.token(step)
            if step.is_end_of_generation:
                self.finish_reason = "stop"
                break
            # every token gets its event, with "" while its text is held back (part of a possible stop string, half
            # of a UTF-8 character): a caller judging tokens as they come (the cascade) sees all of them in order
            yield self.release(scanner.feed(step.piece), token)
            if scanner.stopped:
                self.finish_reason = "stop"
                break
            if self.deadlines.expired():
                self.finish_reason = "deadline"
                break
        else:
            self.finish_reason = "deadline" if self.deadlines.expired() else "length"
        tail = scanner.flush()
        if tail:
            yield self.release(tail, None)

    def release(self, text: str, token: TokenLogprob | None) -> StreamEvent:
        self.texts.append(text)
        return StreamEvent(text, token)

    def result(self) -> GenerationResult:
        return GenerationResult("".join(self.texts), self.finish_reason, self.tokens,
                                Usage(len(self.prompt_ids), len(self.tokens)), self.timings(), self.dropped,
                                self.notes)
