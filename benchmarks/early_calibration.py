"""A tiny calibration file with running checkpoints, fitted by the real fit functions on made-up data.

The text checkpoint (-1) is a ``probe_text`` probe (``fallback.probe.fit_probe`` on hashed trigrams) with a
Platt map (``fit_platt``) and an early threshold (``early_threshold``), trained on queries about quantum
chromodynamics (the local model always wrong) and capitals (always right), so it escalates the former before
the model runs. The token checkpoint (1) is a Platt map on the first token's log-probability, fitted so an
unsure first token (p ~ 0.6) is escalated while the final calibrator (on the whole answer's mean
log-probability) would keep such an answer. Used by the cascade's and the server's tests and by
``benchmarks.early_escalation`` (a made-up calibration: what is measured is when the decision is taken).
"""

from __future__ import annotations

import math

import numpy as np

from fallback.calibration import Calibrator, fit_platt
from fallback.early import RunningCalibration, early_threshold
from fallback.probe import fit_probe, text_vector

HOPELESS = [f"Question: explain the quantum chromodynamics of {thing} in detail" for thing in
            ("gluons", "quarks", "hadrons", "pions", "mesons", "baryons", "color charge", "confinement")]
CONFIDENT = [f"Question: what is the capital of {place}" for place in
             ("France", "Spain", "Italy", "Peru", "Chile", "Japan", "Kenya", "Egypt")]
HOPELESS_QUERY = "Question: explain the quantum chromodynamics of the strong force in detail"
CONFIDENT_QUERY = "Question: what is the capital of Portugal"


def text_checkpoint() -> Calibrator:
    texts = HOPELESS + CONFIDENT
    correct = [False] * len(HOPELESS) + [True] * len(CONFIDENT)
    probe = fit_probe(np.stack([text_vector(text.partition(": ")[2]) for text in texts]), correct, "text",
                      components=0, l2=1.0)
    rows = [{"probe_text": probe.logit(text_vector(text.partition(": ")[2]))} for text in texts]
    calibrator = fit_platt(rows, correct, ["probe_text"])
    calibrator.threshold = early_threshold([calibrator.predict(row) for row in rows], correct, 0.2, 0.9)
    calibrator.extra = {"probes": [probe.to_dict()], "tokens": -1}
    return calibrator


def token_checkpoint() -> Calibrator:
    """P(correct) from the first token's log-probability: sure (0.95) right, unsure (0.6 and below) wrong."""
    probabilities = [0.95, 0.97, 0.93, 0.99, 0.6, 0.55, 0.5, 0.62]
    rows = [{"first_logprob": math.log(p)} for p in probabilities]
    correct = [p > 0.9 for p in probabilities]
    calibrator = fit_platt(rows, correct, ["first_logprob"])
    calibrator.threshold, calibrator.extra = 0.5, {"tokens": 1}
    return calibrator


def calibration(task: str = "t", text: bool = True, tokens: bool = True) -> Calibrator:
    """The final calibrator: 0.9 for answers whose geometric-mean token probability is 0.5 or more, else 0.1
    (threshold 0.5); its ``extra["running"]`` carries the chosen checkpoints."""
    final = Calibrator("isotonic", ["mean_logprob"], knots=[(-100.0, 0.1), (math.log(0.5), 0.9)], threshold=0.5,
                       task=task, model="fake")
    running = RunningCalibration(4, {})
    if text:
        running.by_tokens[-1] = text_checkpoint()
    if tokens:
        running.by_tokens[1] = token_checkpoint()
    final.extra["running"] = running.to_dict()
    return final
