"""The class probe inside the per-task calibration: pure calibration logic on made-up answers (no model).

The prompt's state points to the gold language; the answer's token probabilities say nothing (the model is as
sure when it is wrong). Only the class probe can tell right from wrong, so the feature choice must keep it,
carry it in the calibration file, read it again from the file, and leave it out of the running checkpoints (a
cut answer's class is not known). A structured task gets one class probe per JSON field."""

from __future__ import annotations

import json
import math

import numpy as np

from edge_runtime.evaluation.task_calibration import calibrate_task, calibrator_signals, class_probe_features
from fallback.calibration import Calibrator, auroc
from fallback.class_probe import SIGNAL
from fallback.probe import encode
from fallback.tasks import LocalAnswer, TaskItem

LANGUAGES = ("French", "English", "Russian", "Dutch")
DAYS = ("monday", "friday", None)


def languages_task(n: int = 200, seed: int = 0):
    directions = np.random.default_rng(99).normal(size=(len(LANGUAGES), 24)) * 3.0  # the same task every time
    rng = np.random.default_rng(seed)
    items, answers, correct = [], [], []
    for index in range(n):
        gold = int(rng.integers(len(LANGUAGES)))
        said = gold if rng.random() < 0.6 else (gold + 1) % len(LANGUAGES)
        state = rng.normal(size=24) + directions[gold]
        items.append(TaskItem(id=f"l-{index}", task="languages", prompt=f"Q: language {index}?\nA:",
                              answer=LANGUAGES[gold], stop=["\n"]))
        answers.append(LocalAnswer(LANGUAGES[said], {}, 10, 2, 0.1, logprobs=[math.log(0.7), -0.01],
                                   margins=[1.0, 4.0], fields=["", ""], token_times_s=[0.07, 0.1],
                                   hidden_prompt=encode(state)))
        correct.append(said == gold)
    return items, answers, correct


def test_the_feature_choice_keeps_the_class_probe_and_the_file_carries_it(tmp_path):
    items, answers, correct = languages_task()
    calibrator, rows = calibrate_task("languages", items, answers, correct, "fake")
    assert SIGNAL in calibrator.features and calibrator.extra["cv_auroc"] > 0.85
    loaded = Calibrator.load(calibrator.save(tmp_path / "languages.json"))
    assert set(loaded.extra["class_probes"][0]["classes"]) == {name.casefold() for name in LANGUAGES}
    fresh, fresh_answers, fresh_correct = languages_task(seed=1)  # new items: the probe has not seen them
    scores = [loaded.predict(calibrator_signals(item, answer, loaded)) for item, answer in zip(fresh, fresh_answers)]
    assert auroc(scores, fresh_correct) > 0.85
    assert SIGNAL not in calibrator_signals(items[0], answers[0], loaded, tokens=1), "no class of a cut answer"


def test_a_structured_task_gets_one_class_probe_per_field():
    rng = np.random.default_rng(2)
    directions = rng.normal(size=(len(DAYS), 16)) * 3.0
    items, answers, correct = [], [], []
    for index in range(120):
        gold_day = int(rng.integers(len(DAYS)))
        said_day = gold_day if rng.random() < 0.6 else (gold_day + 1) % len(DAYS)
        gold = {"to": "boston", "day": DAYS[gold_day]}
        said = {"to": "boston", "day": DAYS[said_day]}
        items.append(TaskItem(id=f"a-{index}", task="atis", prompt="Query: fly\nJSON:", answer=json.dumps(gold),
                              schema={"type": "object", "properties": {"to": {"type": "string"},
                                                                        "day": {"type": ["string", "null"]}}}))
        answers.append(LocalAnswer(json.dumps(said), {}, 10, 8, 0.2, hidden_prompt=encode(
            rng.normal(size=16) + directions[gold_day])))
        correct.append(said_day == gold_day)
    extra, probes = class_probe_features(items, answers, correct)
    assert [probe.field for probe in probes] == ["day"]  # every "to" is boston: one class, no probe
    assert auroc([row[f"{SIGNAL}_day"] for row in extra], correct) > 0.85


def test_the_calibration_file_has_a_fallback_for_a_server_without_hidden_states(tmp_path):
    """eval's calibrator reads the class probe; a backend that hands back no hidden state (ONNX) gets the file's
    probabilities-only calibrator rather than an error."""
    from edge_runtime.evaluation.harness import EvalOptions, task_calibrator

    items, answers, correct = languages_task()
    options = EvalOptions(test_paths=[], out_dir=tmp_path)
    calibrator = task_calibrator("languages", items, {item.id: answer for item, answer in zip(items, answers)},
                                 "fake", options)
    assert calibrator.extra.get("class_probes") and "fallback" in calibrator.extra
    no_hidden = answers[0].signals_after()  # the token signals alone
    assert SIGNAL not in no_hidden and 0.0 <= calibrator.predict(no_hidden) <= 1.0
