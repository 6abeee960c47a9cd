"""Replace personal data and secrets with placeholders before a prompt leaves the device.

Each kind has a finder that proposes spans and a check that rejects look-alikes, so ordinary numbers
(years, prices, order numbers) survive:

    secret  sk-..., AKIA/ASIA..., ghp_/gho_/ghs_..., github_pat_..., xox[abprs]-..., "Bearer <token>",
            and values after key/token/secret/password then ``=`` or ``:`` on the same line (16+
            characters with Shannon entropy >= 3.0 bits/char; any 6+ characters after password/pwd)
    email   local@domain.tld
    iban    2 letters + 2 check digits + up to 30 characters, kept only if the ISO 13616 mod-97 check is 1
    card    13-19 digits, contiguous or in groups (first group of 4), kept only if Luhn-valid
    ip      IPv4 and IPv6 addresses that the ``ipaddress`` module accepts (IPv6 needs 2+ groups and 4+ hex digits,
            so ``::1`` and ``x[1::2]`` stay)
    phone   +CC international numbers (8-15 digits), (area) numbers, NANP 415-555-0132, and national
            numbers with a leading trunk 0 (10-11 digits, e.g. 020 7946 0958)

Kinds are tried in that order and a later kind never touches text an earlier one claimed. Placeholders are
numbered per kind, ``[EMAIL_1]``, ``[CARD_2]``; within one ``Redactor`` (one request) the same value always
gets the same placeholder. Counts are occurrences, not distinct values. Uppercase IBANs only; tool-call
arguments are left alone because replacing a bare JSON number would break the JSON.
"""

from __future__ import annotations

import bisect
import copy
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fallback.errors import ConfigError

ALL_KINDS: tuple[str, ...] = ("secret", "email", "iban", "card", "ip", "phone")
_LABELS = {"secret": "SECRET", "email": "EMAIL", "iban": "IBAN", "card": "CARD", "ip": "IP", "phone": "PHONE"}


@dataclass(frozen=True)
class Match:
    """One span to replace; ``key`` is the normalised value that picks the placeholder."""

    start: int
    end: int
    key: str


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


# ---------------------------------------------------------------- secrets

_SECRET_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9_-])(?:sk-[A-Za-z0-9_-]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,})(?![A-Za-z0-9_-])")
_SECRET_BEARER = re.compile(r"\bBearer\s+(?P<value>[A-Za-z0-9._~+/=-]{16,})")
# Anchored on the keyword itself (no scan over a name prefix), so the search stays linear in the text.
_SECRET_ASSIGNED = re.compile(
    r"(?i)(?P<name>key|token|secret|password|passwd|pwd)(?![a-z0-9])"
    r"[\"']?[ \t]*[:=][ \t]*[\"']?(?P<value>[^\s\"',;]+)")
_PASSWORD_NAME = re.compile(r"(?i)(password|passwd|pwd)$")


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s character distribution."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _looks_secret(name: str, value: str) -> bool:
    if _PASSWORD_NAME.search(name):
        return len(value) >= 6
    return len(value) >= 16 and shannon_entropy(value) >= 3.0


def find_secrets(text: str) -> Iterator[Match]:
    for m in _SECRET_PREFIXED.finditer(text):
        yield Match(m.start(), m.end(), m.group())
    for m in _SECRET_BEARER.finditer(text):
        yield Match(m.start("value"), m.end("value"), m.group("value"))
    for m in _SECRET_ASSIGNED.finditer(text):
        if _looks_secret(m.group("name"), m.group("value")):
            yield Match(m.start("value"), m.end("value"), m.group("value"))


# ---------------------------------------------------------------- email

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])")


def find_emails(text: str) -> Iterator[Match]:
    for m in _EMAIL.finditer(text):
        yield Match(m.start(), m.end(), m.group().lower())


# ---------------------------------------------------------------- IBAN

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}(?![A-Za-z0-9])")
_TOKEN = re.compile(r"[A-Za-z0-9]+")


def iban_is_valid(value: str) -> bool:
    """ISO 13616: 15-34 characters whose rearranged numeric form is 1 modulo 97."""
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _longest_valid_prefix(text: str, m: re.Match[str], is_valid: Callable[[str], bool]) -> int | None:
    """End of the longest token-aligned prefix of ``m`` that passes ``is_valid``, or None."""
    ends = [m.start() + t.end() for t in _TOKEN.finditer(m.group())]
    for end in reversed(ends):
        if is_valid(text[m.start():end]):
            return end
    return None


def find_ibans(text: str) -> Iterator[Match]:
    for m in _IBAN.finditer(text):
        end = _longest_valid_prefix(text, m, iban_is_valid)
        if end is not None:
            yield Match(m.start(), end, text[m.start():end].replace(" ", ""))


# ---------------------------------------------------------------- payment cards

_DIGIT_RUN = re.compile(r"(?<![\w.,])\d+(?:[ -]\d+)*(?![\w])")
_DIGITS = re.compile(r"\d+")


