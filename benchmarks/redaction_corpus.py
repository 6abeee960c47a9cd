"""The labelled corpus for ``benchmarks.redaction``: private values of 40+ kinds placed in sentences, chat
messages and JSON, and clean text that must come through untouched.

Values come from ``faker`` in the locales where each kind lives (a test/benchmark dependency, never loaded
at run time); where faker's value breaks its own scheme's rule (NINO prefix ``ZZ``, Aadhaar with Luhn
instead of Verhoeff) or faker has none (Steuer-ID, My Number, PEM keys, JWTs, API keys), a generator here
makes a well-formed one. Everything is drawn from one seeded ``random.Random``, so a seed gives the same
corpus on every machine.

Clean text: ordinary sentences (the dev sets' prompts in ``shared/data/*.jsonl`` when present, faker text
otherwise and in addition), code snippets, and numbers shaped like identifiers that fail their check rule.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faker import Faker

from fallback.redaction import checks

ALNUM = string.ascii_letters + string.digits
NAME_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "nl_NL", "pl_PL", "sv_SE",
                "en_IN", "en_AU", "ja_JP", "zh_CN", "ko_KR"]
ADDRESS_LOCALES = ["en_US", "en_GB", "en_CA", "en_AU", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "nl_NL",
                   "pl_PL", "sv_SE", "en_IN", "ja_JP", "zh_CN", "ko_KR"]


@dataclass(frozen=True)
class Labelled:
    """One text with the spans of private values in it: ``(bench kind, start, end)``."""

    text: str
    spans: list[tuple[str, int, int]]
    form: str


@dataclass(frozen=True)
class KindSpec:
    """How to make one kind of value, which redaction kind should take it, and how people write it."""

    name: str
    expected: str
    group: str  # "checked", "key", "person" or "other": which target applies
    make: Callable[[random.Random, Faker], str]
    templates: tuple[str, ...]
    json_key: str
    private_part: Callable[[str], tuple[int, int]] | None = None  # the span inside the value that is private


@dataclass
class Fakers:
    """One seeded Faker per locale, made on first use."""

    seed: int
    by_locale: dict[str, Faker] = field(default_factory=dict)

    def __call__(self, locale: str) -> Faker:
        if locale not in self.by_locale:
            fake = Faker(locale)
            fake.seed_instance(self.seed)
            self.by_locale[locale] = fake
        return self.by_locale[locale]


# ------------------------------------------------------------------------------------------- value makers

def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choices(string.digits, k=count))


def _complete(rng: random.Random, body: Callable[[], str], is_valid: Callable[[str], bool],
              alphabet: str = string.digits) -> str:
    """A body plus the one final character that makes ``is_valid`` pass (drawing new bodies until one does)."""
    while True:
        stem = body()
        for ch in alphabet:
            if is_valid(stem + ch):
                return stem + ch


def _group(value: str, size: int, sep: str) -> str:
    return sep.join(value[i:i + size] for i in range(0, len(value), size))


def make_card(rng: random.Random, fakers: Fakers) -> str:
    brand = rng.choice(["visa16", "visa16", "mastercard", "amex", "discover", "jcb16", "diners", "visa13"])
    number = fakers("en_US").credit_card_number(card_type=brand)
    sep = rng.choice(["", " ", "-", ".", " "])
    if not sep or len(number) not in (14, 15, 16):
        return number
    return _group(number, 4, sep) if len(number) == 16 else sep.join((number[:4], number[4:10], number[10:]))


def make_iban(rng: random.Random, fakers: Fakers) -> str:
    iban = fakers(rng.choice(["de_DE", "fr_FR", "en_GB", "nl_NL", "es_ES", "it_IT", "pl_PL", "pt_PT"])).iban()
    iban = rng.choice([iban, iban.lower(), iban])
    return rng.choice([iban, _group(iban, 4, " ")])


def make_ssn(rng: random.Random, fakers: Fakers) -> str:
    ssn = fakers("en_US").ssn()
    return rng.choice([ssn, ssn.replace("-", " "), ssn.replace("-", "")])


_NINO_FIRST = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
_NINO_SECOND = [c for c in string.ascii_uppercase if c not in "DFIOQUV"]


def make_nino(rng: random.Random, fakers: Fakers) -> str:
    prefix = "ZZ"
    while prefix in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        prefix = rng.choice(_NINO_FIRST) + rng.choice(_NINO_SECOND)
    digits, suffix = _digits(rng, 6), rng.choice("ABCD")
    return rng.choice([f"{prefix}{digits}{suffix}", f"{prefix} {_group(digits, 2, ' ')} {suffix}"])


def make_aadhaar(rng: random.Random, fakers: Fakers) -> str:
    number = _complete(rng, lambda: str(rng.randint(2, 9)) + _digits(rng, 10), checks.aadhaar_is_valid)
    return rng.choice([_group(number, 4, " "), _group(number, 4, "-"), number])


def make_my_number(rng: random.Random, fakers: Fakers) -> str:
    number = _complete(rng, lambda: _digits(rng, 11), checks.my_number_is_valid)
    return rng.choice([number, _group(number, 4, " ")])


def make_de_tax_id(rng: random.Random, fakers: Fakers) -> str:
    def body() -> str:
        digits = rng.sample(string.digits, 9)
        digits.insert(rng.randint(0, 9), rng.choice(digits))
        return "".join(digits)
    number = _complete(rng, body, checks.de_tax_id_is_valid)
    return rng.choice([number, f"{number[:2]} {number[2:5]} {number[5:8]} {number[8:]}"])


def make_cpf(rng: random.Random, fakers: Fakers) -> str:
    cpf = fakers("pt_BR").cpf()
    return rng.choice([cpf, cpf, cpf.replace(".", "").replace("-", "")])


def make_private_key(rng: random.Random, fakers: Fakers, *, openssh: bool = False) -> str:
    kind = "OPENSSH " if openssh else rng.choice(["RSA ", "EC ", "", "ENCRYPTED "])
    body = base64.b64encode(rng.randbytes(rng.choice([120, 240, 600]))).decode()
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{_group(body, 64, chr(10))}\n-----END {kind}PRIVATE KEY-----"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_jwt(rng: random.Random, fakers: Fakers) -> str:
    fake = fakers("en_US")
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    payload = {"sub": fake.uuid4(), "name": fake.name(), "iat": rng.randint(1_600_000_000, 1_800_000_000)}
    signature = _b64url(rng.randbytes(rng.choice([32, 64, 256])))
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}.{signature}"


def make_url_credential(rng: random.Random, fakers: Fakers) -> str:
    fake = fakers("en_US")
    scheme = rng.choice(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "https", "amqp", "ftp"])
    password = "".join(rng.choices(ALNUM + "!$%*", k=rng.randint(8, 24)))
    return f"{scheme}://{fake.user_name()}:{password}@{fake.domain_name()}:{rng.randint(1000, 9999)}/app"


def _keyed(prefix: str, count: int, alphabet: str = ALNUM) -> Callable[[random.Random, Fakers], str]:
    return lambda rng, fakers: prefix + "".join(rng.choices(alphabet, k=count))


def make_aws_key(rng: random.Random, fakers: Fakers) -> str:
    return rng.choice(["AKIA", "ASIA"]) + "".join(rng.choices(string.ascii_uppercase + "234567", k=16))


def make_slack_token(rng: random.Random, fakers: Fakers) -> str:
    return f"xox{rng.choice('bpa')}-{_digits(rng, 12)}-{_digits(rng, 12)}-" + "".join(rng.choices(ALNUM, k=24))


def make_assigned_secret(rng: random.Random, fakers: Fakers) -> str:
    value = "".join(rng.choices(ALNUM + "_-", k=rng.randint(24, 48)))
    return value


def make_password(rng: random.Random, fakers: Fakers) -> str:
    return fakers("en_US").password(length=rng.randint(8, 16))


def make_licence(rng: random.Random, fakers: Fakers) -> str:
    fake = fakers("en_GB")
    style = rng.randrange(4)
    if style == 0:  # UK DVLA: 5 surname letters, 6 digits, 2 initials, digit, 2 check letters
        return (fake.last_name().upper() + "99999")[:5].replace("'", "9") + _digits(rng, 6) + "".join(
            rng.choices(string.ascii_uppercase, k=2)) + str(rng.randint(0, 9)) + "".join(
            rng.choices(string.ascii_uppercase, k=2))
    if style == 1:  # California and similar: letter + 7 digits
        return rng.choice(string.ascii_uppercase) + _digits(rng, 7)
    if style == 2:  # Florida: letter + 12 digits in groups
        return f"{rng.choice(string.ascii_uppercase)}{_digits(rng, 3)}-{_digits(rng, 3)}-{_digits(rng, 2)}-{_digits(rng, 3)}-0"
    return _digits(rng, rng.choice([8, 9, 12]))


_DATE_FORMATS = ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%B %d, %Y", "%d %B %Y", "%b %d, %Y", "%d %b %Y"]


def make_birth_date(rng: random.Random, fakers: Fakers) -> str:
    born = fakers(rng.choice(["en_US", "de_DE", "fr_FR"])).date_of_birth(minimum_age=1, maximum_age=95)
    return born.strftime(rng.choice(_DATE_FORMATS))


def make_name(rng: random.Random, fakers: Fakers) -> str:
    locale = rng.choice(NAME_LOCALES)
    fake = fakers(locale)
    if locale in ("ja_JP", "zh_CN", "ko_KR"):  # written family name first, as faker's name() does
        return fake.name()
    return rng.choice([f"{fake.first_name()} {fake.last_name()}", f"{fake.first_name()} {fake.last_name()}",
                       fake.last_name()])


def make_address(rng: random.Random, fakers: Fakers) -> str:
    address = fakers(rng.choice(ADDRESS_LOCALES)).address()
    return rng.choice([address, address.replace("\n", ", ")])


def from_faker(locale: str, method: str) -> Callable[[random.Random, Fakers], str]:
    return lambda rng, fakers: getattr(fakers(locale), method)()


# ------------------------------------------------------------------------------------------- kinds

ASK = ("Can you check {v} for me?", "Here it is: {v}", "{v} - is this right?",
       "I copied this from the form: {v}. What does it mean?", "Please fill in {v} in the second field.")


def _spec(name: str, expected: str, group: str, make: Callable, templates: tuple[str, ...], json_key: str,
          private_part: Callable[[str], tuple[int, int]] | None = None) -> KindSpec:
    return KindSpec(name, expected, group, make, templates, json_key, private_part)


def _userinfo(url: str) -> tuple[int, int]:
    """user:password in scheme://user:password@host: the host is no secret."""
    return url.index("://") + 3, url.rindex("@")


