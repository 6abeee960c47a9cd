"""Finder for postal addresses, from two directions: a street line forward, a postcode backward.

Forward: a street line in one of the shapes locales use (``12 Baker Street``, ``rue de Prévost 44`` /
``44, rue de Prévost``, ``Via Roma, 5``, ``ul. Krasickiego 12``, ``Hauptstraße 5``, ``Kerkstraat 12``,
``…県…市…丁目20番1号``, ``…도 …시 …로 12``), then up to three segments of locality and postcode after it.
Backward: a postcode in a shape that is unmistakable (UK ``N33 4AS``, Canada ``H6M 9E7``, US ``VA 04307``,
Australia ``NSW 2000``) or a numeric one next to a place name (``24158 Ochsenfurt``, ``Badajoz, 18068``),
then the address words before it (capitalised words, numbers, unit words, street types) back to the first
ordinary lowercase word. An address is kept only if it holds a house number besides the postcode, which
keeps "Main Street" in prose, "12 monkeys" and a bare "Paris 75001" alike untouched.

The street types are ones in common use (USPS Publication 28, Royal Mail, Australia Post) and the words
that the major European languages put before or inside street names; no list of real street or place names
is shipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from fallback.redaction.spans import Keywords, Match, has_digit, trie_pattern

_SUFFIXES = (
    "Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Court|Ct|Boulevard|Blvd|Way|Place|Pl|Square|Sq|Terrace"
    "|Close|Crescent|Cres|Gardens|Grove|Park|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Cove|Village|Walk|Row"
    "|Mews|Hill|Hills|Heights|Green|Gate|Rise|View|Vale|Valley|Ridge|Point|Plaza|Pike|Path|Pass|Oval|Orchard"
    "|Meadow|Meadows|Manor|Mall|Loop|Lodge|Lake|Junction|Island|Harbor|Harbour|Haven|Glen|Fork|Ford|Field"
    "|Fields|Falls|Expressway|Estate|Estates|Crossing|Creek|Crest|Corner|Common|Center|Centre|Causeway"
    "|Canyon|Brook|Bridge|Branch|Bend|Beach|Bay|Bypass|Arcade|Alley|Turnpike|Trace|Track|Summit|Station"
    "|Springs|Spring|Shore|Shores|Run|Route|Parade|Esplanade|Promenade|Broadway|Wharf|Wynd|Chase|Quay"
    "|Approach|Circus|Circuit|Freeway|Landing|Mount|Mountain|Motorway|Square|Flats|Hollow|Knoll"
)
_UPPER = "A-ZÀ-ÖØ-ÞĀĂĄĆČĎĐĒĖĘĚĞĢĪĮİĶĹĻĽŁŃŅŇŌŐŒŔŘŚŞŠŢŤŪŮŰŲŹŻŽ"
_CAP = rf"[{_UPPER}][^\W\d_][\w'’.-]*"
_NUMBER = r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,4}[A-Za-z]?)?"
_UNIT = r"(?:,?[ \t]+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Room|#)[ \t]*#?\w{1,6})?"
_STREET_WORD = rf"(?:{_CAP}|[NSEW]\.?|\d{{1,3}}(?:st|nd|rd|th))"
# Suffixes as a trie of their Title, lower and UPPER forms: far cheaper than an (?i) alternation of 150 words.
_SUFFIX_TRIE = trie_pattern(sorted({form for word in _SUFFIXES.split("|") for form in (word, word.lower(), word.upper())}))
_EN_STREET = re.compile(
    rf"\d{{1,5}}[A-Za-z]?(?:[/-]\d{{1,4}}[A-Za-z]?)?[ \t]+(?:{_STREET_WORD}[ \t]+){{1,4}}?{_SUFFIX_TRIE}\b\.?{_UNIT}")
_PREFIX_TYPES = Keywords([
    "rue", "boulevard", "bd", "chemin", "allée", "impasse", "quai", "cours", "voie", "avenue", "av", "place",
    "route", "calle", "c", "avenida", "avda", "paseo", "plaza", "camino", "carretera", "ronda", "urbanización",
    "vía", "pasaje", "callejón", "cañada", "glorieta", "alameda", "rambla", "travesía", "cuesta", "via",
    "viale", "piazza", "piazzale", "corso", "largo", "vicolo", "strada", "contrada", "borgo", "canale",
    "rotonda", "stretto", "incrocio", "rua", "travessa", "praça", "viela", "estrada", "rodovia", "vereda",
    "ladeira", "esplanada", "residencial", "condomínio", "pátio", "ul", "al", "pl", "os", "aleja", "ulica",
    "plac"])
_AFTER_PREFIX_TYPE = re.compile(
    rf"\.?(?:[ \t]+(?:{_CAP}|de|del|della|di|da|do|dos|das|la|le|les|du|des|y|e|d'\w+)){{1,5}}?"
    rf"(?:,?[ \t]+(?:n[º°o]\.?[ \t]*)?{_NUMBER})(?![\w])")
_NUMBER_BEFORE = re.compile(rf"{_NUMBER},?[ \t]+\Z")
_COMPOUND_GATE = re.compile(trie_pattern([
    "straße", "strasse", "str.", "weg", "allee", "platz", "gasse", "ring", "damm", "ufer", "chaussee", "pfad",
    "steig", "straat", "laan", "gracht", "kade", "singel", "dijk", "plein", "gatan", "vägen", "gränd", "torget",
    "stigen", "backen", "vej", "gade", "pad", "hof", "dreef", "markt"]) + r"[ \t]+\d{1,5}[A-Za-z]?(?:[/-]\d{1,4})?(?![\w])")
_CJK_STREET = re.compile(
    r"[\u4e00-\u9fff\u3040-\u30ff]{1,8}(?:都|道|府|県|省|自治区|特别行政区|市)"
    r"[\u4e00-\u9fff\u3040-\u30ffA-Za-z0-9０-９-]{2,40}"
    r"(?:[ \u3000][\u3040-\u30ff\u4e00-\u9fff\uff00-\uffefA-Za-z]+\d*)?(?:[ \u3000]\d{6})?"
    r"|[\uac00-\ud7a3]+(?:도|시)(?:[ \t]+[\uac00-\ud7a3\d]+(?:시|군|구|읍|면|동|가|로|길|거리)){1,3}[ \t]*\d+(?:-\d+)?"
    r"(?:[ \t]*\([\uac00-\ud7a3\d]+\))?")

# ---------------------------------------------------------------- postcodes and what precedes them

_AU_STATES = "NSW|VIC|QLD|WA|SA|TAS|ACT|NT"
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7a3]")
# Each starts with a plain character class, so the regex engine skips straight to where one can start.
_STRONG_POSTCODE = re.compile(
    r"[A-Z](?:[A-Z]?\d[A-Z\d]? ?\d[A-Z]{2}(?![\w])"                   # UK
    r"|\d[A-Z] ?\d[A-Z]\d(?![\w])"                                    # Canada
    r"|[A-Z],? \d{5}(?:-\d{4})?(?![\w-])"                              # US state + ZIP
    r"|[A-Z]{0,2},? \d{4}(?![\w]))")                                   # Australia: state checked below
_AU_STATE_SET = set(_AU_STATES.split("|"))


def _is_strong_postcode(value: str) -> bool:
    head, _, digits = value.partition(" ")
    return not (len(digits) == 4 and digits.isdigit()) or head.rstrip(",") in _AU_STATE_SET


_NUMERIC_POSTCODE = re.compile(
    r"\d(?:\d{4}(?:-\d{3})?|\d{7}|\d-\d{3}|\d\d \d\d|\d{3} ?[A-Z]{2}(?![a-z])|\d{3,5})(?![\d-])")
# A place word ends without a full stop unless it is a short abbreviation ("St. Albans"), so a sentence
# that goes on after "Berlin." is not taken for more of the place.
_PLACE_WORD = rf"(?:[{_UPPER}][^\W\d_][\w'’-]*(?![\w'’-]|\.\w)|[{_UPPER}][a-z]{{0,2}}\.)"
_PLACE = (rf"{_PLACE_WORD}(?:[ \t-](?:{_PLACE_WORD}|de|da|do|das|dos|la|le|del|am|an|der|sur|upon|on))*"
          r"(?:[ \t]*(?:\([A-Z]{2}\)|/[ \t]*[A-Z]{2}(?![\w])))?")
_PLACE_AFTER = re.compile(rf"(?:[ \t]*(?:\\n|\r?\n|,)[ \t]*|[ \t]+){_PLACE}")
_PLACE_BEFORE = re.compile(rf"{_CAP}[ \t]*(?:,[ \t]*|-|[ \t])\Z")
_BACK_WORDS = {"de", "da", "do", "das", "dos", "del", "della", "di", "la", "le", "les", "du", "des", "y", "e",
               "of", "the", "van", "von", "der", "den", "am", "an", "apt", "apt.", "no.", "nº", "h.no.", "piano",
               "puerta", "esc.", "bajo", "sur", "upon"}
_HOUSE_NUMBER = re.compile(r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,4}[A-Za-z]?)?|\d{1,3}[ºª°]")
_STREET_TYPES = {word.lower() for word in _SUFFIXES.split("|")} | set(_PREFIX_TYPES.phrases) - {"c", "al", "pl", "os"}
_IN_STREET = Keywords(["h.no", "house no", "flat no", "plot no"])
_AFTER_IN_LABEL = re.compile(rf"\.?[ \t]*[\w/-]+,(?:[ \t]*{_CAP}(?:[ \t]+{_CAP}){{0,3}},?)+")


def _is_back_token(token: str) -> bool:
    lowered = token.lower().rstrip(".,")
    return token[0].isupper() or token[0].isdigit() or lowered in _BACK_WORDS or lowered in _STREET_TYPES


_TOKEN_CHARS = "'’./ºª°#-"


def _token_before(text: str, pos: int) -> tuple[int, str] | None:
    """The word that ends before ``pos`` past spaces, commas and newlines (JSON's escaped ``\\n`` too)."""
    end = pos
    while end > 0 and (text[end - 1] in " \t,\r\n" or text[end - 2:end] == "\\n"):
        end -= 2 if text[end - 2:end] == "\\n" else 1
    start = end
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in _TOKEN_CHARS):
        if text[start - 2:start] == "\\n":
            break
        start -= 1
    return (start, text[start:end]) if start < end and pos - end <= 4 else None


