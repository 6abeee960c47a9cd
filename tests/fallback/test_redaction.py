"""Redaction: each kind is found, look-alikes are left alone, placeholders are stable within a request."""

from __future__ import annotations

import copy
import time

import pytest

from fallback.errors import ConfigError
from fallback.redaction import (
    ALL_KINDS, Redactor, iban_is_valid, luhn_is_valid, redact, redact_messages, shannon_entropy,
)


@pytest.mark.parametrize("text", [
    "write to jane.doe+news@example.co.uk today",
    "ADMIN@EXAMPLE.ORG",
])
def test_email_is_replaced(text: str) -> None:
    result = redact(text)
    assert "[EMAIL_1]" in result.text and "@" not in result.text
    assert result.counts == {"email": 1}


@pytest.mark.parametrize("phone", [
    "+1 415 555 0132", "(415) 555-0132", "+44 20 7946 0958", "020 7946 0958", "415-555-0132",
    "415.555.0132", "+14155550132", "07700 900123", "+49 (0)30 1234567",
])
def test_phone_formats_are_replaced(phone: str) -> None:
    result = redact(f"call me on {phone} after lunch")
    assert result.text == "call me on [PHONE_1] after lunch"
    assert result.counts == {"phone": 1}


@pytest.mark.parametrize("card", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5500 0000 0000 0004",
    "3782 822463 10005",  # Amex 4-6-5
])
def test_luhn_valid_cards_are_replaced(card: str) -> None:
    result = redact(f"card: {card}.")
    assert result.text == "card: [CARD_1]."
    assert result.counts == {"card": 1}


def test_card_next_to_other_numbers_is_still_found() -> None:
    assert redact("order 12 4111 1111 1111 1111 in 2024").text == "order 12 [CARD_1] in 2024"


@pytest.mark.parametrize("iban", ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000",
                                  "FR14 2004 1010 0505 0001 3M02 606"])
def test_valid_ibans_are_replaced(iban: str) -> None:
    result = redact(f"pay {iban} NOW")
    assert result.text == "pay [IBAN_1] NOW"


@pytest.mark.parametrize("secret", [
    "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5", "xoxb-123456789012-abcdefghijKLM",
])
def test_prefixed_secrets_are_replaced(secret: str) -> None:
    result = redact(f"use {secret} please")
    assert result.text == "use [SECRET_1] please"


