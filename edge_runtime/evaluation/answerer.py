"""How the local model answers task items: the evaluation's local pass (``harness.local_answers``).

Label items (with ``choices``) are answered by scoring every label with ``Runtime.score_choices``, then
contextually calibrated against a content-free version of the prompt; generation items (with ``stop``) by greedy
generation; structured items (with ``schema``) by greedy generation under the schema's grammar, then parsed and
validated. The answer (``fallback.tasks.LocalAnswer``) keeps what confidence is computed from. It lives here, not
in ``fallback``, because it drives the runtime and its grammar builder, which the fallback does not import.
"""

from __future__ import annotations

import json
import time

from fallback.confidence import contextual_calibrate, label_signals, token_margins
from fallback.probe import RECORDED_TOKENS, encode, final_state, middle_state
from fallback.structured import token_fields
from fallback.tasks import MAX_ANSWER_TOKENS, LocalAnswer, TaskItem, answer_invalidity, content_free_prompt

MAX_STRUCTURED_TOKENS = 64
TOP_ALTERNATIVES = 2  # enough for each token's margin over the runner-up
HIDDEN_TOKENS = RECORDED_TOKENS  # generated tokens whose hidden states are kept (with the prompt's)
# bump when answers or signals change, so cached answers are recomputed (7: the middle layer's states; 6:
# constrained answers close inside their budget; 5: a label's answer state; 4: hidden states read from the
# answer's tokens)
ANSWERER_VERSION = 7


def encoded_states(states: list) -> dict:
    """Recorded hidden states (the prompt's, then the generated tokens'; each the final state, or it and the
    middle layer's) as ``LocalAnswer`` keeps them."""
    if not states:
        return {}
    finals = [encode(final_state(state)) for state in states]
    middles = [middle_state(state) for state in states]
    encoded = {"hidden_prompt": finals[0], "hidden_tokens": finals[1:]}
    if all(middle is not None for middle in middles):
        encoded["hidden_middle"] = [encode(middle) for middle in middles]
    return encoded


class LocalAnswerer:
    """Answers items on a runtime, caching content-free label probabilities per prompt template."""

    def __init__(self, runtime, hidden_tokens: int | None = HIDDEN_TOKENS) -> None:
        self.runtime = runtime
        self._content_free: dict[tuple[str, tuple[str, ...]], list[float]] = {}
        self._grammars: dict[str, str] = {}
        # generated answers ask for hidden states per request (any backend that declares them, the engine's
        # child included); label scoring reads the prompt's from the in-process backend's recorder
        self.per_request = ({"record_hidden": hidden_tokens} if hidden_tokens is not None
                            and runtime.backend.capabilities.hidden_states else {})
        self.recording = callable(getattr(runtime.backend, "record_hidden", None)) and hidden_tokens is not None
        if self.recording:
            runtime.backend.record_hidden(hidden_tokens)

    @staticmethod
    def _hidden_of(tokens) -> dict:
        """The hidden states a generated answer's tokens carry (the state each was chosen from), encoded for
        ``LocalAnswer``: exactly what the server's cascade reads from the same tokens."""
        return encoded_states([token.hidden for token in tokens if token.hidden is not None])

    def _hidden(self) -> dict:
        """The hidden states the backend recorded for the last request, encoded for ``LocalAnswer``."""
        recorder = self.runtime.backend.hidden if self.recording else None
        if recorder is None or recorder.prompt is None:
            return {}
        return encoded_states([recorder.prompt, *recorder.generated])

    def answer(self, item: TaskItem) -> LocalAnswer:
        return self._label(item) if item.is_label_task else self._generate(item)

    def _bias(self, item: TaskItem) -> list[float]:
        key = (content_free_prompt(item.prompt), tuple(item.choices))
        if key not in self._content_free:
            self._content_free[key] = self.runtime.score_choices(key[0], item.choices).probabilities
        return self._content_free[key]

    def _label(self, item: TaskItem) -> LocalAnswer:
        started = time.perf_counter()
        scores = self.runtime.score_choices(item.prompt, item.choices)
        hidden = self._hidden()  # before the content-free prompt's scoring records its own
        calibrated = contextual_calibrate(scores.probabilities, self._bias(item))
        best = max(range(len(calibrated)), key=calibrated.__getitem__)
        if hidden:  # the state once the prompt and the chosen label are read (the "answer" probe's input)
            said = self.runtime.backend.tokenize(item.prompt + " " + item.choices[best])
            state = self.runtime.backend.hidden_after(said)
            hidden["hidden_answer"] = encode(final_state(state))
            if middle_state(state) is not None:
                hidden["hidden_answer_middle"] = encode(middle_state(state))
        raw = label_signals(scores.probabilities)
        signals = {**label_signals(calibrated), **{f"raw_{name}": value for name, value in raw.items()}}
        signals.update({f"label_{index}": float(index == best) for index in range(len(item.choices))})
        return LocalAnswer(item.choices[best], signals, self.runtime.count_tokens(item.prompt),
                           scores.token_counts[best], time.perf_counter() - started, calibrated, **hidden)

    def _grammar(self, item: TaskItem) -> str | None:
        if not item.is_structured:
            return None
        from edge_runtime.grammar import grammar_for_response_format

        key = json.dumps(item.json_schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = grammar_for_response_format(item.response_format, leading_space=True)
        return self._grammars[key]

    def _generate(self, item: TaskItem) -> LocalAnswer:
        grammar = self._grammar(item)
        started = time.perf_counter()
        stream = self.runtime.stream(item.prompt, max_tokens=MAX_STRUCTURED_TOKENS if grammar else MAX_ANSWER_TOKENS,
                                     stop=item.stop, top_logprobs=TOP_ALTERNATIVES, **self.per_request,
                                     **({"grammar": grammar} if grammar else {}))
        times = [time.perf_counter() - started for event in stream if event.token is not None]
        latency_s, result = time.perf_counter() - started, stream.result
        tokens = result.tokens
        times += [latency_s] * (len(tokens) - len(times))  # a token held back by a stop scan: known at the end
        pieces = [token.text for token in tokens]
        fields = token_fields(pieces) if grammar else ["" for _ in tokens]
        answer = LocalAnswer(
            result.text.strip(), {}, result.usage.prompt_tokens, result.usage.completion_tokens, latency_s,
            logprobs=[token.logprob for token in tokens], fields=fields, token_times_s=times[:len(tokens)],
            margins=token_margins([t.logprob for t in tokens], [[(a.token_id, a.logprob) for a in t.top]
                                                                for t in tokens], [t.token_id for t in tokens]),
            invalid=answer_invalidity(item, result.text), keys=item.keys, **self._hidden_of(tokens))
        answer.signals = answer.signals_after()
        return answer