KINDS: tuple[KindSpec, ...] = (
    _spec("email", "email", "other", lambda r, f: f(r.choice(NAME_LOCALES[:9])).email(),
          ("Send the invoice to {v} please.", "my email is {v}", *ASK), "email"),
    _spec("phone", "phone", "other",
          lambda r, f: f(r.choice(["en_US", "en_GB", "fr_FR", "ja_JP", "pt_BR"])).phone_number(),
          ("Call me on {v} after five.", "phone: {v}", "You can reach me at {v}."), "phone"),
    _spec("ipv4", "ip", "other", lambda r, f: f("en_US").ipv4(), ("The server at {v} is down.", *ASK), "host"),
    _spec("ipv6", "ip", "other", lambda r, f: f("en_US").ipv6(), ("ping {v} fails since Monday", *ASK), "host"),
    _spec("mac", "mac", "other", lambda r, f: r.choice([f("en_US").mac_address(), f("en_US").mac_address().upper().replace(":", "-")]),
          ("My laptop's MAC address is {v}.", "whitelist {v} on the router", *ASK), "mac"),
    _spec("card", "card", "checked", make_card, ("I paid with {v} yesterday.", "card number: {v}", *ASK), "card"),
    _spec("iban", "iban", "checked", make_iban, ("Transfer it to {v} by Friday.", "IBAN: {v}", *ASK), "iban"),
    _spec("us_ssn", "national_id", "checked", make_ssn, ("My SSN is {v}.", "SSN: {v}", "social security number {v}"), "ssn"),
    _spec("uk_nino", "national_id", "checked", make_nino,
          ("My NI number is {v}.", "National Insurance number: {v}", *ASK), "nino"),
    _spec("ca_sin", "national_id", "checked", from_faker("en_CA", "ssn"), ("My SIN is {v}.", *ASK), "sin"),
    _spec("fr_nir", "national_id", "checked", from_faker("fr_FR", "ssn"),
          ("Mon numéro de sécurité sociale est {v}.", *ASK), "nir"),
    _spec("it_codice_fiscale", "national_id", "checked", from_faker("it_IT", "ssn"),
          ("Il mio codice fiscale è {v}.", *ASK), "codice_fiscale"),
    _spec("es_dni", "national_id", "checked", lambda r, f: r.choice([f("es_ES").nif(), f("es_ES").nie()]),
          ("Mi DNI es {v}.", *ASK), "dni"),
    _spec("br_cpf", "national_id", "checked", make_cpf, ("Meu CPF é {v}.", "CPF: {v}"), "cpf"),
    _spec("cn_resident_id", "national_id", "checked", from_faker("zh_CN", "ssn"), ("我的身份证号是 {v}", *ASK), "id_card"),
    _spec("in_aadhaar", "national_id", "checked", make_aadhaar, ("My Aadhaar number is {v}.", "Aadhaar: {v}"), "aadhaar"),
    _spec("jp_my_number", "national_id", "checked", make_my_number, ("マイナンバー: {v}", "My Number is {v}"), "my_number"),
    _spec("de_tax_id", "national_id", "checked", make_de_tax_id,
          ("Meine Steuer-ID ist {v}.", "Steueridentifikationsnummer: {v}", "tax ID {v}"), "steuer_id"),
    _spec("nl_bsn", "national_id", "checked", from_faker("nl_NL", "ssn"), ("Mijn BSN is {v}.", "BSN: {v}"), "bsn"),
    _spec("se_personnummer", "national_id", "checked", from_faker("sv_SE", "ssn"),
          ("Mitt personnummer är {v}.", *ASK), "personnummer"),
    _spec("pl_pesel", "national_id", "checked", from_faker("pl_PL", "ssn"), ("Mój PESEL to {v}.", "PESEL: {v}"), "pesel"),
    _spec("passport", "passport", "other", lambda r, f: f(r.choice(NAME_LOCALES[:9])).passport_number(),
          ("My passport number is {v}.", "passport no. {v}, expires 2031", "Passport: {v}"), "passport_number"),
    _spec("driving_licence", "driving_licence", "other", make_licence,
          ("My driving licence number is {v}.", "driver's license: {v}", "DL# {v}"), "drivers_license"),
    _spec("birth_date", "birth_date", "other", make_birth_date,
          ("I was born on {v} in Leeds.", "Date of birth: {v}", "DOB {v}", "my birthday is {v}"), "date_of_birth"),
    _spec("private_key_pem", "secret", "key", make_private_key, ("Here is the key:\n{v}\nwhy does ssh reject it?", "{v}"), "private_key"),
    _spec("private_key_openssh", "secret", "key", lambda r, f: make_private_key(r, f, openssh=True),
          ("my id_ed25519 file:\n{v}\n", "{v}"), "ssh_key"),
    _spec("jwt", "secret", "key", make_jwt, ("The API returns 401 with token {v}", "Authorization: Bearer {v}", *ASK), "token"),
    _spec("url_credential", "secret", "key", make_url_credential,
          ("DATABASE_URL={v}", "connect with {v} and tell me why it times out", *ASK), "dsn", _userinfo),
    _spec("aws_access_key", "secret", "key", make_aws_key, ("aws_access_key_id = {v}", *ASK), "aws_access_key_id"),
    _spec("google_api_key", "secret", "key", _keyed("AIza", 35, ALNUM + "_-"), ("maps key {v} stopped working", *ASK), "google_key"),
    _spec("stripe_secret_key", "secret", "key", lambda r, f: f"sk_{r.choice(['live', 'test'])}_" + "".join(r.choices(ALNUM, k=r.choice([24, 99]))),
          ("stripe.api_key = '{v}'", *ASK), "stripe"),
    _spec("slack_token", "secret", "key", make_slack_token, ("SLACK_BOT_TOKEN={v}", *ASK), "slack"),
    _spec("github_token", "secret", "key",
          lambda r, f: r.choice(["ghp_", "gho_", "ghs_"]) + "".join(r.choices(ALNUM, k=36)) if r.random() < 0.7
          else "github_pat_" + "".join(r.choices(ALNUM + "_", k=82)), ("git clone with token {v}", *ASK), "github"),
    _spec("gitlab_token", "secret", "key", _keyed("glpat-", 20, ALNUM + "_-"), ("CI_TOKEN: {v}", *ASK), "gitlab"),
    _spec("openai_key", "secret", "key", lambda r, f: r.choice(["sk-", "sk-proj-"]) + "".join(r.choices(ALNUM + "_-", k=r.choice([48, 120]))),
          ("OPENAI_API_KEY={v}", "why does {v} give quota errors?", *ASK), "openai_api_key"),
    _spec("anthropic_key", "secret", "key", _keyed("sk-ant-api03-", 95, ALNUM + "_-"), ("my key {v}", *ASK), "anthropic"),
    _spec("huggingface_token", "secret", "key", _keyed("hf_", 34), ("huggingface-cli login --token {v}", *ASK), "hf_token"),
    _spec("assigned_secret", "secret", "key", make_assigned_secret,
          ("api_key = \"{v}\"", "client_secret: {v}", "export SECRET_KEY={v}", "the access token is {v}"), "client_secret"),
    _spec("password", "secret", "key", make_password, ("password: {v}", "my wifi password is {v}", "PWD={v}"), "password"),
    _spec("bearer_token", "secret", "key", _keyed("", 40, ALNUM + "-_."), ("curl -H 'Authorization: Bearer {v}'",), "auth"),
    _spec("person_name", "name", "person", make_name,
          ("Patient {v}, 54, presented with chest pain.", "Dear {v},\nthanks for your order.",
           "My colleague {v} will join the call.", "Please ask Dr. {v} to call back.", "Hi {v}, can we move the meeting?",
           "Thanks,\n{v}", "My name is {v} and I need help with my account.", "Mr {v} has not paid yet."), "name"),
    _spec("address", "address", "person", make_address,
          ("Please ship it to {v}.", "I moved to {v} last month.", "Address:\n{v}", "{v}"), "address"),
)
UNCUED_NAME = KindSpec("person_name_uncued", "name", "info", make_name,
                       ("Can you forward this to {v} tomorrow?", "{v} said the report is late.",
                        "I had lunch with {v} and we talked about the budget."), "x")


