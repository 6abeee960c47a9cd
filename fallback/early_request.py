"""The running decision's checkpoints (``fallback.early``) applied to a live request, as ``eval`` applies them.

The calibration file ``serve --calibration`` loads carries, under ``extra["running"]``, one calibrator per
checkpoint with its own early threshold. The cascade reads two kinds here:

- the text checkpoint (-1): the query's hashed trigrams (``probe_text``) and question word, known before the
  model runs. Below its threshold the prompt is judged hopeless and goes to the cloud before any decoding.
- the prompt checkpoint (0): the probe on the prompt's last hidden state, which arrives on the first token
  (``LocalToken.hidden``: the state it was chosen from), so the decision is taken before the second.
- the token checkpoints (1, 1 + every, ...): a stream's hold judges its first tokens there, on their
  probability signals, the query's text signals and the hidden-state probes' logits.

Hidden states are recorded on request (``CascadeRequest.record_hidden``, set by the cascade when its
calibration reads them) and read as the evaluation reads them (``fallback.tasks.LocalAnswer.hidden``): the
prompt's, the mean of the states the first tokens were chosen from, and the latest of them. A label task's
"answer" state is eval's alone: a calibrator reading it falls back here. The final decision also reads the
class probe (``fallback.class_probe``) on the prompt's state and the whole answer's words. A leg that hands back
none (ONNX, a backend without them) leaves the probe signals out, and a checkpoint that needs them is skipped;
the final decision then falls back to the calibration's probabilities-only calibrator. The query text is the prompt, or
the last user message's text (``CascadeRequest.query``), read the way the evaluation reads an item's prompt
(``fallback.tasks.query_text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from fallback.calibration import Calibrator
from fallback.class_probe import SIGNAL as CLASS_SIGNAL
from fallback.early import PROMPT_CHECKPOINT, TEXT_CHECKPOINT, RunningCalibration, RunningDecision
from fallback.local_leg import LocalToken


# the signals only a recorded hidden state gives (and the class probes', ``probe_class`` or ``probe_class_<field>``)
HIDDEN_SIGNALS = {"probe_prompt", "probe_tokens", "probe_last", "probe_middle"}
# the hidden states a generated answer's tokens carry; a label task's "answer" state is eval's alone (a server
# generates, it does not score labels): a calibrator that reads it gets its probabilities-only fallback
SERVED_SOURCES = ("prompt", "tokens", "last", "middle")


@dataclass(frozen=True)
class RequestCheckpoints:
    """A task's checkpoints; ``task`` is the calibration's task ("" for any request)."""

    running: RunningCalibration
    task: str = ""

    @classmethod
    def of(cls, calibrator: Calibrator | None) -> "RequestCheckpoints | None":
        running = RunningCalibration.of(calibrator) if calibrator is not None else None
        return cls(running, calibrator.task) if running is not None and running.by_tokens else None

    def applies(self, task: str | None) -> bool:
        """A request of no named task, or of the calibration's task, is judged by it."""
        return task is None or not self.task or task == self.task

    def text_verdict(self, query: str) -> RunningDecision | None:
        """The text checkpoint's escalation of ``query`` (before the model runs), or None (keep going)."""
        calibrator = self.running.by_tokens.get(TEXT_CHECKPOINT)
        return _verdict(calibrator, TEXT_CHECKPOINT, text_signals(calibrator, query)) if calibrator else None

    def token_verdict(self, query: str, tokens: Sequence[LocalToken], response_format: dict | None = None,
                      ended: bool = False, newest: bool = False) -> RunningDecision | None:
        """The first checkpoint within ``tokens`` (the prompt's, then the token counts') whose calibrated
        running confidence is below its threshold, or None. An ``ended`` answer's own end is the final
        decision's, not a checkpoint (as in ``early.checkpoint_tokens``). ``newest``: a caller that asks after
        every token of an answer whose end it does not know yet: only the checkpoint the last token confirmed
        (count n is judged once token n + 1 exists, so an answer's end is never taken for a checkpoint; the
        prompt's at the first token)."""
        from fallback.answer_confidence import token_signals

        counts = range(1, len(tokens) + (0 if ended or newest else 1), self.running.every)
        prompt = [PROMPT_CHECKPOINT] if tokens and PROMPT_CHECKPOINT in self.running.by_tokens else []
        first = len(tokens) - 1 if newest else PROMPT_CHECKPOINT
        for count in (count for count in [*prompt, *counts] if count >= first):
            calibrator = self.running.at(count)  # as ``early.decide_running`` picks it
            if calibrator is None:
                continue
            signals = (token_signals(tokens[:count], response_format) | text_signals(calibrator, query)
                       | hidden_signals(calibrator, tokens, count) | answer_grounding(query, tokens[:count]))
            verdict = _verdict(calibrator, count, signals)
            if verdict is not None:
                return verdict
        return None


def _verdict(calibrator: Calibrator, tokens: int, signals: dict[str, float]) -> RunningDecision | None:
    """Escalate (a decision) when ``calibrator`` can read ``signals`` and their confidence is below its threshold."""
    if not calibrator.has_signals(signals):
        return None  # a hidden-state probe the engine does not hand back: no decision here
    confidence = calibrator.predict(signals)
    return RunningDecision(tokens, confidence) if confidence < calibrator.threshold else None


def text_signals(calibrator: Calibrator, query: str) -> dict[str, float]:
    """What the query text alone gives ``calibrator``: its text probes' logits and the question word."""
    from fallback.probe import probe_signals, probes_of
    from fallback.tasks import query_signals

    probes = [probe for probe in probes_of(calibrator) if probe.source == "text"]
    vector = _query_vector(query)
    return probe_signals(probes, lambda _: vector) | query_signals(query)