def _start_before(text: str, end: int) -> tuple[int, bool]:
    """Start of the address words that end at ``end``, and whether they hold a house number or street type."""
    start, has_number = end, False
    for _ in range(16):
        found = _token_before(text, start)
        if not found or not _is_back_token(found[1]):
            break
        start, token = found
        bare = token.lower().rstrip(".,")
        has_number = has_number or bool(_HOUSE_NUMBER.fullmatch(bare)) or bare in _STREET_TYPES
    return start, has_number


def _starts_word(text: str, at: int) -> bool:
    """Nothing alphanumeric just before ``at`` (a JSON-escaped newline counts as a break)."""
    return at == 0 or not text[at - 1].isalnum() or text[at - 2:at] == "\\n"


_AFTER_PREPOSITION = re.compile(r"(?i)\b(?:in|since|by|until|from|of|before|after)[ \t]+\Z")


def _looks_like_year(value: str) -> bool:
    return len(value) == 4 and value.isdigit() and 1900 <= int(value) <= 2099


def _postcode_blocks(text: str) -> Iterator[tuple[int, int]]:
    for pattern, needs_place in ((_STRONG_POSTCODE, False), (_NUMERIC_POSTCODE, True)):
        for m in pattern.finditer(text):
            if not _starts_word(text, m.start()) or (not needs_place and not _is_strong_postcode(m.group())):
                continue
            after = _PLACE_AFTER.match(text, m.end())
            before = _PLACE_BEFORE.search(text, max(0, m.start() - 40), m.start())
            if needs_place and not (after or before) or _looks_like_year(m.group()):
                continue
            start, has_number = _start_before(text, m.start())
            if has_number and start < m.start():
                yield start, after.end() if after else m.end()


