"""Finders for contact and network identifiers: e-mail addresses, phone numbers, IP and MAC addresses.

    email   local@domain.tld
    phone   +CC international numbers (8-15 digits), (area) numbers, NANP 415-555-0132, and national
            numbers with a leading trunk 0 (10-11 digits, e.g. 020 7946 0958)
    ip      IPv4 and IPv6 addresses that the ``ipaddress`` module accepts (IPv6 needs 2+ groups and 4+ hex
            digits, so ``::1`` and ``x[1::2]`` stay)
    mac     six hex pairs joined by ``:`` or ``-`` (one separator throughout), or Cisco's ``0011.2233.4455``;
            all-equal bytes (``00:00:00:00:00:00``, broadcast) stay
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

from fallback.redaction.spans import Match, has_digit, longest_valid_prefix

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])")


def find_emails(text: str) -> Iterator[Match]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield Match(m.start(), m.end(), m.group().lower())


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


_IPV4_GATE = re.compile(r"\d\.\d")


def find_ips(text: str) -> Iterator[Match]:
    """IPv6 first, so an IPv4-mapped address (``::ffff:10.0.0.1``) is taken whole."""
    if not has_digit(text):
        return
    for m in _IPV6.finditer(text) if text.count(":") >= 2 else ():
        if _ipv6_is_valid(m.group()):
            yield Match(m.start(), m.end(), str(ipaddress.IPv6Address(m.group())))
    for m in _IPV4.finditer(text) if _IPV4_GATE.search(text) else ():
        try:
            yield Match(m.start(), m.end(), str(ipaddress.IPv4Address(m.group())))
        except ValueError:
            continue


_MAC = re.compile(r"(?i)(?<![\w:.-])(?:[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}"
                  r"|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})(?![\w:-]|\.\w)")


_MAC_GATES = (re.compile(r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]"), re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\."))


def find_macs(text: str) -> Iterator[Match]:
    """All-digit dotted triples (``2024.0115.1234``) are left to other kinds: a Cisco MAC has hex letters."""
    if not any(gate.search(text) for gate in _MAC_GATES):
        return
    for m in _MAC.finditer(text):
        key = re.sub(r"[:.-]", "", m.group()).lower()
        dotted_digits = m.group(1) is None and key.isdigit()
        if len(set(key)) > 1 and not dotted_digits:
            yield Match(m.start(), m.end(), key)


_BEFORE = r"(?<![\w+.()/-])(?<!\d )"
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


_PHONE_GATE = re.compile(r"\d(?:[\s().-]{0,3}\d){6}")


def find_phones(text: str) -> Iterator[Match]:
    if not has_digit(text):
        return
    if not _PHONE_GATE.search(text):
        return
    for pattern, is_valid in _PHONE_RULES:
        for m in pattern.finditer(text):
            end = longest_valid_prefix(text, m, is_valid)
            if end is not None:
                yield Match(m.start(), end, _phone_key(text[m.start():end]))
