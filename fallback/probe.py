"""A linear probe on the model's hidden state: how likely the local answer is right, read from inside the model.

Token probabilities say how sure the model is of the next token; they say little about whether the question is
one it can answer at all (a wrong language name can be said with confidence). A probe reads the final hidden
state (``edge_runtime.backends.hidden_state``) of the prompt's last token, known after the prefill and before
any decoding, the mean over the first generated tokens, or the latest of those; for a label task (eval only)
the state after the chosen label. The ``middle`` source reads the middle layer's state where ``answer`` or
``last`` read the final one. The ``text`` source is no hidden state but the query's hashed character trigrams
(``text_vector``), known before any model runs (a RouteLLM-style router). It is fitted per model and task on the calibration
items: standardise, project on the top principal components, logistic regression with an L2 penalty. Because
every step is linear, the fitted probe collapses to one weight per hidden dimension and a bias, which is what the
calibration file keeps (``Probe.to_dict``); at run time a probe is one dot product in numpy.

The probe's logit becomes one more signal (``probe_prompt``, ``probe_tokens``, ``probe_last``, ``probe_answer``,
``probe_middle``, ``probe_text``) for the calibrator, which keeps
it only where its cross-validated feature choice says it helps (``out_of_fold`` gives the calibration items
scores from probes that did not see them). Vectors travel as base64 float16 (``encode``/``decode``).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fallback.calibration import fold_indices

RECORDED_TOKENS = 4  # generated tokens whose hidden states are recorded, with the prompt's (eval and server alike)
# the prompt's last hidden state; the mean over it and the first generated tokens' ("tokens"); the latest of those
# ("last": a short answer's is the state its end was chosen from); the query text's trigrams; a label task's
# state after the prompt and its chosen label ("answer", as if the model had said it: eval only); the middle
# layer's state where the answer stands ("middle": a label task's after its label, a generated answer's latest)
SOURCES = ("prompt", "tokens", "last", "text", "answer", "middle")
DEFAULT_COMPONENTS = 32
DEFAULT_L2 = 10.0
TEXT_BUCKETS = 512
FLOAT16_MAX = 65504.0
TEXT_L2 = 30.0


def text_vector(text: str, buckets: int = TEXT_BUCKETS) -> np.ndarray:
    """The query's character trigrams (case-folded, words padded with spaces), hashed into ``buckets`` counts
    and normalised: what a text-only router reads before any model runs (the ``text`` source)."""
    vector = np.zeros(buckets)
    for word in text.casefold().split():
        padded = f" {word} "
        for start in range(len(padded) - 2):
            vector[zlib.crc32(padded[start:start + 3].encode()) % buckets] += 1.0
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


def final_state(state):
    """The final hidden state of a recorded ``state``: one row, or two (the final state, then the middle
    layer's, where the engine taps it: ``edge_runtime.backends.hidden_state.LayerTap``)."""
    return state[0] if state is not None and np.ndim(state) == 2 else state


def middle_state(state):
    """The middle layer's state of a recorded ``state``; None when it holds the final state only."""
    return state[1] if state is not None and np.ndim(state) == 2 else None


def fit_settings(source: str) -> tuple[int, float]:
    """(components, l2) a probe of ``source`` is fitted with: hidden states projected, hashed text not."""
    return (0, TEXT_L2) if source == "text" else (DEFAULT_COMPONENTS, DEFAULT_L2)


def encode(vector: np.ndarray) -> str:
    """A hidden state as base64 float16 (about 1.7 kB for 640 dimensions)."""
    finite = np.clip(np.asarray(vector, dtype=np.float64), -FLOAT16_MAX, FLOAT16_MAX)  # a middle layer runs large
    return base64.b64encode(finite.astype(np.float16).tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float64)


@dataclass
class Probe:
    """logit = bias + weights . hidden state; ``source`` says which hidden state."""

    source: str
    weights: list[float]
    bias: float
    components: int = DEFAULT_COMPONENTS
    l2: float = DEFAULT_L2

    def logit(self, vector: np.ndarray) -> float:
        return float(self.bias + np.dot(self.weights, vector))

    @property
    def signal(self) -> str:
        return f"probe_{self.source}"

    def to_dict(self) -> dict:
        return {"source": self.source, "weights": [round(w, 7) for w in self.weights], "bias": self.bias,
                "components": self.components, "l2": self.l2}

    @classmethod
    def from_dict(cls, record: dict) -> "Probe":
        return cls(record["source"], list(record["weights"]), float(record["bias"]),
                   int(record.get("components", DEFAULT_COMPONENTS)), float(record.get("l2", DEFAULT_L2)))


def probes_of(calibrator) -> list[Probe]:
    """The probes a calibrator (``fallback.calibration.Calibrator``) carries in ``extra["probes"]``."""
    return [Probe.from_dict(record) for record in calibrator.extra.get("probes", [])]


def probe_signals(probes: Sequence[Probe], hidden) -> dict[str, float]:
    """Each probe's logit on ``hidden(source)`` (0.0, no evidence, when that hidden state is missing)."""
    signals = {}
    for probe in probes:
        vector = hidden(probe.source)
        signals[probe.signal] = probe.logit(vector) if vector is not None else 0.0
    return signals


def logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """Newton's method for an L2-penalised logistic regression; x has no intercept column, beta[0] is it."""
    design = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(design.shape[1])
    penalty = np.eye(design.shape[1]) * l2
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -40, 40)))
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + np.eye(len(beta)) * 1e-9
        step = np.linalg.solve(hessian, design.T @ (p - y) + penalty @ beta)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def whitening(vectors: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, projection): standardise, then project on the top ``components`` principal components,
    whitened (0 keeps every dimension unprojected). ``((x - mean) / scale) @ projection`` is what a probe's
    logistic regression reads."""
    x = np.asarray(vectors, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    if not components:  # no projection: the L2 penalty alone (hashed text counts, whose components carry no order)
        return mean, scale, np.eye(x.shape[1])
    _, singular, basis = np.linalg.svd((x - mean) / scale, full_matrices=False)
    keep = min(components, len(singular))
    spread = singular[:keep] / np.sqrt(max(len(x) - 1, 1))
    spread[spread < 1e-9] = 1.0
    return mean, scale, basis[:keep].T / spread  # hidden (standardised) -> whitened components


def collapse(beta: np.ndarray, mean: np.ndarray, scale: np.ndarray, projection: np.ndarray) -> tuple[np.ndarray, float]:
    """A logistic regression fitted on whitened components as (weights, bias) on the raw hidden state."""
    weights = (projection @ beta[1:]) / scale
    return weights, float(beta[0] - weights @ mean)


def fit_probe(vectors: np.ndarray, correct: Sequence[bool], source: str, components: int = DEFAULT_COMPONENTS,
              l2: float = DEFAULT_L2) -> Probe:
    """Standardise, keep the top ``components`` principal components (whitened; 0 keeps every dimension
    unprojected), fit, collapse to one vector."""
    x, y = np.asarray(vectors, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    mean, scale, projection = whitening(x, components)
    beta = logistic(((x - mean) / scale) @ projection, y, l2)
    weights, bias = collapse(beta, mean, scale, projection)
    return Probe(source, weights.tolist(), bias, projection.shape[1] if components else 0, l2)


def out_of_fold(vectors: np.ndarray, correct: Sequence[bool], source: str, folds: int = 5, seed: int = 0,
                components: int | None = None, l2: float | None = None) -> np.ndarray:
    """Each item's probe logit from a probe fitted on the other folds (what calibration may train on)."""
    defaults = fit_settings(source)
    components, l2 = (defaults[0] if components is None else components), (defaults[1] if l2 is None else l2)
    labels = np.asarray(correct, dtype=bool)
    logits = np.zeros(len(labels))
    for held_out in fold_indices(labels, folds, seed + 1):  # other folds than the calibrator's own CV
        train = np.setdiff1d(np.arange(len(labels)), held_out)
        if labels[train].all() or not labels[train].any():
            continue
        probe = fit_probe(vectors[train], labels[train], source, components, l2)
        logits[held_out] = vectors[held_out] @ np.asarray(probe.weights) + probe.bias
    return logits
