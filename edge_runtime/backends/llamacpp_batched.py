"""Continuous batching: several requests decode together in one llama.cpp context, one sequence id each.

Decoding one token reads every weight once; decoding eight sequences in the same ``llama_decode`` reads them
once too, so on a memory-bound laptop CPU aggregate throughput grows with the number of live requests. A
scheduler thread owns the context. Each step it admits waiting requests into free slots (choosing the slot
whose KV cache already holds the longest prefix of the prompt), then builds one batch from one token per
decoding slot plus prompt chunks of prefilling slots (oldest request first), decodes it, and samples every
slot that produced logits. Requests receive their ``TokenStep``s through an output (a queue for
``generate_tokens``, whose iterator cancels the request when closed); an engine process that serves many
requests registers an ``on_step`` listener and sends everything one step produced in one message.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_runtime import sampling as sampler
from edge_runtime.backends.base import BackendStats, Capabilities, SamplingParams, ShouldAbort
from edge_runtime.backends.hidden_state import embedding_size, hidden_at, set_embeddings
from edge_runtime.backends.llamacpp import LlamaCppBackend, new_store, open_native, reuse_prefix
from edge_runtime.prefix import common_prefix_length
from edge_runtime.backends.llamacpp_native import NativeBatch, NativeContext, NativeModel
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, CapExceededError, InvalidRequestError
from edge_runtime.results import TokenStep

END_OF_STREAM = object()  # the last item a job's output receives when it ends without an error
_END = END_OF_STREAM
_ARRIVALS = itertools.count()


class JobOutput(Protocol):
    """Where the scheduler thread puts a job's ``TokenStep``s, then ``END_OF_STREAM`` or an exception."""

    def put(self, item: object) -> None: ...


class QueueFullError(CapExceededError):
    """Every slot is busy and the waiting line is at its limit."""


@dataclass
class _Job:
    prompt_ids: list[int]
    sampling: SamplingParams
    should_abort: ShouldAbort
    rng: np.random.Generator
    constraint: object = None
    output: JobOutput = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False
    arrival: int = field(default_factory=lambda: next(_ARRIVALS))  # prefill goes oldest first

    def end(self, item: object) -> None:
        """Hands over the job's last item and frees its grammar (on the scheduler thread, which owns it)."""
        if self.constraint is not None:
            self.constraint.close()
            self.constraint = None
        self.output.put(item)


@dataclass
class _Slot:
    """One sequence id of the shared context and the request it is serving."""

    sequence: int
    cached: list[int] = field(default_factory=list)
    job: _Job | None = None
    pending: list[int] = field(default_factory=list)
    next_token: int | None = None
    produced: int = 0

    @property
    def decoding(self) -> bool:
        return self.job is not None and not self.pending and self.next_token is not None

    @property
    def wants_hidden(self) -> bool:
        """Whether the token this slot is sampled next is chosen from a hidden state its job records (the
        prompt's last position, then the first ``record_hidden`` generated tokens')."""
        recording = self.job.sampling.record_hidden if self.job is not None else None
        return recording is not None and self.produced <= recording