# ------------------------------------------------------------------------------------------- placing values

def _chat(rng: random.Random, sentence: str) -> str:
    who = rng.choice(["user", "me", "anna", "[10:42] tom"])
    return f"{who}: hey, quick one\n{who}: {sentence}\nassistant: Sure, give me a second.\n{who}: thanks!"


def place(rng: random.Random, spec: KindSpec, value: str, form: str) -> Labelled:
    """``value`` in a sentence, a chat transcript or a JSON object, with its span."""
    if form == "json":
        record = {"id": rng.randint(1, 99_999), spec.json_key: value, "note": "see attached"}
        text = json.dumps(record, ensure_ascii=False)
        shown = json.dumps(value, ensure_ascii=False)[1:-1]
    else:
        sentence = rng.choice(spec.templates).replace("{v}", value)
        text = _chat(rng, sentence) if form == "chat" else sentence
        shown = value
    start = text.index(shown)
    first, last = spec.private_part(value) if spec.private_part else (0, len(value))
    if form == "json":  # JSON escapes shift offsets: locate the private part by its own escaped text
        part = json.dumps(value[first:last], ensure_ascii=False)[1:-1]
        first = shown.index(part)
        last = first + len(part)
    return Labelled(text, [(spec.name, start + first, start + last)], form)


