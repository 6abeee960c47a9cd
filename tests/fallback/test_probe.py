"""The hidden-state probe: it finds a direction that tells right from wrong, collapses to one weight vector, keeps
its held-out scores honest, travels in the calibration file, and is read as a signal only where it was kept."""

from __future__ import annotations

import numpy as np

from fallback.calibration import Calibrator, aligned, auroc
from fallback.probe import Probe, decode, encode, fit_probe, out_of_fold, probe_signals, probes_of
from fallback.tasks import LocalAnswer


def hidden_states(n: int = 300, dims: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random states with large nuisance variance; correctness depends on one small direction."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dims)) * rng.uniform(0.5, 5.0, size=dims) + rng.normal(size=dims) * 3
    direction = rng.normal(size=dims)
    direction /= np.linalg.norm(direction)
    correct = (x @ direction + rng.normal(scale=0.5, size=n)) > np.median(x @ direction)
    return x, correct


def test_the_probe_is_one_linear_map_that_ranks_right_above_wrong():
    x, correct = hidden_states()
    probe = fit_probe(x, correct, "prompt", components=64, l2=1.0)
    logits = np.array([probe.logit(row) for row in x])
    assert len(probe.weights) == 64 and auroc(logits, correct) > 0.9


def test_out_of_fold_scores_come_from_probes_that_did_not_see_the_item():
    x, _ = hidden_states()
    noise = np.random.default_rng(1).random(len(x)) > 0.5  # labels no probe can predict
    in_sample = fit_probe(x, noise, "prompt", components=64, l2=1e-3)
    assert auroc([in_sample.logit(row) for row in x], noise) > 0.6  # memorised
    assert abs(auroc(out_of_fold(x, noise, "prompt", components=64, l2=1e-3), noise) - 0.5) < 0.1


def test_a_hidden_state_survives_its_text_form_to_float16_precision():
    vector = np.linspace(-50, 50, 640)
    assert np.allclose(decode(encode(vector)), vector, rtol=1e-3)


def test_probes_travel_in_the_calibration_file_and_read_the_answers_hidden_states(tmp_path):
    x, correct = hidden_states(dims=8)
    probe = fit_probe(x, correct, "tokens", components=8)
    calibrator = Calibrator("platt", ["probe_tokens"], [0.0], [1.0], [1.0], extra={"probes": [probe.to_dict()]})
    [loaded] = probes_of(Calibrator.load(calibrator.save(tmp_path / "languages.json")))
    assert loaded.source == "tokens" and np.isclose(loaded.logit(x[0]), probe.logit(x[0]), atol=1e-4)
    answer = LocalAnswer("French", {}, 10, 3, 0.1, logprobs=[-0.1, -0.2, -0.3], margins=[1.0, 1.0, 1.0],
                         fields=["", "", ""], hidden_prompt=encode(x[0]), hidden_tokens=[encode(x[1]), encode(x[2])])
    mean_after_two = (decode(encode(x[0])) + decode(encode(x[1]))) / 2  # token 0 fed by the time 2 are chosen
    assert np.allclose(answer.hidden("tokens", 2), mean_after_two)
    signals = answer.signals_after(2, [loaded])
    assert np.isclose(signals["probe_tokens"], loaded.logit(mean_after_two)) and signals["n_tokens"] == 2.0
    assert probe_signals([Probe("prompt", [1.0], 0.0)], lambda source: None) == {"probe_prompt": 0.0}


def test_a_caller_without_the_probes_signal_gets_the_files_probability_only_fallback(tmp_path):
    fallback = Calibrator("platt", ["mean_logprob"], [0.0], [1.0], [2.0], threshold=0.4)
    main = Calibrator("platt", ["mean_logprob", "probe_prompt"], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0],
                      extra={"fallback": fallback.to_dict()})
    loaded = Calibrator.load(main.save(tmp_path / "languages.json"))
    # the fallback's own threshold (0.4) lands on the file's (0.5): the same decision, on the file's scale
    for mean_logprob in (-1.0, -0.3, -0.2, 0.5):
        own = fallback.predict({"mean_logprob": mean_logprob})
        mapped = loaded.predict({"mean_logprob": mean_logprob})
        assert (own >= fallback.threshold) == (mapped >= loaded.threshold) and 0.0 <= mapped <= 1.0
    assert loaded.predict({"mean_logprob": -1.0}) == aligned(fallback.predict({"mean_logprob": -1.0}), 0.4, 0.5)
    assert aligned(0.4, 0.4, 0.5) == 0.5 and aligned(0.0, 0.4, 0.5) == 0.0 and aligned(1.0, 0.4, 0.5) == 1.0
    assert loaded.predict({"mean_logprob": -1.0, "probe_prompt": 3.0}) > fallback.predict({"mean_logprob": -1.0})