class _Scheduler:
    """The thread that owns the context: admits, batches, decodes, samples and hands out tokens."""

    def __init__(self, backend: "BatchedLlamaCppBackend", max_waiting: int) -> None:
        self.backend, self.max_waiting = backend, max_waiting
        self.slots = [_Slot(sequence) for sequence in range(backend.n_parallel)]
        self.waiting: collections.deque[_Job] = collections.deque()
        self.calls: collections.deque[tuple[Callable, Future]] = collections.deque()
        self.wakeup = threading.Condition()
        self.stopped = False
        self.on_step: Callable[[], None] | None = None  # called on this thread after every step (batched sends)
        self.scratch = np.empty(backend.n_vocab, dtype=np.float32)  # one row of exp() per sampled row, reused
        self.thread = threading.Thread(target=self._loop, name="edge-runtime-batcher", daemon=True)
        self.thread.start()

    # -- called from request threads -----------------------------------------------------------------------
    def submit(self, job: _Job) -> None:
        with self.wakeup:
            if self.stopped:
                raise BackendError("the model has been closed")
            busy = sum(slot.job is not None for slot in self.slots)
            if busy >= len(self.slots) and len(self.waiting) >= self.max_waiting:
                raise QueueFullError(f"all {len(self.slots)} slots are busy and {len(self.waiting)} requests are "
                                     f"waiting (limit {self.max_waiting})")
            self.waiting.append(job)
            self.wakeup.notify()

    def call(self, function: Callable):
        """Runs ``function`` on the scheduler thread between steps and returns its result."""
        future: Future = Future()
        with self.wakeup:
            if self.stopped:
                raise BackendError("the model has been closed")
            self.calls.append((function, future))
            self.wakeup.notify()
        return future.result()

    def poke(self) -> None:
        with self.wakeup:
            self.wakeup.notify()

    def stop(self) -> None:
        with self.wakeup:
            self.stopped = True
            self.wakeup.notify()
        self.thread.join(timeout=30)

    @property
    def depth(self) -> tuple[int, int]:
        """(requests being decoded, requests waiting for a slot)."""
        return sum(slot.job is not None for slot in self.slots), len(self.waiting)

    # -- the loop --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.wakeup:
                while not self.stopped and not self.calls and not self._has_work():
                    self.wakeup.wait()
                if self.stopped:
                    break
                calls, self.calls = list(self.calls), collections.deque()
            self._run_calls(calls)
            try:
                self._retire_cancelled()
                self._admit()
                self._step()
            except Exception as exc:  # noqa: BLE001 - a request must get an error, never hang
                self._reset_after(exc)
            self._flush()
        self._fail_everything(BackendError("the model has been closed"))
        self._flush()

    def _flush(self) -> None:
        if self.on_step is not None:
            self.on_step()

    def _reset_after(self, exc: Exception) -> None:
        """Fails the requests in flight with a ``BackendError`` and forgets their KV cache; keeps serving."""
        error = exc if isinstance(exc, BackendError) else BackendError(f"batched decoding failed: {exc!r}")
        for slot in self.slots:
            if slot.job is not None:
                self.backend.context.forget_from(slot.sequence, 0)
                slot.cached.clear()
                self._finish(slot, error)

    def _has_work(self) -> bool:
        return bool(self.waiting) or any(slot.job is not None for slot in self.slots)

    @staticmethod
    def _run_calls(calls: list[tuple[Callable, Future]]) -> None:
        for function, future in calls:
            try:
                future.set_result(function())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)

    def _retire_cancelled(self) -> None:
        for slot in self.slots:
            job = slot.job
            if job is not None and (job.cancelled or job.should_abort()):
                self._finish(slot)
        with self.wakeup:
            dropped = [job for job in self.waiting if job.cancelled]
            if dropped:
                self.waiting = collections.deque(job for job in self.waiting if not job.cancelled)
        for job in dropped:
            job.end(_END)

    def _admit(self) -> None:
        while True:
            with self.wakeup:
                free = [slot for slot in self.slots if slot.job is None]
                if not free or not self.waiting:
                    return
                job = self.waiting.popleft()
            # the slot holding the longest prefix of the prompt; among equals, the one holding least
            slot = max(free, key=lambda candidate: (common_prefix_length(candidate.cached, job.prompt_ids),
                                                    -len(candidate.cached)))
            try:
                self._start(slot, job)
            except Exception as exc:  # noqa: BLE001 - the job is in no slot yet: fail it here, never hang it
                self.backend.context.forget_from(slot.sequence, 0)
                slot.cached.clear()
                job.end(exc if isinstance(exc, BackendError) else BackendError(f"admission failed: {exc!r}"))

    def _start(self, slot: _Slot, job: _Job) -> None:
        context = self.backend.context
        reusable = 0
        if self.backend.settings.prefix_cache:
            slot.cached, reusable = reuse_prefix(context, self.backend.store, slot.sequence, slot.cached,
                                                 job.prompt_ids)
        keep = min(reusable, len(job.prompt_ids) - 1)
        if keep < len(slot.cached) and not context.forget_from(slot.sequence, keep):
            context.forget_from(slot.sequence, 0)
            keep = 0
        del slot.cached[keep:]
        self.backend.scorer.prefix_stats.count(keep, len(job.prompt_ids))
        slot.job, slot.pending, slot.next_token, slot.produced = job, list(job.prompt_ids[keep:]), None, 0
        if job.sampling.record_hidden is not None:  # the prompt's last token is decoded as a recorded row
            slot.next_token = slot.pending.pop()

    def _finish(self, slot: _Slot, error: Exception | None = None) -> None:
        job, slot.job, slot.pending, slot.next_token = slot.job, None, [], None
        if job is not None:
            job.end(error if error is not None else _END)

    def _fail_everything(self, error: Exception) -> None:
        for slot in self.slots:
            self._finish(slot, error)
        with self.wakeup:
            while self.waiting:
                self.waiting.popleft().end(error)
            while self.calls:
                self.calls.popleft()[1].set_exception(error)

    # -- one decode step ---------------------------------------------------------------------------------------
    @staticmethod
    def _commit(consumed: list[tuple[_Slot, int, bool]]) -> None:
        """Records which tokens now sit in each sequence's KV cache."""
        for slot, prompt_tokens, carried_next in consumed:
            if carried_next:
                slot.cached.append(slot.next_token)
                slot.next_token = None
            else:
                slot.cached.extend(slot.pending[:prompt_tokens])
                del slot.pending[:prompt_tokens]

    def _step(self) -> None:
        plan = plan_batch(self.slots, self.backend.batch.capacity)
        for entries, sampled, consumed, hidden in split_for_hidden(*plan):
            self._decode_part(entries, sampled, consumed, hidden)

    def _decode_part(self, entries, sampled, consumed, hidden: bool) -> None:
        """Decodes one batch (with llama.cpp's embeddings output on when ``hidden``) and samples its slots."""
        context = self.backend.context
        self.backend.batch.fill_entries(entries)
        try:
            if hidden:
                set_embeddings(context, True)
            context.decode(self.backend.batch)
        except BackendError as exc:
            for slot, _, _ in consumed:
                context.forget_from(slot.sequence, 0)
                slot.cached.clear()
                self._finish(slot, exc)
            return
        finally:
            if hidden:
                set_embeddings(context, False)
        self._commit(consumed)
        for slot, batch_index in sampled:
            state = hidden_at(context, batch_index, self.backend.n_embd) if hidden and slot.wants_hidden else None
            self._sample(slot, context.logits_row(batch_index), state)

    def _sample(self, slot: _Slot, logits: np.ndarray, hidden: np.ndarray | None = None) -> None:
        job = slot.job
        token, logprob, top = sampler.step(logits, job.sampling, job.rng, job.constraint, self.scratch)
        end = self.backend.model.is_end_of_generation(token)
        job.output.put(TokenStep(token, b"" if end else self.backend.token_piece(token), logprob, top, end, hidden))
        slot.produced += 1
        full = len(slot.cached) + 1 >= self.backend.n_ctx
        if end or slot.produced >= job.sampling.max_tokens or full:
            self._finish(slot)
        else:
            slot.next_token = token


