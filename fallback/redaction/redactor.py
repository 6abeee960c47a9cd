"""Replacing: the kinds in priority order, and a ``Redactor`` that swaps each found span for a placeholder.

Kinds are tried in ``ALL_KINDS`` order and a later kind never touches text an earlier one claimed, so a
private key block is taken whole before anything inside it looks like a card, and a national ID before it
looks like a phone number. Placeholders are numbered per kind, ``[EMAIL_1]``, ``[CARD_2]``; within one
``Redactor`` (one request) the same value always gets the same placeholder, and ``restore`` puts the
originals back into the cloud's answer. Counts are occurrences, not distinct values. Tool-call arguments
are left alone because replacing a bare JSON number would break the JSON.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fallback.errors import ConfigError
from fallback.message_text import is_text_part
from fallback.redaction.addresses import find_addresses
from fallback.redaction.credentials import find_secrets
from fallback.redaction.financial import find_cards, find_ibans
from fallback.redaction.names import find_names
from fallback.redaction.national import find_birth_dates, find_driving_licences, find_national_ids, find_passports
from fallback.redaction.network import find_emails, find_ips, find_macs, find_phones
from fallback.redaction.spans import Match

_FINDERS: dict[str, Callable[[str], Iterable[Match]]] = {
    "secret": find_secrets, "email": find_emails, "iban": find_ibans, "card": find_cards,
    "national_id": find_national_ids, "passport": find_passports, "driving_licence": find_driving_licences,
    "birth_date": find_birth_dates, "mac": find_macs, "ip": find_ips, "phone": find_phones,
    "address": find_addresses, "name": find_names,
}
ALL_KINDS: tuple[str, ...] = tuple(_FINDERS)
_LABELS = {kind: kind.upper() for kind in ALL_KINDS}


@dataclass(frozen=True)
class RedactionResult:
    text: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class RedactedMessages:
    messages: list[dict[str, Any]]
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# ---------------------------------------------------------------- replacing

def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The kinds in priority order; an unknown kind raises ConfigError naming the known ones."""
    if kinds is ALL_KINDS:
        return ALL_KINDS
    wanted = set(kinds)
    unknown = sorted(wanted - set(ALL_KINDS))
    if unknown:
        raise ConfigError(f"unknown redaction kind(s) {unknown}; known kinds: {list(ALL_KINDS)}")
    return tuple(kind for kind in ALL_KINDS if kind in wanted)


@dataclass
class Redactor:
    """Redacts every text of one request so equal values share a placeholder across messages."""

    kinds: tuple[str, ...] = ALL_KINDS
    counts: dict[str, int] = field(default_factory=dict)
    _placeholders: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)
    _distinct: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _originals: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.kinds = check_kinds(self.kinds)

    def redact(self, text: str) -> str:
        claimed = find_spans(text, self.kinds)
        pieces, cursor = [], 0
        for kind, match in claimed:
            pieces += [text[cursor:match.start], self._placeholder(kind, match, text)]
            cursor = match.end
        return "".join(pieces) + text[cursor:]

    def restore(self, text: str) -> str:
        """Put the original values back into ``text`` (for showing a cloud answer to the user)."""
        for placeholder, original in self._originals.items():
            text = text.replace(placeholder, original)
        return text

    def _placeholder(self, kind: str, match: Match, text: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        slot = (kind, match.key)
        if slot not in self._placeholders:
            self._distinct[kind] = self._distinct.get(kind, 0) + 1
            self._placeholders[slot] = f"[{_LABELS[kind]}_{self._distinct[kind]}]"
            self._originals[self._placeholders[slot]] = text[match.start:match.end]
        return self._placeholders[slot]


def find_spans(text: str, kinds: Iterable[str] = ALL_KINDS) -> list[tuple[str, Match]]:
    """Matches of every kind in priority order, sorted by start, dropping any that overlap one already taken."""
    starts: list[int] = []
    taken: list[tuple[str, Match]] = []  # sorted by start and never overlapping
    for kind in check_kinds(kinds):
        for match in _FINDERS[kind](text):
            at = bisect.bisect_left(starts, match.start)
            if _overlaps(taken, at - 1, match) or _overlaps(taken, at, match):
                continue
            starts.insert(at, match.start)
            taken.insert(at, (kind, match))
    return taken


def _overlaps(taken: list[tuple[str, Match]], index: int, match: Match) -> bool:
    if not 0 <= index < len(taken):
        return False
    other = taken[index][1]
    return other.start < match.end and match.start < other.end


def redact(text: str, kinds: Iterable[str] = ALL_KINDS) -> RedactionResult:
    """Redact one text; see the module docstring for what each kind matches."""
    redactor = Redactor(tuple(kinds))
    return RedactionResult(redactor.redact(text), dict(redactor.counts))


def redact_messages(messages: list[dict[str, Any]], kinds: Iterable[str] = ALL_KINDS,
                    *, redactor: Redactor | None = None) -> RedactedMessages:
    """Redact OpenAI chat messages (string content or text parts); the input is not modified.

    A caller's ``redactor`` (its kinds win over ``kinds``) keeps the placeholder mapping for ``restore``;
    its counts add up over every text it has seen.
    """
    redactor = redactor or Redactor(tuple(kinds))
    redacted = copy.deepcopy(messages)
    for message in redacted:
        _redact_content(message, redactor)
    return RedactedMessages(redacted, dict(redactor.counts))


def _redact_content(message: dict[str, Any], redactor: Redactor) -> None:
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = redactor.redact(content)
    elif isinstance(content, list):
        message["content"] = _redact_parts(content, redactor)


def _redact_parts(parts: list[Any], redactor: Redactor) -> list[Any]:
    """Consecutive text parts are joined into one before redaction, so a value split across parts cannot
    slip through as two harmless-looking halves; other parts keep their place."""
    merged: list[Any] = []
    texts: list[str] = []
    for part in [*parts, None]:
        if part is not None and is_text_part(part):
            texts.append(part["text"])
            continue
        if texts:
            merged.append({"type": "text", "text": redactor.redact("".join(texts))})
            texts = []
        if part is not None:
            merged.append(part)
    return merged
