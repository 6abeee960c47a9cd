"""Answer signals: value tokens and per-field reads that forced structure cannot drag down, and token margins."""

from __future__ import annotations

import math

import pytest

from fallback.confidence import answer_signals, token_margins

# '{"', 'from', '":', ' "', 'bos', 'ton', '",', ' "', 'to', '":', ' "', 'denver', '"}'
LOGPROBS = [-6.6, -0.1, -0.0, -0.0, -0.2, -0.1, -0.0, -0.0, -0.0, -0.0, -0.0, -1.5, -0.1]
FIELDS = [None, None, None, None, "from", "from", None, None, None, None, None, "to", None]


def test_a_forced_structure_token_moves_the_whole_answer_read_but_not_the_values():
    signals = answer_signals(LOGPROBS, fields=FIELDS, keys=["from", "to"])
    assert signals["min_logprob"] == -6.6
    assert signals["value_min_logprob"] == -1.5 and signals["value_first_logprob"] == -0.2
    assert signals["field_from_sum"] == pytest.approx(-0.3) and signals["field_to_sum"] == -1.5
    assert signals["field_min_sum"] == -1.5 and signals["n_value_tokens"] == 3


def test_fields_not_yet_begun_read_as_certain_so_an_unfinished_answer_is_not_pushed_out():
    signals = answer_signals(LOGPROBS[:6], fields=FIELDS[:6], keys=["from", "to"])
    assert signals["field_to_sum"] == 0.0 and signals["field_to_first"] == 0.0
    assert set(signals) == set(answer_signals(LOGPROBS, fields=FIELDS, keys=["from", "to"]))


def test_without_fields_every_token_is_a_value():
    signals = answer_signals([-0.5, -0.1], margins=[0.3, 4.0])
    assert signals["value_mean_logprob"] == pytest.approx(-0.3) == signals["mean_logprob"]
    assert signals["value_first_margin"] == 0.3 and signals["value_min_margin"] == 0.3


def test_a_margin_is_over_the_best_other_token_and_negative_when_the_choice_was_not_the_models():
    chosen = [math.log(0.6), math.log(0.1)]
    top = [[(7, math.log(0.6)), (8, math.log(0.3))], [(3, math.log(0.8)), (5, math.log(0.1))]]
    margins = token_margins(chosen, top, [7, 5])
    assert margins[0] == pytest.approx(math.log(2)) and margins[1] == pytest.approx(math.log(0.1 / 0.8))
    assert token_margins([-1.0], [[]], [4]) == [0.0]
