"""Privacy audit: 1,000 generated prompts seeded with personal data and secrets, all sent toward the cloud.

Seeded kinds: e-mails, phones, cards, IBANs, IPs, MACs, secrets (prefixed API keys, JWTs, PEM blocks,
credentials in URLs, ``api_key=``/``password:``), national IDs (US SSN, UK NINO), passport numbers and birth
dates after their labels, names after a cue and postal addresses. For labelled kinds only the private part
counts: "passport no." may arrive, the number may not.

The loopback cloud records every body it receives; not one seeded value may arrive as it was written (nor its
digits, for numbers written with spaces or dashes). Requests tagged ``never_send`` (header or metadata) never
reach it. Every log record written meanwhile, at DEBUG on the root, ``uvicorn``, ``edge_runtime``,
``fallback`` and ``httpx`` loggers, is free of prompt text. The 1,000 go through the real server with
``X-Edge-Route: cloud`` (no local generation needed); a few more escalate on low confidence from the bundled
model (36 in the ``slow`` run).
"""

from __future__ import annotations

import json
import logging
import random
import re
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability.conftest import GatewayKnobs, build_server, running

KINDS = ("email", "phone", "card", "iban", "secret", "ip", "national_id", "passport", "birth_date", "mac", "name",
         "address")
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "edge_runtime", "fallback", "httpx")


# ------------------------------------------------------------------------------------------- seeded values

def _luhn_complete(digits: str) -> str:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return digits + str((10 - total % 10) % 10)


def _iban(rng: random.Random) -> str:
    country, bban = rng.choice([("DE", lambda: _digits(rng, 18)), ("FR", lambda: _digits(rng, 23)),
                                ("GB", lambda: "".join(rng.choices(string.ascii_uppercase, k=4)) + _digits(rng, 14)),
                                ("NL", lambda: "".join(rng.choices(string.ascii_uppercase, k=4)) + _digits(rng, 10))])
    body = bban()
    numeric = "".join(str(int(char, 36)) for char in body + country + "00")
    iban = f"{country}{98 - int(numeric) % 97:02d}{body}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choices(string.digits, k=count))


def _card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "6011"])
    number = _luhn_complete(prefix + _digits(rng, 15 - len(prefix)))
    style = rng.randrange(3)
    return number if style == 0 else ("-" if style == 1 else " ").join(number[i:i + 4] for i in range(0, 16, 4))


def _phone(rng: random.Random) -> str:
    return rng.choice([
        lambda: f"+{rng.choice(['44', '49', '33', '1'])} {_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 4)}",
        lambda: f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{_digits(rng, 4)}",
        lambda: f"{rng.randint(201, 989)}-555-{_digits(rng, 4)}",
        lambda: f"0{rng.randint(20, 99)} {_digits(rng, 4)} {_digits(rng, 4)}"])()


def _secret(rng: random.Random) -> str | tuple[str, str]:
    alphabet = string.ascii_letters + string.digits
    password = "".join(rng.choices(alphabet + "!#%", k=12))
    return rng.choice([
        lambda: "sk-" + "".join(rng.choices(alphabet, k=40)),
        lambda: "AKIA" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=16)),
        lambda: "ghp_" + "".join(rng.choices(alphabet, k=36)),
        lambda: "xoxb-" + "".join(rng.choices(alphabet, k=24)),
        lambda: "api_key=" + "".join(rng.choices(alphabet, k=32)),
        lambda: "password: " + password,
        lambda: "AIza" + "".join(rng.choices(alphabet + "_-", k=35)),
        lambda: "sk_live_" + "".join(rng.choices(alphabet, k=32)),
        lambda: "eyJhbGciOiJIUzI1NiJ9.eyJ" + "".join(rng.choices(alphabet, k=30)) + "." + "".join(rng.choices(alphabet, k=43)),
        lambda: ("-----BEGIN PRIVATE KEY-----\n" + "".join(rng.choices(alphabet + "+/", k=64)) + "\n"
                 + "".join(rng.choices(alphabet + "+/", k=40)) + "\n-----END PRIVATE KEY-----"),
        lambda: (f"postgres://app:{password}@db.internal:5432/prod", f"app:{password}")])()