Plan = tuple[list[tuple[int, int, int, bool]], list[tuple[_Slot, int]], list[tuple[_Slot, int, bool]]]


def plan_batch(slots: Sequence[_Slot], capacity: int) -> Plan:
    """One step's batch: entries ``(token, position, sequence, wants_logits)``; the slots that get logits with
    the batch index of their row; per slot how many prompt tokens it consumes and whether it carries its next
    token.

    Fairness: every decoding slot gets its token in every step (a prefill never stalls a running request), and
    the rest of the batch goes to prefilling slots oldest request first, so a request admitted now joins the
    next step unless older prompts fill the whole batch, and a newer arrival never delays an older one."""
    entries, sampled, consumed = [], [], []
    for slot in slots:
        if slot.decoding:
            sampled.append((slot, len(entries)))
            entries.append((slot.next_token, len(slot.cached), slot.sequence, True))
            consumed.append((slot, 0, True))
    budget = capacity - len(entries)
    prefilling = sorted((slot for slot in slots if slot.job is not None and slot.pending), key=lambda s: s.job.arrival)
    for slot in prefilling:
        if budget <= 0:
            break
        chunk, start = slot.pending[:budget], len(slot.cached)
        # a recording job's last prompt token waits as its next token: it is decoded as a row of its own
        completes = len(chunk) == len(slot.pending) and slot.next_token is None
        entries.extend((token, start + index, slot.sequence, completes and index == len(chunk) - 1)
                       for index, token in enumerate(chunk))
        budget -= len(chunk)
        consumed.append((slot, len(chunk), False))
        if completes:
            sampled.append((slot, len(entries) - 1))
    return entries, sampled, consumed


Part = tuple[list[tuple[int, int, int, bool]], list[tuple[_Slot, int]], list[tuple[_Slot, int, bool]], bool]


def split_for_hidden(entries, sampled, consumed) -> list[Part]:
    """The step's batch as the decodes it needs, each with whether llama.cpp's embeddings output is on.

    With embeddings on, llama.cpp makes every row of the batch an output (a vocabulary-sized row of logits each),
    so a step whose recorded rows share the batch with prompt chunks is decoded in two: the rest with embeddings
    off, then the recorded rows (single tokens) with them on. A step of single-token rows only is one decode."""
    if not entries:
        return []
    recorded = {id(slot) for slot, _ in sampled if slot.wants_hidden}
    if not recorded:
        return [(entries, sampled, consumed, False)]
    if all(wants_logits for *_, wants_logits in entries):
        return [(entries, sampled, consumed, True)]
    own = {slot.sequence for slot in (s for s, _ in sampled) if id(slot) in recorded}
    parts = []
    for hidden in (False, True):
        rows = [index for index, entry in enumerate(entries) if (entry[2] in own) == hidden]
        where = {old: new for new, old in enumerate(rows)}
        parts.append(([entries[index] for index in rows],
                      [(slot, where[index]) for slot, index in sampled if index in where],
                      [item for item in consumed if (item[0].sequence in own) == hidden], hidden))
    return [part for part in parts if part[0]]


