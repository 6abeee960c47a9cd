"""Finders for secrets: private key blocks, JWTs, credentials in URLs, API keys by their published prefixes,
``Bearer``/``Basic`` values and high-entropy values after key-like names.

A private key block is taken whole, from ``-----BEGIN`` to its ``-----END`` line (or to the end of its
base64 body when the paste was cut), so no line of it can leak on its own. Prefixes are the ones providers
publish for exactly this purpose (secret scanning); a value after ``key``/``token``/``secret`` needs 16+
characters of 3+ bits/char entropy, one after ``password`` any 6+ characters.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

from fallback.redaction.checks import shannon_entropy
from fallback.redaction.spans import Match

_KEY_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_KEY_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# Base64 lines and RFC 1421 headers (Proc-Type, DEK-Info, Comment) after a BEGIN line with no END.
_KEY_BODY = re.compile(r"(?:[ \t]*\r?\n[ \t]*(?:[A-Za-z0-9+/=]{4,}|[A-Za-z-]+:[^\n]{0,200}))*")

_PREFIXES = (
    r"sk-[A-Za-z0-9_-]{20,}",                                   # OpenAI, Anthropic (sk-ant-), DeepSeek
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[0-9A-Z]{16}",  # AWS access key ids
    r"AIza[0-9A-Za-z_-]{35}", r"ya29\.[0-9A-Za-z_-]{20,}", r"GOCSPX-[A-Za-z0-9_-]{28}",  # Google
    r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,}", r"whsec_[A-Za-z0-9+/=]{24,}",           # Stripe
    r"gh[pousr]_[A-Za-z0-9]{36,}", r"github_pat_[A-Za-z0-9_]{22,}", r"glpat-[A-Za-z0-9_-]{20,}",  # GitHub, GitLab
    r"xox[abposr]-[A-Za-z0-9-]{10,}", r"xapp-\d-[A-Za-z0-9-]{10,}",                     # Slack
    r"hf_[A-Za-z0-9]{30,}", r"gsk_[A-Za-z0-9]{40,}", r"r8_[A-Za-z0-9]{30,}",             # HF, Groq, Replicate
    r"xai-[A-Za-z0-9]{40,}", r"pplx-[A-Za-z0-9]{40,}",                                  # xAI, Perplexity
    r"npm_[A-Za-z0-9]{36}", r"pypi-[A-Za-z0-9_-]{50,}",                                 # package registries
    r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", r"SK[0-9a-f]{32}",                      # SendGrid, Twilio
    r"shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}", r"dop_v1_[a-f0-9]{64}",                       # Shopify, DigitalOcean
    r"\d{8,10}:AA[A-Za-z0-9_-]{33}",                                                    # Telegram bot
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",                           # JWT (header.payload.sig)
)
_PREFIXED = re.compile(r"(?<![A-Za-z0-9_-])(?:" + "|".join(_PREFIXES) + r")(?![A-Za-z0-9_-])")
_WEBHOOK = re.compile(r"(?:hooks\.slack\.com/services|discord(?:app)?\.com/api/webhooks)/(?P<value>[A-Za-z0-9/_-]{20,})")
_URL_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,20}://(?P<value>[^\s/@:]{1,256}:[^\s/@]{1,256})@")
_AUTH_SCHEME = re.compile(r"\b(?:Bearer|Basic)\s+(?P<value>[A-Za-z0-9._~+/=-]{16,})")
# Anchored on the keyword itself (no scan over a name prefix), so the search stays linear in the text.
_ASSIGNED = re.compile(
    r"(?i)(?P<name>key|token|secret|password|passwd|pwd|passphrase|credentials?|sig|signature|auth)(?![a-z0-9])"
    r"[\"']?(?:[ \t]*(?P<op>[:=]|=>)[ \t]*|\s+(?P<is>is)\s+)[\"']?(?P<value>[^\s\"',;]+)")
_PASSWORD_NAME = re.compile(r"(?i)(password|passwd|pwd|passphrase)$")


def _looks_secret(name: str, value: str, spoken: bool) -> bool:
    """``spoken`` is "password is X": X must mix letters with digits or symbols, or it is just a word."""
    if spoken and (value.isalpha() or len(value) < 6):
        return False
    if _PASSWORD_NAME.search(name):
        return len(value) >= 6
    return len(value) >= 16 and shannon_entropy(value) >= 3.0


def find_private_keys(text: str) -> Iterator[Match]:
    if "-----BEGIN" not in text:
        return
    ends = [m.end() for m in _KEY_END.finditer(text)]
    for begin in _KEY_BEGIN.finditer(text):
        at = bisect.bisect_left(ends, begin.end())
        end = ends[at] if at < len(ends) else _KEY_BODY.match(text, begin.end()).end()
        yield Match(begin.start(), end, text[begin.start():end])


_LONG_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{16,}")
_NAME_HINTS = ("key", "token", "secret", "pass", "pwd", "credential", "sig", "auth")


def _gated(text: str) -> Iterator[re.Pattern[str]]:
    """The patterns worth running on ``text``: cheap substring checks rule most of them out."""
    if _LONG_TOKEN.search(text):
        yield _PREFIXED
    if "hooks.slack.com" in text or "discord" in text:
        yield _WEBHOOK
    if "://" in text and "@" in text:
        yield _URL_USERINFO
    if "Bearer" in text or "Basic" in text:
        yield _AUTH_SCHEME


def find_secrets(text: str) -> Iterator[Match]:
    yield from find_private_keys(text)
    for pattern in _gated(text):
        for m in pattern.finditer(text):
            group = "value" if "value" in pattern.groupindex else 0
            yield Match(m.start(group), m.end(group), m.group(group))
    lowered = text.lower()
    if not any(hint in lowered for hint in _NAME_HINTS):
        return
    for m in _ASSIGNED.finditer(text):
        if _looks_secret(m.group("name"), m.group("value"), m.group("is") is not None):
            yield Match(m.start("value"), m.end("value"), m.group("value"))
