"""Structured (JSON) answers: which generated characters are field values, and when two answers agree.

A JSON answer's confidence should come from the tokens that carry its values, not from the punctuation and
keys a grammar forces: ``value_owners`` maps every character of a (possibly unfinished) top-level JSON object
to the key whose value it belongs to, or None for braces, keys, colons, quotes and commas. It reads left to
right and never looks ahead, so the owners of a prefix are those of the whole text cut short: the running
decision reads the same spans while the answer is still being generated.

``same_fields`` is the task's correctness: every field equal, strings case-folded and trimmed, ``null``
equal only to ``null``. Pure functions, no model.
"""

from __future__ import annotations

import json


class _Scanner:
    """A character-level reader of one flat JSON object; nested values are owned whole by their key."""

    def __init__(self) -> None:
        self.state, self.key, self.key_chars = "start", "", []
        self.escaped, self.depth, self.nested_string = False, 0, False

    def feed(self, ch: str) -> str | None:
        handler = getattr(self, f"_{self.state}")
        return handler(ch)

    def _start(self, ch: str) -> None:
        if ch == "{":
            self.state = "key"

    def _key(self, ch: str) -> None:
        if ch == '"':
            self.state, self.key_chars = "key_string", []

    def _key_string(self, ch: str) -> None:
        if self.escaped:
            self.escaped = False
            self.key_chars.append(ch)
        elif ch == "\\":
            self.escaped = True
        elif ch == '"':
            self.state, self.key = "colon", "".join(self.key_chars)
        else:
            self.key_chars.append(ch)

    def _colon(self, ch: str) -> None:
        if ch == ":":
            self.state = "value"

    def _value(self, ch: str) -> str | None:
        if ch == '"':
            self.state = "value_string"
            return None
        if ch in "{[":
            self.state, self.depth = "nested", 1
            return self.key
        if ch.isspace():
            return None
        self.state = "literal"
        return self.key

    def _value_string(self, ch: str) -> str | None:
        if self.escaped:
            self.escaped = False
        elif ch == "\\":
            self.escaped = True
        elif ch == '"':
            self.state = "after"
            return None
        return self.key

    def _literal(self, ch: str) -> str | None:
        if ch in ",}":
            return self._after(ch)
        return None if ch.isspace() else self.key

    def _nested(self, ch: str) -> str:
        if self.nested_string:
            if self.escaped:
                self.escaped = False
            elif ch == "\\":
                self.escaped = True
            elif ch == '"':
                self.nested_string = False
        elif ch == '"':
            self.nested_string = True
        elif ch in "{[":
            self.depth += 1
        elif ch in "}]":
            self.depth -= 1
            if self.depth == 0:
                self.state = "after"
        return self.key

    def _after(self, ch: str) -> None:
        if ch == ",":
            self.state = "key"
        elif ch == "}":
            self.state = "end"

    def _end(self, ch: str) -> None:
        return None


def value_owners(text: str) -> list[str | None]:
    """For each character of ``text``, the top-level key whose value it is part of (None elsewhere).

    String values own the characters between their quotes; other values their literal characters."""
    scanner = _Scanner()
    return [scanner.feed(ch) for ch in text]


def token_fields(pieces: list[str]) -> list[str | None]:
    """For each generated token (its text), the key whose value it carries, or None for structure only."""
    owners = value_owners("".join(pieces))
    fields, position = [], 0
    for piece in pieces:
        owned = [owner for owner in owners[position:position + len(piece)] if owner is not None]
        fields.append(owned[0] if owned else None)
        position += len(piece)
    return fields


def _normal(value: object) -> object:
    return value.strip().casefold() if isinstance(value, str) else value


def same_fields(answer: dict, gold: dict) -> bool:
    """Every field of ``gold`` equal in ``answer`` (and no others): strings case-folded and trimmed, ``null``
    equal only to ``null``, numbers by value (``True`` is not 1)."""
    if set(answer) != set(gold):
        return False
    for key, expected in gold.items():
        got = answer[key]
        if (got is None) != (expected is None) or isinstance(got, bool) != isinstance(expected, bool):
            return False
        if _normal(got) != _normal(expected):
            return False
    return True


def parse_object(text: str) -> dict | None:
    """The JSON object ``text`` holds, or None when it does not parse to an object."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