def positives(seed: int, per_kind: int, specs: tuple[KindSpec, ...] = (*KINDS, UNCUED_NAME)) -> list[Labelled]:
    rng, fakers = random.Random(seed), Fakers(seed)
    samples = []
    for spec in specs:
        for index in range(per_kind):
            form = ("sentence", "chat", "json")[index % 3] if spec.group != "info" else "sentence"
            samples.append(place(rng, spec, spec.make(rng, fakers), form))
    return samples


# ------------------------------------------------------------------------------------------- clean text

CODE_SNIPPETS = (
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i, i ** 2)",
    "SELECT id, name, created_at FROM users WHERE created_at > '2024-01-01' LIMIT 50;",
    "name: CI\non:\n  push:\n    branches: [main]\njobs:\n  test:\n    runs-on: ubuntu-latest",
    "docker run -p 8080:8080 -v $(pwd):/app python:3.11-slim python -m http.server 8080",
    "git log --oneline -5\n3f2a9c1 Fix the parser\n8b7e6d5 Add tests",
    "const sum = items.reduce((total, item) => total + item.price * item.qty, 0);",
    "x = torch.randn(4, 128, 768); y = model(x)[:, 0, :]",
    "{\"model\": \"meta-llama/Llama-3.1-8B-Instruct\", \"max_tokens\": 256, \"temperature\": 0.7}",
    "ERROR 2024-03-12 10:15:42,118 worker.py:88 task 4f1c2e failed after 3 retries (timeout=30s)",
    "tokenizer = AutoTokenizer.from_pretrained(\"bert-base-uncased\")",
    "curl -s https://api.example.com/v1/items?page=2&limit=50 | jq '.items[].id'",
    "pip install numpy==1.26.4 pandas>=2.1 'uvicorn[standard]'",
    "CREATE INDEX idx_orders_created ON orders (created_at DESC);",
    "assert response.status_code == 200, response.text",
    "kubectl get pods -n production -o wide | grep -v Running",
    "if (user.isAdmin && !session.expired) { grantAccess(user.id); }",
    "matrix = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]",
    "ssh deploy@build-server -p 2222 'systemctl restart api'",
    "cache_key = f\"{user_id}:{page}\"  # short-lived",
)
ORDINARY = (
    "The meeting moved to {date} at {time}.", "Order {order} shipped on {date} and costs ${price}.",
    "Version {version} fixes {count} bugs.", "We sold {count} units in {year}, up {pct}% on {year2}.",
    "Invoice {order} is due on {date}.", "Track parcel {track} on the courier's site.",
    "ISBN {isbn} is the second edition.", "The room is {count} m2 and rent is {price} per month.",
    "commit {sha} broke the build", "Request id {uuid} timed out after {count} ms.",
    "Population grew from {count} to {count2} between {year} and {year2}.",
    "Set the colour to {hex} and the width to {count}px.", "Table {count} is booked for {count2} people.",
    "The patient was stable and went home on {date}.", "Dear Sir or Madam, please find the report attached.",
    "Hi team, the release is on {date}.", "Customer Service will reply within {count} hours.",
    "My colleague and I disagree about the plan.", "Thanks, that works!", "Born in the USA is a famous album.",
    "Test case {order} failed with code {count}.", "The key point is that sales rose {pct}%.",
    "The password policy requires rotation every 90 days.", "Call the main desk if the token expires.",
)