def _street_lines(text: str) -> Iterator[tuple[int, int]]:
    for m in _EN_STREET.finditer(text):
        if _starts_word(text, m.start()) and not (m.start() and text[m.start() - 1] in "/.,-") \
                and not (_looks_like_year(m.group().split()[0]) and _AFTER_PREPOSITION.search(text, 0, m.start())):
            yield m.start(), m.end()
    for start, end, _ in _PREFIX_TYPES.finditer(text):
        after = _AFTER_PREFIX_TYPE.match(text, end)
        number = _NUMBER_BEFORE.search(text, max(0, start - 12), start)
        if after and (text[start].isupper() or number or after.group().strip()[:1].isupper()):
            yield (number.start() if number else start), after.end()
    lowered = text.lower()
    for m in _COMPOUND_GATE.finditer(lowered) if len(lowered) == len(text) else ():
        word = re.search(rf"(?:{_CAP}[ \t-])?[\w'’-]*\Z", text[max(0, m.start() - 60):m.start()])
        start = m.start() - len(word.group()) if word else m.start()
        if start < m.start() and text[start].isupper():
            yield start, m.end()
    for m in _CJK_STREET.finditer(text) if _CJK.search(text) else ():
        if any(ch.isdigit() for ch in m.group()):
            yield m.start(), m.end()
    for _, end, _ in _IN_STREET.finditer(text):
        m = _AFTER_IN_LABEL.match(text, end)
        if m:
            yield end - len("h.no") if text[end - 4:end].lower() == "h.no" else end, m.end()


_TAIL_SEP = r"(?:[ \t]*,[ \t]*|[ \t]*(?:\\n|\r?\n)[ \t]*|[ \t]+|[ \t]*-[ \t]*)"
_TAIL_SEGMENT = re.compile(
    rf"{_TAIL_SEP}(?:(?:{_STRONG_POSTCODE.pattern}|{_NUMERIC_POSTCODE.pattern})(?:{_TAIL_SEP}?{_PLACE})?|{_PLACE})")


def _tail_end(text: str, end: int) -> int:
    """End of the locality and postcode segments after a street line; taken only if a postcode is among them."""
    best, pos = end, end
    for _ in range(3):
        m = _TAIL_SEGMENT.match(text, pos)
        if not m:
            break
        pos = m.end()
        if any(ch.isdigit() for ch in m.group()):
            best = pos
    return best


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def find_addresses(text: str) -> Iterator[Match]:
    if not has_digit(text):
        return
    spans = [(start, _tail_end(text, end)) for start, end in _street_lines(text)]
    spans += list(_postcode_blocks(text))
    for start, end in _merged(spans):
        if text[end - 1] == "." and end - start > 4 and text[end - 5:end - 1].isalpha():
            end -= 1  # a sentence's full stop, not an abbreviation such as "St."
        yield Match(start, end, " ".join(text[start:end].split()).lower())
