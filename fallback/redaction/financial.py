"""Finders for payment data: card numbers (Luhn) and IBANs (ISO 13616 mod-97 and registered length).

Both accept any grouping people type (spaces, dashes, dots; IBANs in any case and any group size) because
the check rule, not the layout, decides: a candidate is trimmed to its longest prefix that passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from fallback.redaction.checks import cn_resident_id_is_valid, iban_is_valid, luhn_is_valid, nir_is_valid
from fallback.redaction.spans import Match, has_digit, longest_valid_prefix

_IBAN = re.compile(r"(?i)(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,32}(?![A-Za-z0-9])")


_IBAN_GATE = re.compile(r"[A-Za-z][A-Za-z]\d\d")
_CARD_GATE = re.compile(r"\d(?:[ .-]?\d){12}")


def find_ibans(text: str) -> Iterator[Match]:
    if not has_digit(text):
        return
    if not _IBAN_GATE.search(text):
        return
    for m in _IBAN.finditer(text):
        end = longest_valid_prefix(text, m, lambda v: iban_is_valid(v.replace("-", "")))
        if end is not None:
            yield Match(m.start(), end, re.sub(r"[ -]", "", text[m.start():end]).upper())


_DIGIT_RUN = re.compile(r"(?<![\w.,])\d+(?:[ .-]\d+)*(?![\w])")
_DIGITS = re.compile(r"\d+")


def _card_shaped(groups: list[str]) -> bool:
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if len(groups) == 1:
        return True
    return len(groups[0]) == 4 and all(3 <= len(g) <= 6 for g in groups[1:])


def _national_number(digits: str) -> bool:
    """A French NIR or Chinese ID that passes Luhn by chance: no card brand starts like either, so the
    national_id finder takes it under its own kind."""
    return (len(digits) == 15 and digits[0] in "1278" and nir_is_valid(digits)) or \
        (len(digits) == 18 and cn_resident_id_is_valid(digits))


def _card_in(groups: list[re.Match[str]], first: int) -> int | None:
    """Index one past the last group of the longest card starting at group ``first``, or None."""
    for last in range(min(len(groups), first + 5), first, -1):
        chosen = [g.group() for g in groups[first:last]]
        digits = "".join(chosen)
        if _card_shaped(chosen) and luhn_is_valid(digits) and not _national_number(digits):
            return last
    return None


_IBAN_HEAD = re.compile(r"[A-Za-z]{2}\d{2} \Z")


def find_cards(text: str) -> Iterator[Match]:
    """Digit runs that continue an IBAN-like head (``DE82 0344 ...``) belong to that IBAN, valid or not."""
    if not has_digit(text):
        return
    if not _CARD_GATE.search(text):
        return
    for run in _DIGIT_RUN.finditer(text):
        if _IBAN_HEAD.search(text, max(0, run.start() - 5), run.start()):
            continue
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
