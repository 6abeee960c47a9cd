"""A probe that reads which answer the hidden state points to, and how much of that the local answer got.

The correctness probes (``fallback.probe``) ask a linear map of a hidden state "is this answer right?", which
depends on the answer said, not only on the state. Where a task's answers come from a closed set (a label task's
choices; the languages a question can have), a better question is "which answer does the state point to?": a
probe on the prompt's last hidden state, fitted on the calibration items' gold answers, reads the task from
inside the model more accurately than the small model's own words (on the agnews dev set 0.91 against the
model's 0.73, out of fold). Its probability of the answer the model actually gave is then a confidence signal
(``probe_class``, as log-odds): where the two disagree, the answer is usually wrong. A structured answer gets one
probe per JSON field (``probe_class_<field>``): a flight query's weekday or city is a class too.

The classes are the gold answers (compared as ``fallback.tasks.is_correct`` compares them: strings trimmed and
case-folded, JSON values by type) that at least ``MIN_CLASS_ITEMS`` calibration items share; the rarer ones, if
any, form one ``OTHER`` class. A task with fewer than two such answers (every capital differs) gets no class
probe. The fit is the correctness probe's (standardise, whitened principal components, L2-penalised logistic
regression), one regression per class against the rest, normalised by a softmax; it collapses to one weight row
per class on the raw hidden state: numpy only at run time, kept in the calibration file under
``extra["class_probes"]``. It judges a whole answer only: a cut one's class is not known yet.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fallback.calibration import fold_indices
from fallback.probe import DEFAULT_COMPONENTS, DEFAULT_L2, collapse, logistic, whitening

SIGNAL = "probe_class"
MIN_CLASS_ITEMS = 5  # calibration items an answer needs to be a class of its own
OTHER = "<other>"  # the class of every rarer gold answer
LOGIT_LIMIT = 12.0  # the signal's log-odds are clipped to +-this (a probability of 6e-6 says all there is)


def answer_class(answer: str, field: str = "") -> str:
    """An answer as the class probe compares it: trimmed and case-folded; with ``field``, the answer is a JSON
    object and its value for that key is compared, a string as above, anything else by type and value
    ("<null>", "<missing>", "<number 5.0>", ...; "<unread>" when the answer is not a JSON object)."""
    if not field:
        return answer.strip().casefold()
    try:
        document = json.loads(answer)
    except ValueError:
        return "<unread>"
    if not isinstance(document, dict):
        return "<unread>"
    if field not in document:
        return "<missing>"
    return _value_class(document[field])


def _value_class(value: object) -> str:
    if isinstance(value, str):
        return value.strip().casefold()
    if value is None or isinstance(value, bool):
        return f"<{json.dumps(value)}>"
    if isinstance(value, (int, float)):
        return f"<number {float(value)!r}>"
    return f"<json {json.dumps(value, sort_keys=True)}>"


@dataclass
class ClassProbe:
    """P(answer class | hidden state) = softmax(weights @ state + bias) over ``classes`` (``OTHER`` last where
    some gold answer was rare). ``field`` names the JSON key whose value is the class ("" for the whole answer)."""

    source: str
    classes: list[str]
    weights: list[list[float]]
    bias: list[float]
    components: int = DEFAULT_COMPONENTS
    l2: float = DEFAULT_L2
    field: str = ""

    @property
    def signal(self) -> str:
        return f"{SIGNAL}_{self.field}" if self.field else SIGNAL

    def probabilities(self, vector: np.ndarray) -> np.ndarray:
        logits = np.asarray(self.weights) @ np.asarray(vector, dtype=np.float64) + np.asarray(self.bias)
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def said_logit(self, vector: np.ndarray, answer: str) -> float:
        """Log-odds that the state points to ``answer``'s class: its own, else ``OTHER``; an answer outside
        every class of a probe without ``OTHER`` gets the lowest."""
        said = answer_class(answer, self.field)
        index = self.classes.index(said) if said in self.classes else (
            self.classes.index(OTHER) if OTHER in self.classes else None)
        if index is None:
            return -LOGIT_LIMIT
        p = float(self.probabilities(vector)[index])
        logit = math.log(max(p, 1e-300)) - math.log(max(1.0 - p, 1e-300))
        return max(-LOGIT_LIMIT, min(LOGIT_LIMIT, logit))

    def to_dict(self) -> dict:
        return {"source": self.source, "classes": self.classes,
                "weights": [[round(w, 7) for w in row] for row in self.weights],
                "bias": [round(b, 7) for b in self.bias], "components": self.components, "l2": self.l2,
                "field": self.field}

    @classmethod
    def from_dict(cls, record: dict) -> "ClassProbe":
        return cls(record["source"], list(record["classes"]), [list(row) for row in record["weights"]],
                   list(record["bias"]), int(record.get("components", DEFAULT_COMPONENTS)),
                   float(record.get("l2", DEFAULT_L2)), str(record.get("field", "")))


def class_probes_of(calibrator) -> list[ClassProbe]:
    """The class probes a calibrator (``fallback.calibration.Calibrator``) carries."""
    return [ClassProbe.from_dict(record) for record in calibrator.extra.get("class_probes", [])]


def class_signals(probes: Sequence[ClassProbe], hidden, answer: str) -> dict[str, float]:
    """Each probe's signal on the state ``hidden(source)`` gives (none where it is missing or of another size)
    for the whole ``answer``."""
    signals = {}
    for probe in probes:
        vector = hidden(probe.source)
        if vector is not None and len(vector) == len(probe.weights[0]):
            signals[probe.signal] = probe.said_logit(vector, answer)
    return signals


def answer_classes(gold: Sequence[str], min_items: int = MIN_CLASS_ITEMS, field: str = "") -> list[str]:
    """The classes a probe is fitted on: gold answers (their ``field``'s values) shared by ``min_items`` items
    (most common first), then ``OTHER`` if any is rarer; [] when fewer than two answers are that common."""
    counts = Counter(answer_class(answer, field) for answer in gold)
    common = [answer for answer, count in counts.most_common() if count >= min_items]
    if len(common) < 2:
        return []
    return [*common, OTHER] if len(common) < len(counts) else common


def fit_class_probe(vectors: np.ndarray, gold: Sequence[str], source: str, components: int = DEFAULT_COMPONENTS,
                    l2: float = DEFAULT_L2, min_items: int = MIN_CLASS_ITEMS, field: str = "") -> ClassProbe | None:
    """One logistic regression per class against the rest on the whitened components, collapsed to the raw
    state; None when the gold answers (their ``field``'s values) give fewer than two classes."""
    classes = answer_classes(gold, min_items, field)
    if not classes:
        return None
    x = np.asarray(vectors, dtype=np.float64)
    mean, scale, projection = whitening(x, components)
    whitened = ((x - mean) / scale) @ projection
    named = [answer_class(answer, field) for answer in gold]
    labels = [name if name in classes else OTHER for name in named]
    rows, biases = [], []
    for name in classes:
        target = np.array([label == name for label in labels], dtype=np.float64)
        weights, bias = collapse(logistic(whitened, target, l2), mean, scale, projection)
        rows.append(weights.tolist())
        biases.append(bias)
    return ClassProbe(source, classes, rows, biases, projection.shape[1], l2, field)


def class_out_of_fold(vectors: np.ndarray, gold: Sequence[str], said: Sequence[str], correct: Sequence[bool],
                      source: str, folds: int = 5, seed: int = 0, field: str = "") -> np.ndarray | None:
    """Each item's signal from a class probe fitted on the other folds (what calibration may train on; 0, no
    evidence, where those folds alone give fewer than two classes); None when the gold answers give no class
    probe."""
    if not answer_classes(gold, field=field):
        return None
    labels = np.asarray(correct, dtype=bool)
    logits = np.zeros(len(labels))
    for held_out in fold_indices(labels, folds, seed + 1):
        train = np.setdiff1d(np.arange(len(labels)), held_out)
        probe = fit_class_probe(vectors[train], [gold[i] for i in train], source, field=field)
        if probe is not None:
            logits[held_out] = [probe.said_logit(vectors[i], said[i]) for i in held_out]
    return logits
