"""Finder for people's names, by the words that announce one.

A name is taken only after a cue: an honorific (``Mr``, ``Dr``, ``Frau``, ``Mme``), a label (``patient``,
``name:``, ``customer``, a JSON key ending in ``name``), a relation (``my colleague``, ``my wife``), a
greeting or a sign-off (``Dear``, ``Hi``, ``Regards,``). What follows must be 1-4 capitalised words
(particles such as ``van``, ``de``, ``al`` may sit between them) or a run of Han/Hangul characters.
Weak cues (``I am``, ``this is``, ``name:``) need two such words, so "I'm Canadian" stays. Cues about
third persons in prose ("his son", "called", "candidate") are left out: news text is full of them, and
those names are seldom what a user pastes about someone they know.

Chosen by measurement (issue #19; AMD EPYC, 2 shared cores, numbers in docs/bench/redaction.json):

    cues (this module)        recall 100 % on cued names in 15 locales incl. CJK; 0.25 false positives per
                              1,000 clean texts (a "Ms Maathai" in the news); ~0.4 ms/KB under load
    given-name list + a       4,971 given names from faker's 12 Latin-script locales (36 KB): 117 hits per
    capitalised word after    1,000 clean texts (news is full of real names), recall on uncued names only
                              46 % even though list and corpus share a source; faker itself is 1.5 s to import
    the bundled model tagging 2.2 s per text (~30,000 ms/KB) and 3 names of 12 found
    names (Gemma 3 270M)

Names with no cue at all ("forward this to Maria Garcia") are not found; the benchmark reports them as
``person_name_uncued`` (0 %). ``name`` is a kind like any other: drop it from ``redaction_kinds`` to skip it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from fallback.redaction.spans import Keywords, Match

_HONORIFICS = Keywords(["mr", "mrs", "ms", "mx", "miss", "dr", "prof", "herr", "frau", "mme", "mlle", "sr", "sra",
                        "srta", "dott", "sig", "pan", "pani"])
_LABELS = Keywords([
    "patient", "patient name", "name of the patient", "customer", "customer name", "client", "employee",
    "applicant", "tenant", "recipient", "beneficiary", "account holder", "cardholder", "card holder",
    "policyholder", "policy holder", "insured", "emergency contact", "next of kin", "guardian",
    "contact person", "full name", "first name", "last name", "surname", "given name", "given names",
    "family name", "attn", "attention", "c/o", "my name is", "my name's", "signed", "signed by",
    "on behalf of", "assigned to", "referred by", "dear", "hi", "hello", "hey", "hallo", "liebe", "lieber",
    "bonjour", "cher", "chère", "hola", "estimado", "estimada", "caro", "cara", "ciao",
    *(f"{owner} {relation}" for owner in ("my", "our") for relation in (
        "wife", "husband", "son", "daughter", "mother", "mom", "mum", "father", "dad", "brother", "sister",
        "friend", "colleague", "coworker", "co-worker", "boss", "manager", "partner", "neighbor", "neighbour",
        "landlord", "landlady", "doctor", "lawyer", "client", "assistant", "teacher", "student", "girlfriend",
        "boyfriend", "fiancé", "fiancée", "grandmother", "grandfather", "grandma", "grandpa", "aunt", "uncle",
        "cousin", "nephew", "niece", "patient", "therapist", "dentist", "tenant"))])
_SIGN_OFFS = Keywords([
    "regards", "best regards", "kind regards", "warm regards", "best", "thanks", "thank you", "cheers",
    "sincerely", "yours", "best wishes", "many thanks", "mit freundlichen grüßen", "viele grüße", "cordialement",
    "saludos", "un saludo", "cordiali saluti", "atenciosamente"])
_WEAK = Keywords(["i am", "i'm", "this is", "name", "author", "owner"])
_JSON_KEY = re.compile(r"\"(?:[a-z_]*name|patient|customer|client|contact|employee|author|owner|holder|recipient)"
                       r"\"\s*:\s*\"", re.IGNORECASE)
_AFTER_HONORIFIC = re.compile(r"\.?[ \t]+")
_AFTER_LABEL = re.compile(r"[ \t]*[:,=-]?[ \t]*(?:\r?\n[ \t]*)?(?:(?:is|was)[ \t]+)?")
_AFTER_SIGN_OFF = re.compile(r"[ \t]*[,!][ \t]*\r?\n[ \t]*")
_AFTER_WEAK = re.compile(r"[ \t]*[:=]?[ \t]*")
_GAP = re.compile(r"[ \t]{1,2}|-")
_WORD = re.compile(r"[^\W\d_][\w'’.-]*")
_CJK_NAME = re.compile(r"[\u4e00-\u9fff\u3040-\u30ff]{1,4}(?:[ \u3000][\u4e00-\u9fff\u3040-\u30ff]{1,4})?"
                       r"|[\uac00-\ud7a3]{2,4}")
_PARTICLES = {"van", "von", "de", "der", "den", "del", "della", "da", "di", "du", "la", "le", "dos", "das",
              "do", "bin", "ibn", "al", "ter", "ten", "y", "e", "zu"}
_NOT_NAMES = {
    "The", "A", "An", "This", "That", "These", "Those", "I", "We", "He", "She", "It", "They", "You", "Your",
    "My", "Our", "And", "Or", "But", "If", "On", "In", "At", "For", "With", "From", "To", "Of", "Is", "Was",
    "Has", "Had", "Please", "Thanks", "Thank", "Today", "Tomorrow", "Yesterday", "All", "Team", "There",
    "Everyone", "Everybody", "Sir", "Madam", "Folks", "Guys", "Friends", "Monday", "Tuesday", "Wednesday",
    "Thursday", "Friday", "Saturday", "Sunday", "Not", "No", "Yes", "Ok", "OK", "Good", "Great", "Sorry",
    "Just", "So", "Here", "What", "When", "Where", "Who", "Why", "How", "Can", "Could", "Would", "Will",
    "Should", "May", "Might", "Must", "Do", "Does", "Did", "Are", "Were", "Be", "Been", "Have", "Name",
    "Number", "Id", "ID", "Date", "Address", "Email", "Phone", "Mobile", "Street", "Dear", "Hi", "Hello",
    "Regards", "Best", "Patient", "Customer", "Client", "Mr", "Mrs", "Ms", "Dr", "Unknown", "None", "Null",
    "True", "False", "Test", "New", "Old", "Room", "Ward", "Born", "Age", "Aged", "Male", "Female",
    "Service", "Services", "Support", "Care", "Success", "Relations", "Experience", "Department", "Center",
    "Centre", "Portal", "Account", "Accounts", "Data", "Information", "Feedback", "Library", "Side", "Code",
}


def _is_name_word(word: str) -> bool:
    head = word.rstrip(".")
    return (head[:1].isupper() and head not in _NOT_NAMES and any(ch.islower() for ch in head)
            and not head.endswith("'s"))


def _name_end(text: str, start: int, *, at_least: int) -> int | None:
    """End of the 1-4 capitalised words (with particles between) that start at ``start``, or None."""
    cjk = _CJK_NAME.match(text, start)
    if cjk:
        return cjk.end()
    end, words, pos = None, 0, start
    while words < 4:
        m = _WORD.match(text, pos)
        if not m or not (_is_name_word(m.group()) or m.group() in _PARTICLES):
            break
        if _is_name_word(m.group()):
            words, end = words + 1, m.end() - (1 if m.group().endswith(".") and len(m.group()) > 2 else 0)
        gap = _GAP.match(text, m.end())
        if not gap:
            break
        pos = gap.end()
    return end if words >= at_least else None


def _cue_ends(text: str) -> Iterator[tuple[int, int]]:
    """``(where a name may start, how many name words it needs)`` for every cue in ``text``."""
    for cues, after, at_least in ((_LABELS, _AFTER_LABEL, 1), (_SIGN_OFFS, _AFTER_SIGN_OFF, 1),
                                  (_WEAK, _AFTER_WEAK, 2)):
        for _, end, _ in cues.finditer(text):
            gap = after.match(text, end)
            if gap and gap.end() > end:
                yield gap.end(), at_least
    for start, end, _ in _HONORIFICS.finditer(text):
        gap = _AFTER_HONORIFIC.match(text, end)
        capitalised = text[start].isupper() and (end - start == 1 or text[start + 1:end].islower())
        if gap and capitalised:  # "Dr Smith", not "MS Sans Serif" or "dr"
            yield gap.end(), 1
    for m in _JSON_KEY.finditer(text):
        yield m.end(), 1


def find_names(text: str) -> Iterator[Match]:
    for start, at_least in _cue_ends(text):
        end = _name_end(text, start, at_least=at_least)
        if end is not None:
            yield Match(start, end, " ".join(text[start:end].split()).lower())
