"""Replace personal data and secrets with placeholders before a prompt leaves the device.

Each kind has a finder that proposes spans and, where the identifier has one, a check rule that rejects
look-alikes, so ordinary numbers (years, prices, order numbers) survive. Kinds in priority order:

    secret           private key blocks (PEM, OpenSSH, PGP) whole, JWTs, user:password in URLs, API keys by
                     published prefix (OpenAI/Anthropic sk-, AWS AKIA.., Google AIza.., Stripe sk_live_..,
                     Slack xox.-, GitHub ghp_.., GitLab glpat-, Hugging Face hf_, ...), Bearer/Basic values,
                     high-entropy values after key/token/secret names, anything 6+ after password
    email            local@domain.tld
    iban             any case, any grouping; registered country length and ISO 13616 mod-97
    card             13-19 digits, any of space/dash/dot between groups, Luhn
    national_id      US SSN, UK NINO, Canadian SIN, French NIR, Italian codice fiscale, Spanish DNI/NIE,
                     Brazilian CPF, Chinese resident ID, Indian Aadhaar, Japanese My Number, German
                     Steuer-ID, Dutch BSN, Swedish personnummer, Polish PESEL, each with its check rule
    passport         the number after "passport" (and its words in FR, ES, IT, DE, NL, PT)
    driving_licence  the number after "driving licence"/"driver's license" (and other languages)
    birth_date       a date after "born", "date of birth", "DOB", "birthday" (and other languages)
    mac              MAC addresses (aa:bb:.., aa-bb-.., aabb.ccdd.eeff)
    ip               IPv4 and IPv6 addresses the ``ipaddress`` module accepts
    phone            international, (area), NANP and trunk-0 national numbers
    address          postal addresses: a street line per locale plus its locality and postcode
    name             people's names after a cue (Mr/Dr, patient, Dear, my colleague, "name":)

Modules: ``checks`` (the rules, pure functions), one finder module per family (``credentials``,
``financial``, ``national``, ``network``, ``addresses``, ``names``), ``spans`` (what finders share) and
``redactor`` (priority, placeholders, restore). ``benchmarks.redaction`` measures recall per kind,
false positives on clean text and speed.
"""

from fallback.redaction.checks import iban_is_valid, luhn_is_valid, shannon_entropy
from fallback.redaction.redactor import (
    ALL_KINDS, RedactedMessages, RedactionResult, Redactor, check_kinds, find_spans, redact, redact_messages,
)
from fallback.redaction.spans import Match

__all__ = [
    "ALL_KINDS", "Match", "RedactedMessages", "RedactionResult", "Redactor", "check_kinds", "find_spans",
    "iban_is_valid", "luhn_is_valid", "redact", "redact_messages", "shannon_entropy",
]
