"""Escalation to a cloud model when the local answer is not good enough, and the books that justify it.

Parts, each usable alone: ``errors`` (one root, ``FallbackError``), ``breaker`` (circuit breaker with an
injected clock), ``redaction`` (placeholders for personal data and secrets), ``providers`` (validated
configuration), ``gateway`` (the async HTTP client with retries, deadlines and fallback order), ``ledger``
(SQLite record of routes and costs). On top of them ``cascade`` answers a request: it reaches the local model
through ``local_leg.LocalLeg``, a protocol (this package imports nothing of ``edge_runtime``; the server adapts
the runtime to it), and names routes with ``policy.Route`` / ``policy.RouteTaken``. The fault-injecting
loopback cloud the tests and benchmarks use is a test double, not part of this package:
``benchmarks.loopback_cloud``. Only the errors load eagerly; everything else loads on first use, so
``import fallback`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from fallback.errors import (
    AllProvidersFailedError, CircuitOpenError, ConfigError, FallbackError, LedgerError, PrivacyRefusalError,
    ProviderConnectError, ProviderError, ProviderHTTPError, ProviderProtocolError, ProviderRateLimitedError,
    ProviderTimeoutError, StreamInterruptedError,
)

_LAZY = {
    "CircuitBreaker": "fallback.breaker", "BreakerSettings": "fallback.breaker",
    "redact": "fallback.redaction", "redact_messages": "fallback.redaction", "Redactor": "fallback.redaction",
    "RedactionResult": "fallback.redaction",
    "ProviderConfig": "fallback.providers", "GatewayConfig": "fallback.providers",
    "BreakerConfig": "fallback.providers",
    "CloudGateway": "fallback.gateway", "CloudRequest": "fallback.gateway", "CloudResponse": "fallback.gateway",
    "CloudChunk": "fallback.gateway", "Attempt": "fallback.gateway", "Usage": "fallback.gateway",
    "Ledger": "fallback.ledger", "LedgerEntry": "fallback.ledger", "LedgerSummary": "fallback.ledger",
    "format_summary": "fallback.ledger", "default_ledger_path": "fallback.ledger",
}

__all__ = [
    "AllProvidersFailedError", "CircuitOpenError", "ConfigError", "FallbackError", "LedgerError",
    "PrivacyRefusalError", "ProviderConnectError", "ProviderError", "ProviderHTTPError",
    "ProviderProtocolError", "ProviderRateLimitedError", "ProviderTimeoutError", "StreamInterruptedError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fallback' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