def _national_id(rng: random.Random) -> str:
    if rng.random() < 0.5:  # US SSN: area 001-899 but not 666, group and serial not zero
        area = rng.choice([a for a in range(1, 900) if a != 666])
        return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    prefix = rng.choice(["AB", "CE", "JH", "KL", "NP", "SW", "TW", "WX"])  # allowed NINO prefixes
    digits = _digits(rng, 6)
    return rng.choice([f"{prefix}{digits}C", f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} A"])


FIRST = ["Maria", "James", "Aisha", "Lukas", "Chloé", "Mateo", "Priya", "Sven", "Olga", "Hiroshi"]
LAST = ["Garcia", "O'Neill", "Schmidt", "Dubois", "Rossi", "Kowalski", "Nakamura", "Okafor", "van Dijk", "Lindqvist"]
CUES = ["patient", "Dear", "my colleague", "Mr", "Dr.", "customer"]


def _name(rng: random.Random) -> tuple[str, str]:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    return f"{rng.choice(CUES)} {name}", name


def _address(rng: random.Random) -> str:
    street = rng.choice(["Baker Street", "Elm Avenue", "Mill Lane", "Harbour Road", "Oak Drive"])
    city, code = rng.choice([("London", f"NW{rng.randint(1, 9)} {rng.randint(1, 9)}XE"), ("Leeds", f"LS{rng.randint(1, 28)} 4AY"),
                             ("Springfield, IL", f"{rng.randint(60000, 62999)}")])
    return rng.choice([f"{rng.randint(1, 999)} {street}, {city} {code}",
                       f"Hauptstraße {rng.randint(1, 200)}, {rng.randint(10000, 99999)} Berlin"])


def _passport(rng: random.Random) -> tuple[str, str]:
    number = rng.choice(string.ascii_uppercase) + _digits(rng, 8)
    return f"passport no. {number}", number


def _birth_date(rng: random.Random) -> tuple[str, str]:
    month = rng.choice(["January", "March", "July", "October"])
    day, year = rng.randint(1, 28), rng.randint(1940, 2010)
    date = rng.choice([f"{day} {month} {year}", f"{year}-{rng.randint(1, 12):02d}-{day:02d}", f"{day:02d}/{rng.randint(1, 12):02d}/{year}"])
    return f"{rng.choice(['born on', 'date of birth:', 'DOB'])} {date}", date


def _mac(rng: random.Random) -> str:
    return rng.choice([":", "-"]).join(f"{rng.randint(0, 255):02x}" for _ in range(6))


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return ":".join(f"{rng.randint(0, 0xFFFF):x}" for _ in range(8))


def _email(rng: random.Random) -> str:
    name = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
    return f"{name}.{rng.choice(['doe', 'smith', 'li'])}@{rng.choice(['example.com', 'mail.co.uk', 'corp.io'])}"


MAKERS = {"email": _email, "phone": _phone, "card": _card, "iban": _iban, "secret": _secret, "ip": _ip,
          "national_id": _national_id, "passport": _passport, "birth_date": _birth_date, "mac": _mac, "name": _name,
          "address": _address}
FILLERS = ["Please summarise this for me:", "My details are", "Can you check", "Forward it to", "Note that",
           "The server at", "I paid with", "Transfer to", "Use the credential", "Call me on"]


@dataclass
class Prompt:
    marker: str
    values: list[str]
    body: dict
    path: str


def generate_prompts(count: int, seed: int = 7) -> list[Prompt]:
    rng = random.Random(seed)
    prompts = []
    for index in range(count):
        marker = "".join(rng.choices(string.ascii_lowercase, k=14))
        seeded = [_as_pair(MAKERS[kind](rng)) for kind in rng.sample(KINDS, rng.randint(1, 4))]
        values = [private for _, private in seeded]
        sentences = [f"{rng.choice(FILLERS)} {written} ." for written, _ in seeded]
        text = f"[{marker}] " + " ".join(sentences)
        prompts.append(Prompt(marker, values, *_shape(rng, index, text)))
    return prompts


def _as_pair(made: str | tuple[str, str]) -> tuple[str, str]:
    """(as written in the prompt, the private part that must not arrive): a label such as "passport no."
    may arrive, the number after it may not."""
    return made if isinstance(made, tuple) else (made, made)


def _shape(rng: random.Random, index: int, text: str) -> tuple[dict, str]:
    """Chat with string content, chat with text parts and a system message, or a plain completion."""
    style = index % 3
    if style == 0:
        return {"messages": [{"role": "user", "content": text}], "max_tokens": 4}, "/v1/chat/completions"
    if style == 1:
        boundary = text.find(" . ")  # split between sentences (see the cross-part test below)
        cut = boundary + 3 if boundary >= 0 else len(text)
        return {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": [{"type": "text", "text": text[:cut]},
                                                          {"type": "text", "text": text[cut:]}]}],
                "max_tokens": 4}, "/v1/chat/completions"
    return {"prompt": text, "max_tokens": 4}, "/v1/completions"


# ------------------------------------------------------------------------------------------- checks

def leaks(prompt: Prompt, sent: str) -> list[str]:
    """Seeded values that arrived as written, or whose digits did (for values written with separators)."""
    found = [value for value in prompt.values if value in sent or json.dumps(value, ensure_ascii=False)[1:-1] in sent]
    sent_digits = re.sub(r"\D", "", sent)
    for value in prompt.values:
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 9 and digits in sent_digits and value not in found:
            found.append(value)
    return found


def _sent_text(body: dict) -> str:
    return json.dumps(body.get("messages") or body.get("prompt"), ensure_ascii=False)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + (f" {record.args!r}" if record.args else ""))


@pytest.fixture()
def captured_logs():
    handler = Captured()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture()
def audit_server(tiny, fault_cloud, tmp_path):
    patient = GatewayKnobs(timeout_s=15.0, overall_deadline_s=30.0)  # timing is not the point here: no retries
    built = build_server(tiny, base_url=fault_cloud.base_url, threshold=1.0, ledger_path=tmp_path / "l.sqlite3",
                         knobs=patient)
    with running(built.app) as url:
        yield built, url, fault_cloud