def _look_alikes(rng: random.Random) -> list[str]:
    """Numbers shaped like identifiers that fail their check rule; each must survive."""
    card = _digits(rng, 15)
    card += next(d for d in string.digits if not checks.luhn_is_valid(card + d))
    iban = "DE" + _digits(rng, 20)
    while checks.iban_is_valid(iban):
        iban = "DE" + _digits(rng, 20)
    return [
        f"Reference {_group(card, 4, rng.choice([' ', '-', '.']))} is not a card.",
        f"Wrong account {_group(iban, 4, ' ')} was rejected.",
        f"Test SSN {rng.choice(['000', '666', '912'])}-{_digits(rng, 2)}-{_digits(rng, 4)} is invalid by design.",
        f"Example NI number {rng.choice(['QQ', 'ZZ', 'BG', 'GB'])} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} C.",
        f"Order number {_digits(rng, 9)} and ticket {_digits(rng, 11)} are both open.",
        f"Serial {_digits(rng, 12)} on the box.",
        f"Account {_digits(rng, 10)} at branch {_digits(rng, 4)}.",
        f"The build took {rng.randint(1, 59)}:{rng.randint(10, 59)}:{rng.randint(10, 59)} on runner {rng.randint(1, 99)}.",
    ]


def _fill(rng: random.Random, fakers: Fakers, template: str) -> str:
    fake = fakers("en_US")
    values = {
        "date": fake.date(), "time": fake.time()[:5], "order": str(rng.randint(10_000, 9_999_999)),
        "price": f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}", "version": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        "count": f"{rng.randint(2, 99_999):,}", "count2": f"{rng.randint(2, 999_999):,}", "year": str(rng.randint(1950, 2030)),
        "year2": str(rng.randint(1950, 2030)), "pct": str(rng.randint(1, 99)), "track": f"1Z{rng.randint(10**15, 10**16 - 1)}",
        "isbn": fake.isbn13(), "sha": fake.sha1()[:rng.choice([7, 40])], "uuid": fake.uuid4(), "hex": fake.hex_color(),
    }
    return template.format(**values)


