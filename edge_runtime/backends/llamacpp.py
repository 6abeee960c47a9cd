"""GGUF models through llama.cpp, with a log-probability for every token at the cost of one logits row.

``llama_cpp.Llama`` needs ``logits_all=True`` to report log-probabilities, which computes and copies a
vocabulary-sized row for every position (about 7 tokens/s on the bundled model instead of 88). This backend
drives the native context directly: one output row per decode step, read in place as a numpy view, and the
KV cache of the previous request kept so a repeated prefix (a few-shot block, a system prompt) is not
prefilled again. When prompts alternate between prefixes, the sequence's state is saved to a byte-budgeted
``PrefixStore`` before it is overwritten and restored from it later (``edge_runtime.prefix``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime import sampling as sampler
from edge_runtime.backends.base import BackendStats, Capabilities, PrefixCacheCounters, SamplingParams, ShouldAbort
from edge_runtime.backends.hidden_state import (HiddenRecorder, embedding_size, last_hidden, middle_tap,
                                                request_recorder, set_embeddings)
from edge_runtime.backends.llamacpp_native import (DecodeAborted, NativeBatch, NativeContext, NativeModel,
                                                   default_threads)
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, InvalidRequestError
from edge_runtime.gguf_file import read_header
from edge_runtime.prefix import PrefixStore, common_prefix_length
from edge_runtime.results import TokenStep
from edge_runtime.speculation import DecodeCosts


@dataclass
class PrefixCacheStats:
    """How much prompt the KV cache already held: reused (live or restored) vs prefilled tokens, what the live
    KV holds now, and the prefix store's contents."""

    reused_tokens: int = 0
    prefilled_tokens: int = 0
    held_tokens: int = 0
    kv_bytes_per_token: int = 0
    store: PrefixStore | None = None

    def count(self, reused: int, prompt_length: int) -> None:
        self.reused_tokens += reused
        self.prefilled_tokens += prompt_length - reused

    @property
    def hit_ratio(self) -> float:
        total = self.reused_tokens + self.prefilled_tokens
        return self.reused_tokens / total if total else 0.0

    @property
    def bytes_held(self) -> int:
        """KV bytes kept for reuse: the live sequences' tokens plus the saved prefixes."""
        return self.held_tokens * self.kv_bytes_per_token + self.store_bytes

    @property
    def store_bytes(self) -> int:
        return self.store.bytes_held if self.store is not None else 0

    @property
    def store_entries(self) -> int:
        return len(self.store) if self.store is not None else 0

    @property
    def store_restores(self) -> int:
        return self.store.stats.restores if self.store is not None else 0

    def counters(self) -> PrefixCacheCounters:
        return PrefixCacheCounters(self.hit_ratio, self.bytes_held, self.store_bytes, self.store_entries,
                                   self.store_restores)


