"""The grounding signal: a JSON answer's string values that the query never mentions, counted the same way from a
cached answer cut at a token count (eval) and from the tokens so far (the server)."""

from __future__ import annotations

from types import SimpleNamespace

from fallback.early_request import answer_grounding as served_grounding
from fallback.grounding import answer_grounding, complete_by, grounding_signals, string_values

QUERY = "i want to fly from Boston to  denver on monday"


def test_string_values_are_the_complete_pairs_only():
    assert string_values('{"from": "boston", "to": "den') == {"from": "boston"}
    assert string_values('{"from": "new \\"york\\"", "day": null}') == {"from": 'new "york"'}
    assert string_values("Paris") == {}


def test_values_the_query_does_not_contain_are_counted_ignoring_case_and_spacing():
    assert grounding_signals(["boston", "Denver", "monday"], QUERY) == {"ungrounded_values": 0.0}
    assert grounding_signals(["boston", "atlanta", "friday"], QUERY) == {"ungrounded_values": 2.0}
    assert grounding_signals(["", "  "], QUERY) == {"ungrounded_values": 0.0}


def test_a_cut_answer_counts_only_values_whose_closing_token_was_seen():
    text = '{"from": "boston", "to": "atlanta"}'
    fields = [None, "from", None, "to", None]  # '{"from": "', 'boston', '", "to": "', 'atlanta', '"}'
    assert complete_by(fields, None) is None and complete_by(fields, 4) == {"from"}
    assert answer_grounding(text, fields, 4, QUERY) == {"ungrounded_values": 0.0}, "atlanta is not closed yet"
    assert answer_grounding(text, fields, 5, QUERY) == {"ungrounded_values": 1.0}
    assert answer_grounding(text, fields, None, QUERY) == {"ungrounded_values": 1.0}


def test_the_server_reads_the_same_from_its_tokens():
    pieces = ['{"from": "', "boston", '", "to": "', "atlanta", '"}']
    tokens = [SimpleNamespace(text=piece) for piece in pieces]
    assert served_grounding(QUERY, tokens[:4]) == {"ungrounded_values": 0.0}
    assert served_grounding(QUERY, tokens) == {"ungrounded_values": 1.0}
    few_shot = "Query: from toronto to atlanta\nJSON: {}\n\nQuery: " + QUERY + "\nJSON:"
    assert served_grounding(few_shot, tokens) == {"ungrounded_values": 1.0}, "the examples' cities do not count"
    assert served_grounding(QUERY, [SimpleNamespace(text="Paris")]) == {"ungrounded_values": 0.0}


def test_the_final_decision_gets_the_signal():
    """What a calibration fitted by eval reads at the server's final decision: ``context_signals`` carries
    ``ungrounded_values`` (the running checkpoints add the same ``answer_grounding``, tested above)."""
    from benchmarks.early_calibration import calibration
    from fallback.early_request import context_signals

    tokens = [SimpleNamespace(text=piece, logprob=-0.1) for piece in ['{"from": "', "atlanta", '"}']]
    assert context_signals(calibration(text=False, tokens=False), QUERY, tokens)["ungrounded_values"] == 1.0