def test_generators_make_values_the_redactor_must_catch():
    """The seeded values are well-formed (Luhn, mod-97): a miss below is the redactor's, not the generator's."""
    from fallback.redaction import iban_is_valid, luhn_is_valid

    rng = random.Random(1)
    assert all(luhn_is_valid(re.sub(r"\D", "", _card(rng))) for _ in range(200))
    assert all(iban_is_valid(_iban(rng).replace(" ", "")) for _ in range(200))
    assert leaks(Prompt("m", ["4111-1111-1111-1111"], {}, ""), "card 4111111111111111") == ["4111-1111-1111-1111"]


def test_thousand_seeded_prompts_arrive_redacted(audit_server, captured_logs):
    built, url, cloud = audit_server
    prompts = generate_prompts(1000)
    with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda p: http.post(p.path, json=p.body, headers={"X-Edge-Route": "cloud"})
                                 .status_code, prompts))
    assert statuses.count(200) == 1000
    by_marker = {}
    for body in cloud.received:
        match = re.search(r"\[([a-z]{14})\]", _sent_text(body))
        by_marker.setdefault(match.group(1) if match else None, []).append(body)
    assert all(by_marker.get(p.marker) for p in prompts), "every prompt reaches the cloud"
    leaked = {p.marker: [value for body in by_marker[p.marker] for value in leaks(p, _sent_text(body))]
              for p in prompts}
    leaked = {marker: values for marker, values in leaked.items() if values}
    seeded = sum(len(p.values) for p in prompts)
    print(f"privacy audit: {len(prompts)} prompts, {seeded} seeded values, {len(leaked)} prompts leaked")
    assert leaked == {}, f"{len(leaked)} prompts leaked: {list(leaked.items())[:5]}"
    assert sum(entry.redaction_count for entry in built.ledger.entries()) >= seeded
    _assert_logs_hold_no_prompt_text(captured_logs, prompts)


def test_never_send_requests_never_reach_the_cloud(audit_server, captured_logs):
    built, url, cloud = audit_server
    prompts = generate_prompts(60, seed=11)
    with httpx.Client(base_url=url, timeout=30) as http:
        for index, prompt in enumerate(prompts):
            body, headers = dict(prompt.body), {}
            if index % 2:
                headers["X-Edge-Never-Send"] = "1"
            else:
                body["metadata"] = {"never_send": True}
            escalating = http.post(prompt.path, json=body, headers=headers)  # threshold 1.0: wants the cloud
            assert escalating.status_code == 200 and escalating.headers["x-edge-route-taken"] == "local-degraded"
            forced = http.post(prompt.path, json=body, headers={**headers, "X-Edge-Route": "cloud"})
            assert forced.status_code == 400 and "never_send" in forced.json()["error"]["message"]
            streamed = http.post(prompt.path, json={**body, "stream": True}, headers=headers)
            assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    sent = json.dumps(cloud.received)
    assert not any(prompt.marker in sent for prompt in prompts), "a never_send request reached the cloud"
    _assert_logs_hold_no_prompt_text(captured_logs, prompts)


def _assert_logs_hold_no_prompt_text(captured: Captured, prompts: list[Prompt]) -> None:
    text = "\n".join(captured.lines)
    assert captured.lines, "the capture must see the server's log records (access log, httpx)"
    for prompt in prompts:
        assert prompt.marker not in text, f"prompt text in the logs: {prompt.marker}"
        assert not [value for value in prompt.values if value in text]


@pytest.mark.parametrize("count", [pytest.param(4, id="4-by-default"), pytest.param(36, id="36", marks=pytest.mark.slow)])
def test_low_confidence_escalation_from_the_real_model_is_redacted(runtime, fault_cloud, tmp_path, count,
                                                                   captured_logs):
    built = build_server(runtime, base_url=fault_cloud.base_url, threshold=1.0,
                         knobs=GatewayKnobs(timeout_s=15.0, overall_deadline_s=30.0))
    prompts = generate_prompts(count, seed=23)
    with running(built.app) as url, httpx.Client(base_url=url, timeout=120) as http:
        for prompt in prompts:
            response = http.post(prompt.path, json={**prompt.body, "max_tokens": 2})
            assert response.status_code == 200 and response.json()["edge"]["reason"] == "low_confidence"
    assert len(fault_cloud.received) == count
    for prompt, body in zip(prompts, fault_cloud.received):
        assert prompt.marker in _sent_text(body) and leaks(prompt, _sent_text(body)) == []
    _assert_logs_hold_no_prompt_text(captured_logs, prompts)


def test_a_value_split_across_text_parts_is_redacted():
    from fallback.redaction import redact_messages

    card = "4111 1111 1111 1111"
    message = {"role": "user", "content": [{"type": "text", "text": f"I paid with {card[:9]}"},
                                           {"type": "text", "text": f"{card[9:]} yesterday."}]}
    sent = json.dumps(redact_messages([message]).messages)
    assert leaks(Prompt("m", [card], {}, ""), sent) == []