def luhn_is_valid(digits: str) -> bool:
    total = 0
    for position, ch in enumerate(reversed(digits)):
        value = int(ch) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _card_shaped(groups: list[str]) -> bool:
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if len(groups) == 1:
        return True
    return len(groups[0]) == 4 and all(3 <= len(g) <= 6 for g in groups[1:])


def _card_in(groups: list[re.Match[str]], first: int) -> int | None:
    """Index one past the last group of the longest card starting at group ``first``, or None."""
    for last in range(min(len(groups), first + 5), first, -1):
        chosen = [g.group() for g in groups[first:last]]
        if _card_shaped(chosen) and luhn_is_valid("".join(chosen)):
            return last
    return None


def find_cards(text: str) -> Iterator[Match]:
    for run in _DIGIT_RUN.finditer(text):
        groups = list(_DIGITS.finditer(text, run.start(), run.end()))
        first = 0
        while first < len(groups):
            last = _card_in(groups, first)
            if last is None:
                first += 1
                continue
            start, end = groups[first].start(), groups[last - 1].end()
            yield Match(start, end, "".join(g.group() for g in groups[first:last]))
            first = last


# ---------------------------------------------------------------- IP addresses

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])")


def _ipv6_is_valid(value: str) -> bool:
    groups = [g for g in value.split(":") if g]
    if len(groups) < 2 or sum(len(g) for g in groups) < 4:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def find_ips(text: str) -> Iterator[Match]:
    """IPv6 first, so an IPv4-mapped address (``::ffff:10.0.0.1``) is taken whole."""
    for m in _IPV6.finditer(text):
        if _ipv6_is_valid(m.group()):
            yield Match(m.start(), m.end(), str(ipaddress.IPv6Address(m.group())))
    for m in _IPV4.finditer(text):
        try:
            yield Match(m.start(), m.end(), str(ipaddress.IPv4Address(m.group())))
        except ValueError:
            continue


# ---------------------------------------------------------------- phone numbers

_BEFORE = r"(?<![\w+.()/-])"
_AFTER = r"(?!\w|[.-]\d)"


def _digit_count(value: str) -> int:
    return sum(ch.isdigit() for ch in value)


_PHONE_RULES: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    (re.compile(_BEFORE + r"\+[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,5}){1,6}" + _AFTER),
     lambda v: 8 <= _digit_count(v) <= 15),
    (re.compile(_BEFORE + r"\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,4}" + _AFTER),
     lambda v: 9 <= _digit_count(v) <= 12),
    (re.compile(_BEFORE + r"\d{3}([ .-])\d{3}\1\d{4}" + _AFTER), lambda v: True),
    (re.compile(_BEFORE + r"0\d{1,4}(?:[ -]\d{2,6}){1,4}" + _AFTER),
     lambda v: 10 <= _digit_count(v) <= 11),
)


def _phone_key(value: str) -> str:
    return ("+" if value.startswith("+") else "") + "".join(ch for ch in value if ch.isdigit())


def find_phones(text: str) -> Iterator[Match]:
    for pattern, is_valid in _PHONE_RULES:
        for m in pattern.finditer(text):
            end = _longest_valid_prefix(text, m, is_valid)
            if end is not None:
                yield Match(m.start(), end, _phone_key(text[m.start():end]))


_FINDERS: dict[str, Callable[[str], Iterable[Match]]] = {
    "secret": find_secrets, "email": find_emails, "iban": find_ibans,
    "card": find_cards, "ip": find_ips, "phone": find_phones,
}


# ---------------------------------------------------------------- replacing

def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The kinds in priority order; an unknown kind raises ConfigError naming the known ones."""
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
        claimed = self._claim(text)
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

    def _claim(self, text: str) -> list[tuple[str, Match]]:
        """Matches of every kind in priority order, dropping any that overlap one already taken."""
        starts: list[int] = []
        taken: list[tuple[str, Match]] = []  # sorted by start and never overlapping
        for kind in self.kinds:
            for match in _FINDERS[kind](text):
                at = bisect.bisect_left(starts, match.start)
                if _overlaps(taken, at - 1, match) or _overlaps(taken, at, match):
                    continue
                starts.insert(at, match.start)
                taken.insert(at, (kind, match))
        return taken

    def _placeholder(self, kind: str, match: Match, text: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        slot = (kind, match.key)
        if slot not in self._placeholders:
            self._distinct[kind] = self._distinct.get(kind, 0) + 1
            self._placeholders[slot] = f"[{_LABELS[kind]}_{self._distinct[kind]}]"
            self._originals[self._placeholders[slot]] = text[match.start:match.end]
        return self._placeholders[slot]


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


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _redact_parts(parts: list[Any], redactor: Redactor) -> list[Any]:
    """Consecutive text parts are joined into one before redaction, so a value split across parts cannot
    slip through as two harmless-looking halves; other parts keep their place."""
    merged: list[Any] = []
    texts: list[str] = []
    for part in [*parts, None]:
        if part is not None and _is_text_part(part):
            texts.append(part["text"])
            continue
        if texts:
            merged.append({"type": "text", "text": redactor.redact("".join(texts))})
            texts = []
        if part is not None:
            merged.append(part)
    return merged
