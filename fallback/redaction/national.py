"""Finders for identity documents: national identifiers by their check rules, passport and driving licence
numbers by their label, and dates after birth-date labels.

A scheme whose written form is distinctive (``123-45-6789``, ``AB 12 34 56 C``, ``123.456.789-09``, an
18-digit Chinese ID) is found anywhere; one that is a bare run of digits (a 9-digit SSN, a BSN, a
Steuer-ID) only after its label, because a bare number passes most check rules often enough to redact
order numbers. Every candidate must also pass its scheme's check rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fallback.redaction import checks
from fallback.redaction.spans import Keywords, Match, compact, has_digit

_LEAD = r"(?<![\w.-])(?<!\d )"
_TRAIL = r"(?![\w-]|[.-]\w| \d)"
# Between a label and its value: punctuation, JSON quotes, "number"/"no."/"#", and a copula in a few languages.
_GAP_CHARS = r"[\s:#.\"'=_-]{0,4}"
_LABEL_GAP = (rf"{_GAP_CHARS}(?:(?:number|num|no|nr|n°|#)(?![^\W_])\.?{_GAP_CHARS})?"
              r"(?:(?:is|was|of|es|est|ist|är|è|é|to|:)\s+)?")
_LABEL_START = r"(?<![^\W_])"
_LABEL_STOP = r"(?![^\W_])"


@dataclass(frozen=True)
class Scheme:
    """One identifier: its free-standing written form (or None), its labels, its digit form, its rule."""

    name: str
    check: Callable[[str], bool]
    written: str | None = None
    labels: tuple[str, ...] = ()
    bare: str = r"\d{9}"


_SCHEMES = (
    Scheme("us_ssn", checks.ssn_is_valid, r"\d{3}(?P<ssn_sep>[- ])\d{2}(?P=ssn_sep)\d{4}",
           ("ssn", "social security", "social security number"), r"\d{3}[- ]?\d{2}[- ]?\d{4}"),
    Scheme("uk_nino", checks.nino_is_valid, r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]|[a-z]{2}\d{6}[a-d]",
           ("nino", "ni number", "national insurance", "national insurance number"), r"[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]"),
    Scheme("ca_sin", checks.sin_is_valid, r"\d{3}(?P<sin_sep>[- ])\d{3}(?P=sin_sep)\d{3}", ("sin", "social insurance", "social insurance number"),
           r"\d{3}[- ]?\d{3}[- ]?\d{3}"),
    Scheme("fr_nir", checks.nir_is_valid, r"[1-478] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}"),
    Scheme("it_codice_fiscale", checks.codice_fiscale_is_valid,
           r"(?i:[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-EHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z])"),
    Scheme("es_dni", checks.dni_is_valid, r"(?:\d{8}|[XYZ]\d{7})-?[A-Z]"),
    Scheme("br_cpf", checks.cpf_is_valid, r"\d{3}\.\d{3}\.\d{3}-\d{2}", ("cpf",), r"\d{3}\.?\d{3}\.?\d{3}-?\d{2}"),
    Scheme("cn_resident_id", checks.cn_resident_id_is_valid, r"\d{17}[\dX]"),
    Scheme("in_aadhaar", checks.aadhaar_is_valid, r"[2-9]\d{3}(?P<uid_sep>[ -])\d{4}(?P=uid_sep)\d{4}", ("aadhaar", "uid", "uidai"),
           r"\d{4}[ -]?\d{4}[ -]?\d{4}"),
    Scheme("jp_my_number", checks.my_number_is_valid, None, ("my number", "マイナンバー", "個人番号", "individual number"),
           r"\d{4}[ -]?\d{4}[ -]?\d{4}"),
    Scheme("de_tax_id", checks.de_tax_id_is_valid, None,
           ("steuer id", "steuer identifikationsnummer", "steueridentifikationsnummer", "idnr", "tax id", "tin"),
           r"\d{2} ?\d{3} ?\d{3} ?\d{3}"),
    Scheme("nl_bsn", checks.bsn_is_valid, None, ("bsn", "burgerservicenummer", "sofinummer"), r"\d{4}\.?\d{2}\.?\d{3}|\d{9}"),
    Scheme("se_personnummer", checks.personnummer_is_valid, r"(?:19|20)?\d{6}[-+]\d{4}", ("personnummer",),
           r"(?:19|20)?\d{6}[-+]?\d{4}"),
    Scheme("pl_pesel", checks.pesel_is_valid, None, ("pesel",), r"\d{11}"),
)


def _scheme_key(scheme: Scheme, value: str) -> str:
    digits = compact(value)
    return digits[2:] if scheme.name == "se_personnummer" and len(digits) == 12 else digits


def _combined(parts: dict[str, str], flags: str = "") -> re.Pattern[str]:
    """One alternation with a named group per scheme: one pass over the text instead of one per scheme."""
    return re.compile(flags + "|".join(f"(?P<{name}>{body})" for name, body in parts.items()))


_BY_NAME = {scheme.name: scheme for scheme in _SCHEMES}
_WRITTEN = re.compile(_LEAD + "(?:" + _combined({s.name: s.written for s in _SCHEMES if s.written}).pattern
                      + ")" + _TRAIL)
_WRITTEN_NAMES = [s.name for s in _SCHEMES if s.written]
_LABELS = Keywords([label for s in _SCHEMES for label in s.labels])
_SCHEME_OF_LABEL = {variant: s for s in _SCHEMES for label in s.labels
                    for variant in (label, label.replace(" ", "_"), label.replace(" ", "-"), label.replace(" ", ""))}
_VALUE_AFTER_LABEL = {s.name: re.compile(f"{_LABEL_GAP}(?P<value>{s.bare}){_TRAIL}", re.IGNORECASE)
                      for s in _SCHEMES if s.labels}
# Gates: a written form needs six digits close together, or the codice fiscale's letter-digit pattern.
_WRITTEN_GATES = (re.compile(r"\d(?:[ .+-]?\d){5}"), re.compile(r"[A-Za-z]\d\d[A-Za-z]\d\d[A-Za-z]"))


def _checked(scheme: Scheme, start: int, value: str) -> Match | None:
    key = _scheme_key(scheme, value)
    return Match(start, start + len(value), key) if scheme.check(key) else None


def find_national_ids(text: str) -> Iterator[Match]:
    if not has_digit(text):
        return
    for start, end, label in _LABELS.finditer(text):
        scheme = _SCHEME_OF_LABEL[label]
        value = _VALUE_AFTER_LABEL[scheme.name].match(text, end)
        found = value and _checked(scheme, value.start("value"), value.group("value"))
        if found:
            yield found
    if not any(gate.search(text) for gate in _WRITTEN_GATES):
        return
    for m in _WRITTEN.finditer(text):
        name = next(name for name in _WRITTEN_NAMES if m.group(name) is not None)
        found = _checked(_BY_NAME[name], m.start(), m.group())
        if found:
            yield found


# ---------------------------------------------------------------- documents by label

_PASSPORT_LABELS = Keywords(["passport", "passeport", "pasaporte", "passaporto", "reisepass", "paspoort",
                             "passaporte", "passport number", "passport no"])
_PASSPORT_VALUE = re.compile(_LABEL_GAP + r"(?P<value>(?=[A-Z]{0,3}\d)[A-Z0-9]{6,10})(?![\w-])", re.IGNORECASE)
_LICENCE_LABELS = Keywords([
    "driving licence", "driving license", "driver's license", "driver's licence", "drivers license",
    "drivers licence", "driver license", "driver licence", "dl", "licence", "license", "führerschein",
    "permis de conduire", "permiso de conducir", "patente di guida", "carteira de motorista", "cnh", "rijbewijs"])
_LICENCE_VALUE = re.compile(
    _LABEL_GAP + r"(?P<value>(?=[A-Z0-9-]*\d)[A-Z0-9]{2,}(?:[ -](?=[A-Z]{0,4}\d)[A-Z0-9]+){0,4})(?![\w-])",
    re.IGNORECASE)


def _labelled(text: str, labels: Keywords, value: re.Pattern[str]) -> Iterator[re.Match[str]]:
    for _, end, _ in labels.finditer(text):
        m = value.match(text, end)
        if m:
            yield m


def find_passports(text: str) -> Iterator[Match]:
    if not has_digit(text):
        return
    for m in _labelled(text, _PASSPORT_LABELS, _PASSPORT_VALUE):
        yield Match(m.start("value"), m.end("value"), compact(m.group("value")))


def find_driving_licences(text: str) -> Iterator[Match]:
    if not has_digit(text):
        return
    for m in _labelled(text, _LICENCE_LABELS, _LICENCE_VALUE):
        value = m.group("value")
        if 5 <= len(compact(value)) <= 20 and sum(ch.isdigit() for ch in value) >= 3:
            yield Match(m.start("value"), m.end("value"), compact(value))


# ---------------------------------------------------------------- dates of birth

_MONTHS = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
           r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_DATE = (rf"\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:\d{{4}}|\d{{2}})"
         rf"|{_DAY}(?: of)? {_MONTHS},? \d{{4}}|{_MONTHS} {_DAY},? \d{{4}}")
_BIRTH_LABELS = Keywords([
    "born", "born on", "date of birth", "birth date", "birthdate", "birthday", "dob", "d.o.b", "d.o.b.",
    "geboren", "geboren am", "geburtsdatum", "né le", "née le", "ne le", "date de naissance",
    "fecha de nacimiento", "nacido el", "nacida el", "data di nascita", "nato il", "nata il",
    "data de nascimento", "geboortedatum"])
_BIRTH_VALUE = re.compile(rf"[\s:=\"'-]{{0,4}}(?:(?:is|was|on)\s+)?(?P<value>{_DATE})(?![\w/.-]\d)", re.IGNORECASE)


def find_birth_dates(text: str) -> Iterator[Match]:
    if not has_digit(text):
        return
    for m in _labelled(text, _BIRTH_LABELS, _BIRTH_VALUE):
        yield Match(m.start("value"), m.end("value"), m.group("value").lower())
