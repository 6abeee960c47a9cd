"""The kinds added for issue #19: what people paste every day, found; look-alikes that fail a check, kept.

The first test is the issue's own list of the 15 values that came through untouched before; the check rules
are tested against examples their publishers give (and one-character changes of them).
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from fallback.redaction import ALL_KINDS, Redactor, find_spans, redact
from fallback.redaction import checks
from fallback.redaction.spans import Keywords, trie_pattern

PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
       "aFDrBz9vFqU4yH0Ue1X7bM6AbB1nq1Yz9i9nP2xUk1Xf8hH7l0s7eD3e9Q1WqG2A\n-----END RSA PRIVATE KEY-----")
OPENSSH = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
           "QyNTUxOQAAACDh0Y6eJ+3p1Rz0Qm5kqG0bX6mJ0Jd2Zb4Vb1l3Jz8XQAAAJhZ3JxLWdyc\n-----END OPENSSH PRIVATE KEY-----")
JWT = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=") for part in
               ({"alg": "HS256", "typ": "JWT"}, {"sub": "1234567890", "name": "John Doe"})) + ".SflKxwRJSMeKKF2QT4fwpMeJf36P"

# value, the sentence it was pasted in, the kind that must take it
ISSUE_19_MISSES = [
    (PEM, f"why does ssh reject this key?\n{PEM}\nthanks", "secret"),
    (JWT, f"the API returns 401 for {JWT} since today", "secret"),
    ("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "maps key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW stopped working",
     "secret"),
    ("sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "stripe.api_key = 'sk_live_51H8xYzAbCdEfGhIjKlMnOpQr'", "secret"),
    ("123-45-6789", "My SSN is 123-45-6789, fill the form.", "national_id"),
    ("123456789", "SSN: 123456789", "national_id"),
    ("AB 12 34 56 C", "My NI number is AB 12 34 56 C.", "national_id"),
    ("L6258228", "my passport number is L6258228, expires 2031", "passport"),
    ("4111.1111.1111.1111", "I paid with 4111.1111.1111.1111 yesterday", "card"),
    ("gb82 west 1234 5698 7654 32", "send it to gb82 west 1234 5698 7654 32 please", "iban"),
    ("gb82west12345698765432", "iban gb82west12345698765432", "iban"),
    ("00:1a:2b:3c:4d:5e", "my laptop's MAC is 00:1a:2b:3c:4d:5e", "mac"),
    ("12 March 1985", "I was born on 12 March 1985 in Leeds", "birth_date"),
    ("221B Baker Street, London NW1 6XE", "ship it to 221B Baker Street, London NW1 6XE by Friday", "address"),
    ("Maria Garcia", "Patient Maria Garcia, 54, presented with chest pain.", "name"),
]


@pytest.mark.parametrize("value, text, kind", ISSUE_19_MISSES, ids=[k + str(i) for i, (_, _, k) in
                                                                      enumerate(ISSUE_19_MISSES)])
def test_the_values_issue_19_found_untouched_are_now_replaced(value: str, text: str, kind: str) -> None:
    result = redact(text)
    assert value not in result.text
    assert result.counts.get(kind, 0) >= 1, result
    assert f"[{kind.upper()}_1]" in result.text


@pytest.mark.parametrize("text, kept", [
    ("postgres://app:s3cr3t-Pa55@db.internal:5432/prod", ["postgres://", "@db.internal:5432/prod"]),
    ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz0123", ["OPENAI_API_KEY="]),
    ("token: glpat-AbCdEfGhIjKlMnOpQrSt", ["token: "]),
    ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 is my HF token", [" is my HF token"]),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nAbCd", ["-----BEGIN"[:0]]),
])
def test_credentials_are_replaced_and_their_context_kept(text: str, kept: list[str]) -> None:
    result = redact(text)
    assert result.counts.get("secret") == 1, result
    assert all(part in result.text for part in kept)


def test_a_private_key_block_is_taken_whole() -> None:
    for block in (PEM, OPENSSH):
        result = redact(f"key:\n{block}\nend")
        assert result.text == "key:\n[SECRET_1]\nend"


@pytest.mark.parametrize("text", [
    "Mi DNI es 12345678Z.", "Il mio codice fiscale è RSSMRA85T10A562S.", "Meu CPF é 529.982.247-25.",
    "身份证 11010519491231002X", "Aadhaar: 2341 2341 2346", "Mijn BSN is 111222333.", "Steuer-ID: 86095742719",
    "personnummer 811218-9876", "SIN 130 454 291", "NIR 2 55 08 14 168 025 38",
])
def test_national_identifiers_with_their_check_rules(text: str) -> None:
    assert redact(text).counts.get("national_id") == 1, redact(text)


@pytest.mark.parametrize("text", [
    "Mi DNI es 12345678A.", "Il mio codice fiscale è RSSMRA85T10A562T.", "Meu CPF é 529.982.247-26.",
    "身份证 110105194912310021", "Aadhaar: 2341 2341 2347", "Mijn BSN is 111222334.", "Steuer-ID: 86095742718",
    "personnummer 811218-9875", "order 123456789 and 9876543210 shipped", "SSN: 666-12-3456",
    "NI number QQ 12 34 56 C", "card 4111.1111.1111.1112", "IBAN gb82 west 1234 5698 7654 33",
    "passport is valid until 2031", "born in 1985", "Sans serif fonts, Dear Sir or Madam, hi team",
    "Customer Service will call you.", "In 2024 Apple Park opened a cafe.",
])
def test_look_alikes_that_fail_their_rule_are_kept(text: str) -> None:
    result = redact(text)
    assert result.text == text and result.counts == {}, result


@pytest.mark.parametrize("text, name", [
    ("Dear Mr. O'Brien,\nthanks for the order.", "O'Brien"),
    ("Thanks,\nAnna-Lena Schmidt", "Anna-Lena Schmidt"),
    ('{"full_name": "Lukas van der Berg", "id": 4}', "Lukas van der Berg"),
    ("my colleague Jean-Luc Picard will join", "Jean-Luc Picard"),
    ("patient 周伟 was admitted", "周伟"),
    ("I am Maria Garcia and I need help", "Maria Garcia"),
])
def test_names_after_a_cue_are_replaced_whole(text: str, name: str) -> None:
    result = redact(text)
    assert name not in result.text and "[NAME_1]" in result.text, result


@pytest.mark.parametrize("address", [
    "9074 Brittany Cove Suite 000\nSouth Glendachester, VA 04307",
    "36 Debra Forges\nSinghside\nN33 4AS",
    "Hauptstraße 5\n12345 Berlin",
    "44, rue de Prévost\n04122 Saint Alex",
    "Via Roma 12, 00184 Roma (RM)",
    "ul. Krasickiego 12\n84-555 Łódź",
    "Kerkstraat 12\n1017 GC Amsterdam",
    "東京都千代田区丸の内1丁目9番2号",
])
def test_addresses_in_many_locales_are_replaced_whole(address: str) -> None:
    result = redact(f"Please ship it to {address}. Thanks!")
    assert result.text == "Please ship it to [ADDRESS_1]. Thanks!", result


def test_new_placeholders_restore_in_the_answer() -> None:
    redactor = Redactor()
    sent = redactor.redact("I'm Maria Garcia, SSN 123-45-6789, born on 12 March 1985, key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW")
    assert "Maria" not in sent and "6789" not in sent and "1985" not in sent and "AIza" not in sent
    answer = "[NAME_1], your SSN [NATIONAL_ID_1] and birth date [BIRTH_DATE_1] are on file; rotate [SECRET_1]."
    assert redactor.restore(answer) == ("Maria Garcia, your SSN 123-45-6789 and birth date 12 March 1985 are on"
                                        " file; rotate AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW.")


def test_kinds_can_be_switched_off_one_by_one() -> None:
    text = "Patient Maria Garcia lives at 12 Baker Street, London NW1 6XE"
    assert redact(text, kinds=[k for k in ALL_KINDS if k not in ("name", "address")]).text == text
    assert redact(text, kinds=["name"]).text == "Patient [NAME_1] lives at 12 Baker Street, London NW1 6XE"


def test_spans_never_overlap_and_keep_priority_order() -> None:
    text = "card 4111 1111 1111 1111, SSN 123-45-6789, mail a@b.co, IBAN DE89370400440532013000"
    spans = find_spans(text)
    assert [kind for kind, _ in spans] == ["card", "national_id", "email", "iban"]
    assert all(a.end <= b.start for (_, a), (_, b) in zip(spans, spans[1:]))


@pytest.mark.parametrize("value, valid", [
    ("86095742719", True), ("86095742718", False), ("86095742791", False),  # Steuer-ID (BZSt example)
    ("123456789018", True), ("123456789019", False),                        # My Number
    ("111222333", True), ("111222334", False),                               # BSN
])
def test_check_rules_against_published_examples(value: str, valid: bool) -> None:
    rule = {11: checks.de_tax_id_is_valid, 12: checks.my_number_is_valid, 9: checks.bsn_is_valid}[len(value)]
    assert rule(value) is valid


def test_more_check_rules() -> None:
    assert checks.ssn_is_valid("123456789") and not checks.ssn_is_valid("000123456")
    assert not checks.ssn_is_valid("900123456") and not checks.ssn_is_valid("123006789")
    assert checks.nino_is_valid("AB123456C") and not checks.nino_is_valid("QQ123456C")
    assert not checks.nino_is_valid("BG123456C") and not checks.nino_is_valid("AB123456E")
    assert checks.verhoeff_is_valid("2363") and not checks.verhoeff_is_valid("2364")
    assert checks.cpf_is_valid("52998224725") and not checks.cpf_is_valid("11111111111")
    assert checks.codice_fiscale_is_valid("RSSMRA85T10A562S") and not checks.codice_fiscale_is_valid("RSSMRA85T10A562T")
    assert checks.iban_is_valid("gb82 west 1234 5698 7654 32") and not checks.iban_is_valid("GB82WEST123456987654")
    assert checks.pesel_is_valid("44051401359") and not checks.pesel_is_valid("44051401358")
    assert checks.cn_resident_id_is_valid("11010519491231002X") and not checks.cn_resident_id_is_valid("11010519491331002X")


def test_keywords_match_whole_words_in_any_case_and_separator() -> None:
    words = Keywords(["steuer id", "sin", "my number"])
    found = [phrase for _, _, phrase in words.finditer("Steuer-ID, steuer_id, since, SIN:, My Number, mysin")]
    assert found == ["steuer-id", "steuer_id", "sin", "my number"]
    assert trie_pattern(["mr", "mrs", "my"]) == "m(?:r(?:s)?|y)"


@pytest.mark.parametrize("unit", ["Dear ", "12 ", "Mr ", "rue ", "AB12 ", "born ", "key=", "NW1 6XE "])
def test_cue_heavy_adversarial_text_stays_linear(unit: str) -> None:
    text = unit * 20_000 + " api_key=Zx9Qw8Er7Ty6Ui5Op4As"
    started = time.perf_counter()
    result = redact(text)
    assert time.perf_counter() - started < 5.0
    assert result.text.endswith("api_key=[SECRET_1]")