def context_signals(calibrator: Calibrator, query: str, tokens: Sequence[LocalToken], whole: bool = True,
                    stop: Sequence[str] = ()) -> dict[str, float]:
    """What ``calibrator`` reads beside an answer's token probabilities: the query text's signals, the
    hidden-state probes' logits (those only where the tokens carry hidden states), the answer's grounding in the
    query, and for a ``whole`` answer (its text cut at ``stop``) the class probe's log-odds of its words
    (``fallback.class_probe``; a stream's hold judges cut answers, whose class is not known yet)."""
    signals = text_signals(calibrator, query) | hidden_signals(calibrator, tokens) | answer_grounding(query, tokens)
    return signals | said_signals(calibrator, tokens, stop) if whole else signals


def said_signals(calibrator: Calibrator, tokens: Sequence[LocalToken], stop: Sequence[str] = ()) -> dict[str, float]:
    """The class probes' log-odds that the prompt's last state points to the answer ``tokens`` say (their text
    up to the first of ``stop``: the last token may carry the stop sequence); {} without a class probe or a
    recorded state (the final decision then falls back to the probabilities-only calibrator)."""
    from fallback.class_probe import class_probes_of, class_signals
    from fallback.probe import final_state

    probes = class_probes_of(calibrator)
    first = getattr(tokens[0], "hidden", None) if probes and tokens else None
    if first is None:
        return {}
    return class_signals(probes, lambda source: final_state(first) if source == "prompt" else None,
                         answer_text(tokens, stop))


def answer_text(tokens: Sequence[LocalToken], stop: Sequence[str] = ()) -> str:
    """The text ``tokens`` say, cut before the first stop sequence in it (as the answer returned is)."""
    text = "".join(token.text for token in tokens)
    cuts = [text.find(sequence) for sequence in stop if sequence and sequence in text]
    return text[:min(cuts)] if cuts else text


def answer_grounding(query: str, tokens: Sequence[LocalToken]) -> dict[str, float]:
    """How many of the answer's complete JSON string values the query never mentions (``fallback.grounding``;
    0 for an answer with none, such as free text)."""
    from fallback.grounding import grounding_signals, string_values
    from fallback.tasks import query_or_prompt

    return grounding_signals(string_values("".join(token.text for token in tokens)).values(), query_or_prompt(query))


def hidden_signals(calibrator: Calibrator, tokens: Sequence[LocalToken], count: int | None = None) -> dict[str, float]:
    """The hidden-state probes' logits after the first ``count`` tokens (all by default): "prompt" reads the
    state the first token was chosen from, "tokens" the mean of those the first ``max(count, 1)`` were, "last"
    the latest of them, "middle" the middle layer's state of that latest; {} when the first token carries no
    hidden state, or not the middle layer's a probe reads (the checkpoints that need one are then skipped)."""
    from fallback.probe import final_state, middle_state, probe_signals, probes_of

    probes = [probe for probe in probes_of(calibrator) if probe.source in SERVED_SOURCES]
    first = getattr(tokens[0], "hidden", None) if probes and tokens else None
    if first is None or any(len(probe.weights) != len(final_state(first)) for probe in probes):
        return {}  # none recorded, or a calibration fitted on another model's hidden states: no probe signal
    if middle_state(first) is None and any(probe.source == "middle" for probe in probes):
        return {}  # an engine loaded without the middle layer's tap (LoadSettings.middle_layer)
    seen = tokens[:max(count, 1)] if count is not None else tokens
    states = [state for state in (getattr(token, "hidden", None) for token in seen) if state is not None]
    finals = [final_state(state) for state in states]

    def state(source: str):
        if source == "middle":
            return middle_state(states[-1])
        return finals[0] if source == "prompt" else finals[-1] if source == "last" else sum(finals) / len(finals)

    return probe_signals(probes, state)


def decisions_of(calibrator: Calibrator, running: bool = True) -> list[Calibrator]:
    """``calibrator`` and, with ``running``, the running checkpoints' calibrators it carries."""
    checkpoints = RunningCalibration.of(calibrator) if running else None
    return [calibrator, *(checkpoints.by_tokens.values() if checkpoints is not None else ())]


def signals_read(calibrators: Sequence[Calibrator]) -> set[str]:
    """The signal names ``calibrators`` read (each factor of a product feature)."""
    return set().union(*(each.signal_names for each in calibrators))


def needs_middle_layer(calibrator: Calibrator) -> bool:
    """Whether a served ``calibrator`` (any of its decisions) reads the middle layer's state: the engine must
    then be loaded with its tap (``LoadSettings.middle_layer``)."""
    from fallback.probe import probes_of

    return any(probe.source == "middle" for each in decisions_of(calibrator) for probe in probes_of(each))


def needs_hidden(calibrator: Calibrator, running: bool = True) -> bool:
    """Whether ``calibrator`` (its final decision or, with ``running``, any running checkpoint) reads a
    hidden-state probe or a class probe."""
    from fallback.probe import probes_of

    calibrators = decisions_of(calibrator, running)
    read = signals_read(calibrators)
    if read & HIDDEN_SIGNALS or any(name.startswith(CLASS_SIGNAL) for name in read):
        return True
    return any(probe.source in SERVED_SOURCES for each in calibrators for probe in probes_of(each)) or any(
        each.extra.get("class_probes") for each in calibrators)


@lru_cache(maxsize=64)
def _query_vector(query: str):
    """The query's hashed trigrams, once per query: a stream's hold asks at every checkpoint of every token."""
    from fallback.probe import text_vector
    from fallback.tasks import query_or_prompt

    return text_vector(query_or_prompt(query))