def dev_sentences(data_dir: Path | None, limit: int) -> list[str]:
    """Unique lines of the dev sets' prompts (labels stripped); none when the folder is absent."""
    if data_dir is None or not data_dir.is_dir():
        return []
    lines: dict[str, None] = {}
    for path in sorted(data_dir.glob("*.jsonl")):
        for row in path.read_text(encoding="utf-8").splitlines():
            for line in json.loads(row)["prompt"].splitlines():
                body = line.split(":", 1)[1].strip() if ":" in line[:12] else line.strip()
                if len(body) >= 20:
                    lines[body] = None
    return list(lines)[:limit]


def clean_texts(seed: int, count: int, data_dir: Path | None) -> list[Labelled]:
    """``count`` clean texts: dev-set sentences where present, then generated ones; no private value in any."""
    rng, fakers = random.Random(seed + 1), Fakers(seed + 1)
    texts = dev_sentences(data_dir, count // 2)
    texts += list(CODE_SNIPPETS)
    while len(texts) < count:
        roll = rng.random()
        if roll < 0.3:
            texts.extend(_look_alikes(rng))
        elif roll < 0.7:
            texts.append(_fill(rng, fakers, rng.choice(ORDINARY)))
        else:
            locale = rng.choice(["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT"])
            texts.append(fakers(locale).paragraph(nb_sentences=2))
    return [Labelled(text, [], "clean") for text in texts[:count]]
