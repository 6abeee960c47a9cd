"""The class probe: it reads which answer a hidden state points to, scores the answer said against it, keeps
rare answers in one "other" class, refuses tasks without a closed answer set, and travels in the calibration
file."""

from __future__ import annotations

import numpy as np

from fallback.calibration import Calibrator, auroc
from fallback.class_probe import (LOGIT_LIMIT, OTHER, SIGNAL, ClassProbe, answer_class, answer_classes,
                                  class_out_of_fold, class_probes_of, class_signals, fit_class_probe)

NAMES = ("french", "english", "russian")


def pointed_states(n: int = 300, dims: int = 48, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """States whose gold answer is told by one of three small directions under large nuisance variance; a few
    rare answers (one item each) among them."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(NAMES), dims))
    gold_index = rng.integers(0, len(NAMES), size=n)
    x = rng.normal(size=(n, dims)) * rng.uniform(0.5, 5.0, size=dims) + directions[gold_index] * 4.0
    gold = [NAMES[i] for i in gold_index]
    for i in range(3):
        gold[i] = f"Rare{i}"
    return x, gold


def test_answers_shared_by_enough_items_are_classes_and_the_rest_is_other():
    assert answer_classes([" French", "french", "FRENCH", "English", "english", "Tamil"], min_items=2) == [
        "french", "english", OTHER]
    assert answer_classes(["Paris", "Rome", "Oslo", "Paris"], min_items=2) == []  # one common answer: no probe


def test_the_probe_prefers_the_gold_answer_to_any_other_said_answer():
    x, gold = pointed_states()
    probe = fit_class_probe(x[:200], gold[:200], "prompt", components=32, l2=1.0, min_items=5)
    assert probe.classes[-1] == OTHER and set(probe.classes[:-1]) == set(NAMES)
    test = range(200, 300)
    right = [probe.said_logit(x[i], gold[i]) for i in test]
    wrong = [probe.said_logit(x[i], next(name for name in NAMES if name != gold[i])) for i in test]
    assert auroc(right + wrong, [True] * len(right) + [False] * len(wrong)) > 0.9
    assert np.isclose(probe.probabilities(x[0]).sum(), 1.0)
    # case and spaces do not matter; an answer outside the classes is scored as "other"
    assert probe.said_logit(x[250], f"  {gold[250].upper()} ") == probe.said_logit(x[250], gold[250])
    assert probe.said_logit(x[250], "Klingon") == probe.said_logit(x[250], "Rare0")


def test_out_of_fold_scores_rank_right_answers_above_wrong_ones_without_seeing_them():
    x, gold = pointed_states()
    rng = np.random.default_rng(3)
    said = [g if rng.random() < 0.6 else NAMES[(NAMES.index(g) + 1) % 3] if g in NAMES else "french" for g in gold]
    correct = [s == g for s, g in zip(said, gold)]
    scores = class_out_of_fold(x, gold, said, correct, "prompt")
    assert scores is not None and auroc(scores, correct) > 0.85
    assert class_out_of_fold(x, [f"capital {i}" for i in range(len(x))], said, correct, "prompt") is None


def test_class_probes_travel_in_the_calibration_file_and_are_read_only_with_their_state(tmp_path):
    x, gold = pointed_states(dims=8)
    probe = fit_class_probe(x, gold, "prompt", components=8)
    calibrator = Calibrator("platt", [SIGNAL], [0.0], [1.0], [1.0], extra={"class_probes": [probe.to_dict()]})
    [loaded] = class_probes_of(Calibrator.load(calibrator.save(tmp_path / "languages.json")))
    assert isinstance(loaded, ClassProbe) and loaded.classes == probe.classes
    assert np.isclose(loaded.said_logit(x[5], "english"), probe.said_logit(x[5], "english"), atol=1e-4)
    assert class_signals([loaded], lambda source: x[5], "English")[SIGNAL] == loaded.said_logit(x[5], "english")
    assert class_signals([loaded], lambda source: None, "English") == {}
    assert class_signals([loaded], lambda source: np.zeros(9), "English") == {}  # another model's states


def test_a_field_probe_reads_the_fields_value_as_the_correctness_check_compares_it():
    x, gold = pointed_states(dims=8)
    documents = ['{"day": "%s"}' % name for name in gold]
    probe = fit_class_probe(x, documents, "prompt", components=8, field="day")
    assert probe.signal == "probe_class_day" and set(probe.classes[:-1]) == set(NAMES)
    whole = class_signals([probe], lambda source: x[7], '{"day": "%s", "to": null}' % gold[7].upper())
    assert whole["probe_class_day"] == probe.said_logit(x[7], '{"day": "%s"}' % gold[7]) > 0
    # numbers by value, null apart from the string "null", a missing key apart from both, a cut answer unread
    assert answer_class('{"n": 5}', "n") == answer_class('{"n": 5.0}', "n") != answer_class('{"n": "5"}', "n")
    assert len({answer_class(text, "n") for text in ('{"n": null}', '{"n": "null"}', '{}', '{"n": "nu')}) == 4
    assert answer_class('{"n": true}', "n") != answer_class('{"n": 1}', "n")
    assert probe.said_logit(x[7], '{"day": "%s' % gold[7]) == probe.said_logit(x[7], '{"day": "Rare1"}')  # other


def test_without_rare_answers_there_is_no_other_class_and_an_unknown_answer_scores_lowest():
    x, gold = pointed_states()
    common = [name if name in NAMES else "french" for name in gold]
    probe = fit_class_probe(x, common, "prompt", components=16)
    assert OTHER not in probe.classes and probe.said_logit(x[0], "Klingon") == -LOGIT_LIMIT
    assert max(probe.said_logit(x[i], common[i]) for i in range(10)) > 0