class BatchedLlamaCppBackend:
    """A GGUF model serving ``n_parallel`` sequences at once; thread-safe, requests run concurrently."""

    format = "gguf"
    ready = True

    def __init__(self, model: NativeModel, context: NativeContext, settings: LoadSettings,
                 max_waiting: int) -> None:
        self.model, self.context, self.settings = model, context, settings
        self.n_parallel, self.n_ctx, self.n_vocab = settings.n_parallel, settings.n_ctx, model.n_vocab
        self.batch = NativeBatch(settings.n_batch, n_seq_max=1)
        self.store = new_store(settings)  # shared by the slots and the scorer: a state restores into any sequence
        # scoring runs on the scheduler thread through a single-sequence view on the spare sequence id
        self.scorer = LlamaCppBackend(model, context, settings, sequence=settings.n_parallel, owns_native=False,
                                      store=self.store)
        self._seed = np.random.SeedSequence(settings.seed)
        self.n_embd = embedding_size(model)
        self.capabilities = Capabilities(grammar=True, prefix_store=self.scorer.capabilities.prefix_store,
                                         concurrent=True, hidden_states=True)  # the batched path never speculates
        self.scheduler = _Scheduler(self, max_waiting)

    @classmethod
    def load(cls, path: Path, settings: LoadSettings, max_waiting: int = 32) -> "BatchedLlamaCppBackend":
        # the batched path never speculates: weights are repacked for llama.cpp's batched CPU kernels
        model, context = open_native(path, settings, n_seq_max=settings.n_parallel + 1)
        return cls(model, context, settings, max_waiting)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self.scorer.tokenize(text, add_special=add_special)

    def token_piece(self, token_id: int) -> bytes:
        return self.scorer.token_piece(token_id)

    def chat_template(self) -> str | None:
        return self.scorer.chat_template()

    def special_tokens(self) -> tuple[str, str]:
        return self.scorer.special_tokens()

    @property
    def queue_depth(self) -> tuple[int, int]:
        return self.scheduler.depth

    @property
    def prefix_stats(self):
        """Prefix reuse across the slots: each slot keeps its KV cache after a request ends."""
        stats = self.scorer.prefix_stats
        stats.held_tokens = sum(len(slot.cached) for slot in self.scheduler.slots)
        return stats

    def stats(self) -> BackendStats:
        return BackendStats(queue_depth=self.queue_depth, prefix_cache=self.prefix_stats.counters())

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        return self._drain(self.submit(prompt_ids, sampling, should_abort, queue.SimpleQueue()))

    def submit(self, prompt_ids: Sequence[int], sampling: SamplingParams, should_abort: ShouldAbort,
               output: JobOutput) -> _Job:
        """Queues a generation whose items go to ``output`` (on the scheduler thread); setting the returned
        job's ``cancelled`` and calling ``poke`` stops it. Raises ``QueueFullError`` when the line is full."""
        if not prompt_ids:
            raise InvalidRequestError("cannot prefill an empty prompt")
        rng = np.random.default_rng(sampling.seed if sampling.seed is not None else self._seed.spawn(1)[0])
        job = _Job(list(prompt_ids), sampling, should_abort, rng, self.scorer.grammar_constraint(sampling), output)
        try:
            self.scheduler.submit(job)
        except BackendError:
            job.constraint and job.constraint.close()
            raise
        return job

    def on_step(self, listener: Callable[[], None] | None) -> None:
        """Calls ``listener`` on the scheduler thread after every step, once that step's items are out."""
        self.scheduler.on_step = listener

    def poke(self) -> None:
        self.scheduler.poke()

    def _drain(self, job: _Job) -> Iterator[TokenStep]:
        try:
            while True:
                item = job.output.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            job.cancelled = True  # the scheduler retires the job (and frees its grammar) at its next step
            self.scheduler.poke()

    def forget_prefixes(self) -> None:
        def forget() -> None:
            for slot in self.scheduler.slots:
                if slot.job is None:
                    self.context.forget_from(slot.sequence, 0)
                    slot.cached.clear()
            self.scorer.forget_prefixes()

        self.scheduler.call(forget)

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        return self.scheduler.call(lambda: self.scorer.cache_prefix(prefix_ids))

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        return self.scheduler.call(lambda: self.scorer.score_continuations(prefix_ids, continuations))

    def close(self) -> None:
        self.scheduler.stop()
        self.scorer.close()
        self.batch.close()
        self.context.close()
        self.model.close()
