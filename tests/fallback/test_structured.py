"""Structured answers: value spans in whole and unfinished JSON, field equality, and structured task items."""

from __future__ import annotations

import json

import pytest

from fallback.structured import same_fields, token_fields, value_owners
from fallback.tasks import TaskItem, is_correct

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["from", "to", "day"],
          "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "day": {"type": ["string", "null"]}}}
ANSWER = ' {"from": "new york", "to": "denver", "day": null}'


def owner_marks(text: str) -> str:
    return "".join("." if owner is None else owner[0] for owner in value_owners(text))


def test_values_own_their_characters_and_structure_owns_none():
    assert owner_marks(ANSWER) == "...........ffffffff..........tttttt..........dddd."
    assert {owner for owner in value_owners(ANSWER) if owner} == {"from", "to", "day"}


def test_escaped_quotes_and_nested_values_stay_in_their_field():
    text = '{"a": "say \\"hi\\"", "b": {"c": [1, "}"]}, "n": -2.5}'
    owners = value_owners(text)
    assert "".join(ch for ch, owner in zip(text, owners) if owner == "a") == 'say \\"hi\\"'
    assert "".join(ch for ch, owner in zip(text, owners) if owner == "b") == '{"c": [1, "}"]}'
    assert "".join(ch for ch, owner in zip(text, owners) if owner == "n") == "-2.5"


@pytest.mark.parametrize("cut", range(len(ANSWER) + 1))
def test_an_unfinished_answer_has_the_owners_of_the_whole_one_cut_short(cut):
    assert value_owners(ANSWER[:cut]) == value_owners(ANSWER)[:cut]


def test_tokens_carry_the_field_of_any_value_character_they_hold():
    pieces = [' {"', "from", '":', ' "', "new", " york", '",', ' "', "to", '":', ' "', "den", "ver", '",', ' "', "day",
              '":', " null", "}"]
    assert "".join(pieces) == ANSWER
    fields = token_fields(pieces)
    assert [piece for piece, field in zip(pieces, fields) if field] == ["new", " york", "den", "ver", " null"]
    assert fields[-2] == "day"


@pytest.mark.parametrize(("answer", "equal"), [
    ({"from": " New York ", "to": "DENVER", "day": None}, True),
    ({"from": "new york", "to": "denver", "day": "null"}, False),  # null equals only null
    ({"from": "new york", "to": "denver"}, False),
    ({"from": "new york", "to": "denver", "day": None, "extra": 1}, False),
    ({"from": "new york", "to": "boston", "day": None}, False),
])
def test_every_field_must_be_equal_after_trimming_and_case_folding(answer, equal):
    assert same_fields(answer, {"from": "new york", "to": "denver", "day": None}) is equal


def structured_item() -> TaskItem:
    return TaskItem.model_validate_json(json.dumps({
        "id": "atis-1", "task": "atis", "prompt": "Query: ...\nJSON:", "schema": SCHEMA, "stop": ["\n"],
        "answer": {"from": "new york", "to": "denver", "day": None}}))


def test_a_structured_item_keeps_its_object_answer_as_json_text_and_its_schema():
    item = structured_item()
    assert item.is_structured and not item.is_label_task
    assert json.loads(item.answer) == {"from": "new york", "to": "denver", "day": None}
    assert item.keys == ["from", "to", "day"]
    assert item.response_format["json_schema"]["schema"] == SCHEMA


@pytest.mark.parametrize(("text", "correct"), [
    (ANSWER, True),
    ('{"from": "New York", "to": "Denver", "day": null}', True),
    ('{"from": "new york", "to": "denver", "day": 3}', False),  # right shape of keys, off-schema value
    ('{"from": "new york", "to": "denver", "day": null', False),  # does not parse
    ("", False),
])
def test_a_structured_answer_is_correct_only_when_it_parses_fits_and_matches(text, correct):
    assert is_correct(structured_item(), text) is correct
