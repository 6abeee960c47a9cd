"""The running decision's checkpoints (``fallback.early``) applied to a live request, as ``eval`` applies them.

The calibration file ``serve --calibration`` loads carries, under ``extra["running"]``, one calibrator per
checkpoint with its own early threshold. The cascade reads two kinds here:

- the text checkpoint (-1): the query's hashed trigrams (``probe_text``) and question word, known before the
  model runs. Below its threshold the prompt is judged hopeless and goes to the cloud before any decoding.
- the token checkpoints (1, 1 + every, ...): a stream's hold judges its first tokens there, on their
  probability signals (and the query's text signals).

A server's engine runs in another process and hands back no hidden states yet, so the prompt checkpoint (0,
``probe_prompt``) and any token checkpoint whose calibrator needs ``probe_prompt``/``probe_tokens`` are
skipped: at those points the stream is judged as before. The query text is the prompt, or the last user
message's text (``CascadeRequest.query``), read the way the evaluation reads an item's prompt
(``fallback.tasks.query_text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from fallback.calibration import Calibrator
from fallback.early import TEXT_CHECKPOINT, RunningCalibration, RunningDecision
from fallback.local_leg import LocalToken


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
                      ended: bool = False) -> RunningDecision | None:
        """The first token checkpoint within ``tokens`` whose calibrated running confidence is below its
        threshold (probability signals only), or None. An ``ended`` answer's own end is the final decision's,
        not a checkpoint (as in ``early.checkpoint_tokens``)."""
        from fallback.answer_confidence import token_signals

        for count in range(1, len(tokens) + (0 if ended else 1), self.running.every):
            fitted = [checkpoint for checkpoint in self.running.by_tokens if 1 <= checkpoint <= count]
            if not fitted:
                continue
            calibrator = self.running.by_tokens[max(fitted)]
            signals = token_signals(tokens[:count], response_format) | text_signals(calibrator, query)
            verdict = _verdict(calibrator, count, signals)
            if verdict is not None:
                return verdict
        return None


def _verdict(calibrator: Calibrator, tokens: int, signals: dict[str, float]) -> RunningDecision | None:
    """Escalate (a decision) when ``calibrator`` can read ``signals`` and their confidence is below its threshold."""
    if not all(name in signals for feature in calibrator.features for name in feature.split("*")):
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


@lru_cache(maxsize=64)
def _query_vector(query: str):
    """The query's hashed trigrams, once per query: a stream's hold asks at every checkpoint of every token."""
    from fallback.probe import text_vector
    from fallback.tasks import query_text

    return text_vector(query_text(query) or query)