class LlamaCppBackend:
    """One GGUF model and one sequence of a llama.cpp context (the only one, unless ``owns_native`` is False
    and a batched backend shares its context)."""

    format = "gguf"
    ready = True

    def __init__(self, model: NativeModel, context: NativeContext, settings: LoadSettings, *, sequence: int = 0,
                 owns_native: bool = True, store: PrefixStore | None = None) -> None:
        self.model, self.context, self.settings = model, context, settings
        self.sequence, self.owns_native = sequence, owns_native
        self.n_ctx, self.n_vocab = settings.n_ctx if not owns_native else context.n_ctx, model.n_vocab
        self.chunk_tokens = settings.n_batch
        self.batch = NativeBatch(settings.n_batch)
        self.cached_tokens: list[int] = []
        self.prefix_reuse = settings.prefix_cache
        self.store = store if store is not None else new_store(settings) if owns_native else None
        self.speculative = settings.speculative
        self.decode_costs = DecodeCosts()  # this machine's decode costs, learnt by speculative decoding
        self.draft_margin = 1.05  # how much faster a verification must be expected to be than plain steps
        self.last_draft_stats = None
        self.prefix_stats = PrefixCacheStats(kv_bytes_per_token=kv_bytes_per_token(model), store=self.store)
        self._pieces: dict[int, bytes] = {}
        self._rng = np.random.default_rng(settings.seed)
        self.hidden = None  # opt-in (``record_hidden``): a HiddenRecorder of the next requests' hidden states
        self.capabilities = Capabilities(grammar=True, prefix_store=self.prefix_reuse and self.store is not None,
                                         speculation=self.speculative, hidden_states=True)

    @classmethod
    def load(cls, path: Path, settings: LoadSettings):
        """A single-sequence backend, or the batched one when ``settings.n_parallel`` > 1."""
        if settings.n_parallel > 1:
            from edge_runtime.backends.llamacpp_batched import BatchedLlamaCppBackend

            return BatchedLlamaCppBackend.load(path, settings)
        # exact speculation needs logits that do not depend on the batch: weights as stored, not repacked
        model, context = open_native(path, settings, n_seq_max=1)
        return cls(model, context, settings)

    # -- vocabulary ----------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_special)

    def token_piece(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.model.piece(token_id)
        return piece

    def chat_template(self) -> str | None:
        return self.model.chat_template()

    def special_tokens(self) -> tuple[str, str]:
        return self.model.special_text(self.model.bos_token()), self.model.special_text(self.model.eos_token())

    # -- KV cache ------------------------------------------------------------------------------------------
    def _rewind_to(self, keep: int) -> None:
        """Keeps the first ``keep`` cached positions and drops the rest (everything if llama.cpp cannot)."""
        if keep < len(self.cached_tokens) and not self.context.forget_from(self.sequence, keep):
            self.context.forget_from(self.sequence, 0)  # removing a whole sequence never fails
            keep = 0
        del self.cached_tokens[keep:]

    def _decode(self, tokens: list[int], *, all_logits: bool = False) -> None:
        if len(self.cached_tokens) + len(tokens) > self.n_ctx:
            raise InvalidRequestError(f"{len(self.cached_tokens) + len(tokens):,} tokens do not fit the "
                                      f"context of {self.n_ctx:,}")
        self.batch.fill(tokens, len(self.cached_tokens), self.sequence, all_logits=all_logits)
        try:
            self.context.decode(self.batch)
        except BackendError:
            self._rewind_to(len(self.cached_tokens))
            raise
        self.cached_tokens.extend(tokens)

    def prefill(self, prompt_ids: Sequence[int], should_abort: ShouldAbort, recorder=None) -> bool:
        """Brings the KV cache to ``prompt_ids`` with logits for the last one; False if aborted. A ``recorder``
        (``HiddenRecorder``) gets the prompt's last hidden state."""
        if not prompt_ids:
            raise InvalidRequestError("cannot prefill an empty prompt")
        reusable = self._reuse_for(prompt_ids)
        self._rewind_to(min(reusable, len(prompt_ids) - 1))
        self.prefix_stats.count(len(self.cached_tokens), len(prompt_ids))
        self.prefix_stats.held_tokens = len(prompt_ids)
        self.context.set_abort(should_abort)
        end = len(prompt_ids) - (recorder is not None)  # a recorded last token is decoded on its own
        try:
            for start in range(len(self.cached_tokens), end, self.chunk_tokens):
                if should_abort():
                    return False
                self._decode(list(prompt_ids[start:min(start + self.chunk_tokens, end)]))
        except DecodeAborted:
            return False
        finally:
            self.context.set_abort(None)
        if recorder is not None:
            recorder.reset()
            recorder.prompt = self._decode_recorded(prompt_ids[-1])
        return True

    def record_hidden(self, tokens: int | None) -> None:
        """From now on, record each request's hidden states (``edge_runtime.backends.hidden_state``): the
        prompt's last and the first ``tokens`` generated tokens'; None stops recording."""
        self.hidden = None if tokens is None else HiddenRecorder(tokens)

    def hidden_after(self, token_ids: Sequence[int]) -> np.ndarray:
        """The final hidden state after ``token_ids`` (prefilled, reusing what the KV cache holds): e.g. a
        label task's state once the prompt and its chosen label are read."""
        recorder = HiddenRecorder(0)
        self.prefill(token_ids, lambda: False, recorder)
        return recorder.prompt

    def _decode_recorded(self, token: int) -> np.ndarray:
        """Decodes one token with llama.cpp's embeddings output on; its hidden state."""
        set_embeddings(self.context, True)
        try:
            self._decode([token])
        finally:
            set_embeddings(self.context, False)
        return last_hidden(self.context, embedding_size(self.model))

    def _reuse_for(self, prompt_ids: Sequence[int]) -> int:
        """How many leading tokens of ``prompt_ids`` the sequence holds after reusing what it can: the live
        KV cache, or a saved prefix that shares more (the live state is saved first if it is worth keeping)."""
        if not self.prefix_reuse:
            return 0
        self.cached_tokens, reusable = reuse_prefix(self.context, self.store, self.sequence, self.cached_tokens,
                                                    prompt_ids)
        return reusable

    def forget_prefixes(self) -> None:
        """Empties the live KV cache and the prefix store (the next prompt is prefilled from scratch)."""
        self._rewind_to(0)
        if self.store is not None:
            self.store.clear()

    def cache_prefix(self, prefix_ids: Sequence[int]) -> int:
        """Prefills ``prefix_ids`` (reusing what is cached) and saves the state; how many tokens were saved."""
        if not self.prefix_reuse or self.store is None or not prefix_ids:
            return 0
        self.prefill(prefix_ids, lambda: False, self.hidden)
        saved = self.store.put(self.cached_tokens, self.context.save_sequence(self.sequence))
        return len(self.cached_tokens) if saved else 0

    # -- generation ----------------------------------------------------------------------------------------
    def _rng_for(self, sampling: SamplingParams) -> np.random.Generator:
        return self._rng if sampling.seed is None else np.random.default_rng(sampling.seed)

    def generate_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                        should_abort: ShouldAbort) -> Iterator[TokenStep]:
        recorder = self.hidden if self.hidden is not None else request_recorder(sampling)
        if not self.prefill(prompt_ids, should_abort, recorder):
            return
        if self.speculative and sampling.temperature == 0.0 and not sampling.grammar and recorder is None:
            yield from self._speculative_tokens(prompt_ids, sampling, should_abort)
            return
        rng = self._rng_for(sampling)
        constraint = self.grammar_constraint(sampling)
        budget = min(sampling.max_tokens, self.n_ctx - len(self.cached_tokens))
        try:
            for produced in range(budget):
                token, logprob, top = sampler.step(self.context.logits_row(-1), sampling, rng, constraint)
                end = self.model.is_end_of_generation(token)
                hidden = recorder.chosen_from(produced) if recorder is not None else None
                yield TokenStep(token, b"" if end else self.token_piece(token), logprob, top, end, hidden)
                if end or produced == budget - 1 or should_abort():
                    return
                if recorder is not None and recorder.wants(produced):
                    recorder.generated.append(self._decode_recorded(token))
                else:
                    self._decode([token])
        finally:
            if constraint is not None:
                constraint.close()

    def _step_from(self, logits: np.ndarray, token: int, sampling: SamplingParams) -> TokenStep:
        normaliser = sampler.log_sum_exp(logits)
        end = self.model.is_end_of_generation(token)
        return TokenStep(token, b"" if end else self.token_piece(token), float(logits[token]) - normaliser,
                         sampler.top_alternatives(logits, sampling.top_logprobs, normaliser), end)

    def _speculative_tokens(self, prompt_ids: Sequence[int], sampling: SamplingParams,
                            should_abort: ShouldAbort) -> Iterator[TokenStep]:
        """Greedy decoding that verifies prompt-lookup drafts in one batch when ``DraftPolicy`` expects it to
        pay (see ``edge_runtime.speculation``)."""
        from edge_runtime.speculation import DraftPolicy, PromptLookup

        lookup, policy = PromptLookup(prompt_ids), DraftPolicy(self.decode_costs, margin=self.draft_margin)
        self.last_draft_stats = policy.stats
        budget = min(sampling.max_tokens, self.n_ctx - len(self.cached_tokens))
        logits, produced = self.context.logits_row(-1), 0
        while True:
            step = self._step_from(logits, int(logits.argmax()), sampling)
            yield step
            produced += 1
            if step.is_end_of_generation or produced >= budget or should_abort():
                return
            lookup.append(step.token_id)
            policy.decoded(step.token_id)
            draft = lookup.draft(min(budget - produced - 1, self.context.n_outputs_max - 1))
            length = policy.length(len(draft))
            if not length:
                policy.shadow(draft)
                logits = self._timed_step(step.token_id)
                continue
            logits, accepted = yield from self._verify(step.token_id, draft[:length], sampling, lookup, policy)
            produced += accepted
            if produced >= budget or (accepted and self.model.is_end_of_generation(lookup.tokens[-1])):
                return

    def _timed_step(self, token: int) -> np.ndarray:
        started = time.perf_counter()
        self._decode([token])
        self.decode_costs.observe_step(time.perf_counter() - started)
        return self.context.logits_row(-1)

    def _verify(self, token: int, draft: list[int], sampling: SamplingParams, lookup, policy):
        """Decodes ``token`` and the draft together; yields the accepted draft tokens and returns the logits
        for the next position and how many were accepted. Rejected positions are dropped from the KV cache."""
        started = time.perf_counter()
        self._decode([token, *draft], all_logits=True)
        self.decode_costs.observe_verify(len(draft) + 1, time.perf_counter() - started)
        accepted, judged = 0, len(draft)
        for index, guess in enumerate(draft):
            row = self.context.logits_row(index)
            if int(row.argmax()) != guess:
                break
            yield self._step_from(row, guess, sampling)
            lookup.append(guess)
            accepted += 1
            if self.model.is_end_of_generation(guess):
                judged = accepted  # the guesses after the end were never judged
                break
        policy.verified(judged, accepted)
        logits = np.array(self.context.logits_row(accepted), copy=True)
        self._rewind_to(len(self.cached_tokens) - (len(draft) - accepted))
        return logits, accepted

    def grammar_constraint(self, sampling: SamplingParams):
        if not sampling.grammar:
            return None
        from edge_runtime.backends.llamacpp_grammar import GrammarConstraint, closing_tokens

        return GrammarConstraint(self.model.vocab, sampling.grammar, lambda: closing_tokens(self.model))

    def score_continuations(self, prefix_ids: Sequence[int],
                            continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        self.prefill(prefix_ids, lambda: False, self.hidden)
        first_row = np.array(self.context.logits_row(-1), copy=True)
        first_normaliser = sampler.log_sum_exp(first_row)
        scores = []
        for continuation in continuations:
            scores.append([float(first_row[continuation[0]]) - first_normaliser]
                          + self._score_rest(len(prefix_ids), list(continuation)))
        return scores

    def _score_rest(self, prefix_length: int, continuation: list[int]) -> list[float]:
        """Log-probabilities of continuation tokens after the first, a few rows per decode, then rewound."""
        if len(continuation) < 2:
            return []
        if len(continuation) > self.chunk_tokens:
            raise InvalidRequestError(f"a choice of {len(continuation):,} tokens is longer than the batch of "
                                      f"{self.chunk_tokens:,}")
        logprobs, inputs, rows = [], continuation[:-1], self.context.n_outputs_max
        for start in range(0, len(inputs), rows):
            chunk = inputs[start:start + rows]
            self._decode(chunk, all_logits=True)
            for index, token in enumerate(continuation[start + 1:start + 1 + len(chunk)]):
                row = self.context.logits_row(index)
                logprobs.append(float(row[token]) - sampler.log_sum_exp(row))
        self._rewind_to(prefix_length)
        return logprobs

    def stats(self) -> BackendStats:
        return BackendStats(prefix_cache=self.prefix_stats.counters())

    def close(self) -> None:
        self.batch.close()
        if self.owns_native:
            self.context.close()
            self.model.close()


def new_store(settings: LoadSettings) -> PrefixStore | None:
    return PrefixStore(settings.prefix_cache_bytes) if settings.prefix_cache and settings.prefix_cache_bytes else None


def reuse_prefix(context: NativeContext, store: PrefixStore | None, sequence: int, cached: list[int],
                 prompt_ids: Sequence[int]) -> tuple[list[int], int]:
    """(the tokens ``sequence`` holds now, how many of them start ``prompt_ids``): the live KV cache as it is,
    or a saved prefix restored over it when that shares more (the live state is saved first if worth it)."""
    live = common_prefix_length(cached, prompt_ids)
    if store is None:
        return cached, live
    saved, stored = store.best_match(prompt_ids)
    restoring = saved is not None and stored - live >= store.min_tokens  # a restore copies the whole state
    save_live(store, context, sequence, cached, 0 if restoring else live)
    if not restoring:
        return cached, live
    if not context.restore_sequence(sequence, saved.state):
        return [], 0
    store.record_restore(stored)
    return list(saved.tokens), stored


def save_live(store: PrefixStore, context: NativeContext, sequence: int, tokens: list[int], keeping: int) -> None:
    """Saves a sequence about to lose all but its first ``keeping`` tokens, if it holds at least
    ``store.min_tokens`` tokens that neither stay live nor sit in the store already."""
    if len(tokens) <= keeping or not store.budget_bytes:
        return
    _, stored = store.best_match(tokens, touch=False)
    if len(tokens) - max(keeping, stored) < store.min_tokens or context.sequence_state_size(sequence) > \
            store.budget_bytes:
        return
    try:
        store.put(tokens, context.save_sequence(sequence))
    except (BackendError, MemoryError):
        store.stats.failed_saves += 1  # keeping a prefix is an optimisation: the request goes on without it


def kv_bytes_per_token(model: NativeModel) -> int:
    """KV cache bytes one token occupies (f16 keys and values, every layer), from the model's metadata."""
    from edge_runtime.gguf_file import read_header
    from edge_runtime.plan import kv_cache_bytes

    return kv_cache_bytes(read_header(model.path), 1)


def open_native(path: Path, settings: LoadSettings, *, n_seq_max: int) -> tuple[NativeModel, NativeContext]:
    """Checks the file in Python, then loads the model and a context for ``n_seq_max`` sequences of
    ``settings.n_ctx`` tokens each, with weights repacked only where the load path wants it and the CPU allows
    it (``edge_runtime.engine.safety.use_extra_buffers``)."""
    from edge_runtime.backends import model_preload
    from edge_runtime.plan import context_shape

    read_header(path)  # llama.cpp aborts the process on some malformed files: refuse them first
    shape = context_shape(settings)  # the buffers the fit plan counted
    arguments = model_preload.model_arguments(path, settings)
    model = model_preload.take(arguments) or model_preload.open_model(arguments)
    try:
        context = NativeContext(model, n_ctx=settings.n_ctx * n_seq_max, n_batch=settings.n_batch,
                                n_threads=settings.n_threads or default_threads(), n_seq_max=n_seq_max,
                                flash_attn=settings.flash_attn, n_ubatch=shape.n_ubatch,
                                n_outputs_max=shape.n_outputs_max, kv_unified=shape.kv_unified,
                                tap=middle_tap(model) if settings.middle_layer else None)
    except BackendError:
        model.close()
        raise
    return model, context