@pytest.mark.parametrize("line, expected", [
    ('api_key = "Zx9Qw8Er7Ty6Ui5Op4As"', 'api_key = "[SECRET_1]"'),
    ("OPENAI_TOKEN: q8Zr2LmX9vB4nK7pT1wY", "OPENAI_TOKEN: [SECRET_1]"),
    ("db password: hunter22", "db password: [SECRET_1]"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9abc", "Authorization: Bearer [SECRET_1]"),
])
def test_assigned_secrets_replace_only_the_value(line: str, expected: str) -> None:
    assert redact(line).text == expected


@pytest.mark.parametrize("text", [
    "token: short", "the key: aaaaaaaaaaaaaaaaaaaa", "tokenizer: meta-llama/Llama-3.1-8B-Instruct",
    "secret = not-so-secret",
])
def test_low_entropy_or_unrelated_values_are_kept(text: str) -> None:
    assert redact(text).text == text


@pytest.mark.parametrize("address", ["192.168.1.10", "8.8.8.8", "2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a",
                                     "::ffff:10.0.0.1"])
def test_ip_addresses_are_replaced(address: str) -> None:
    assert redact(f"host {address} is down").text == "host [IP_1] is down"


@pytest.mark.parametrize("text", [
    "In 2024 it cost $1,299.99 for 12,000 units",
    "pi is 3.14159 and e is 2.71828",
    "order number 123456789 shipped on 2024-01-15 (15/01/2024)",
    "invalid card 4111 1111 1111 1112 stays",
    "invalid IBAN GB82 WEST 1234 5698 7654 33 stays",
    "ISBN 978-3-16-148410-0",
    "version 1.2.3 and bad address 256.1.1.1 and 01.02.03.04",
    "at 12:30:45, MAC 00:00:00:00:00:00, slice x[1::2]",
    "1 000 000 people, local 555-0132, 0000 0000 0000 0000",
])
def test_ordinary_numbers_are_not_redacted(text: str) -> None:
    result = redact(text)
    assert result.text == text
    assert result.counts == {}


def test_same_value_same_placeholder_and_numbering_per_kind() -> None:
    text = ("a@x.com, b@y.com, A@X.com, 4111 1111 1111 1111, 4111111111111111, "
            "5500 0000 0000 0004, (415) 555-0132, 415-555-0132")
    result = redact(text)
    assert result.text == ("[EMAIL_1], [EMAIL_2], [EMAIL_1], [CARD_1], [CARD_1], [CARD_2], "
                           "[PHONE_1], [PHONE_1]")
    assert result.counts == {"email": 3, "card": 3, "phone": 2}
    assert result.total == 8


def test_only_configured_kinds_are_redacted() -> None:
    result = redact("mail a@b.com, card 4111 1111 1111 1111", kinds=["card"])
    assert result.text == "mail a@b.com, card [CARD_1]"


def test_unknown_kind_is_a_config_error_naming_known_kinds() -> None:
    with pytest.raises(ConfigError, match="horoscope") as info:
        redact("x", kinds=["email", "horoscope"])
    assert all(kind in str(info.value) for kind in ALL_KINDS)


def test_redact_messages_handles_strings_and_parts_without_mutating_input() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "I am bob@example.com"},
            {"type": "image_url", "image_url": {"url": "https://bob@example.com/x.png"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "user", "content": "again: bob@example.com, call +1 415 555 0132"},
    ]
    original = copy.deepcopy(messages)
    result = redact_messages(messages)
    assert messages == original
    assert result.messages[1]["content"][0]["text"] == "I am [EMAIL_1]"
    assert result.messages[1]["content"][1] == original[1]["content"][1]
    assert result.messages[2] == original[2]
    assert result.messages[3]["content"] == "again: [EMAIL_1], call [PHONE_1]"
    assert result.counts == {"email": 2, "phone": 1}


def test_redactor_can_restore_placeholders_in_an_answer() -> None:
    redactor = Redactor()
    sent = redactor.redact("Draft a note to ann@corp.example about card 4111 1111 1111 1111")
    assert "ann@corp.example" not in sent
    answer = "Dear [EMAIL_1], your card [CARD_1] is fine."
    assert redactor.restore(answer) == "Dear ann@corp.example, your card 4111 1111 1111 1111 is fine."


def test_checksums() -> None:
    assert luhn_is_valid("4111111111111111") and not luhn_is_valid("4111111111111112")
    assert iban_is_valid("GB82WEST12345698765432") and not iban_is_valid("GB82WEST12345698765433")
    assert shannon_entropy("aaaa") == 0.0 and shannon_entropy("abcd") == 2.0


@pytest.mark.parametrize("unit", ["a-", "1.", "a.b-c_d", "1 ", "AB12 ", "+1 "])
def test_long_adversarial_text_is_redacted_in_linear_time(unit: str) -> None:
    text = unit * 20_000 + " api_key=Zx9Qw8Er7Ty6Ui5Op4As"  # a quadratic pattern took minutes here
    started = time.perf_counter()
    result = redact(text)
    assert time.perf_counter() - started < 2.0
    assert result.text.endswith("api_key=[SECRET_1]")


def test_many_distinct_values_are_numbered_in_order() -> None:
    text = " ".join(f"user{i}@example.com" for i in range(3000))
    result = redact(text)
    assert result.text.split()[-1] == "[EMAIL_3000]" and result.counts == {"email": 3000}
