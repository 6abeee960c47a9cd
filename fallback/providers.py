"""Which cloud providers to call and how patiently: the validated configuration of the gateway.

Two sources: ``GatewayConfig.from_env()`` for the common single-provider case and
``GatewayConfig.from_toml(path)`` for several providers in fallback order::

    overall_deadline_s = 30
    escalation_budget_s = 8             # when a local answer is ready; see GatewayConfig
    redaction_kinds = ["email", "phone", "card"]

    [breaker]
    cooldown_s = 60

    [[providers]]
    name = "openai"
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"      # the NAME of the variable; the key itself never goes in a file
    price_input_per_mtok = 0.15
    price_output_per_mtok = 0.60
    escalation_budget_s = 12            # optional: this provider's own budget when a local answer is ready

Config never holds a key: ``api_key_env`` names the environment variable that does, and the gateway reads it
when it is built. Anything invalid raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fallback.breaker import BreakerSettings
from fallback.errors import ConfigError
from fallback.redaction import ALL_KINDS, check_kinds

ENV_BASE_URL = "EDGE_CLOUD_BASE_URL"
ENV_MODEL = "EDGE_CLOUD_MODEL"
ENV_API_KEY = "EDGE_CLOUD_API_KEY"
ENV_PRICE_IN = "EDGE_CLOUD_PRICE_IN"
ENV_PRICE_OUT = "EDGE_CLOUD_PRICE_OUT"
ENV_TIMEOUT_S = "EDGE_CLOUD_TIMEOUT_S"
ENV_ESCALATION_BUDGET_S = "EDGE_CLOUD_ESCALATION_BUDGET_S"

# How long an escalation may take when a usable local answer is already waiting, in seconds. Nielsen's
# response-time limits (Usability Engineering, 1993; "Response Times: The 3 Important Limits") put the
# limit for keeping a user's attention on a task at about 10 s; past it people switch away. The person has
# already waited for the local model, so the cloud gets 8 s, leaving ~2 s of that 10 s for a quick local
# turn. 8 s is enough for a healthy cloud's whole answer of a few hundred tokens (TTFT under 1 s, 50-100
# tokens/s), so only slow or failing clouds are cut, and the local answer is served instead.
DEFAULT_ESCALATION_BUDGET_S = 8.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProviderConfig(BaseModel):
    """One OpenAI-compatible endpoint; prices are US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    base_url: str
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    price_input_per_mtok: float = Field(default=0.0, ge=0)
    price_output_per_mtok: float = Field(default=0.0, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    escalation_budget_s: float | None = Field(default=None, gt=0)  # overrides the gateway's for this provider
    extra_headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _base_url_ends_in_v1(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://; got {value!r}")
        if not value.endswith("/v1"):
            raise ValueError(f"must end with /v1 (the OpenAI-compatible API root); got {value!r}")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _is_a_variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be the NAME of an environment variable (letters, digits, _), not the key")
        return value

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key read from ``api_key_env``; ConfigError if that variable is named but unset."""
        if self.api_key_env is None:
            return None
        key = (os.environ if environ is None else environ).get(self.api_key_env, "")
        if not key:
            raise ConfigError(f"provider {self.name!r}: environment variable {self.api_key_env} is not set")
        return key

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_input_per_mtok + completion_tokens * self.price_output_per_mtok) / 1e6


class BreakerConfig(BaseModel):
    """Circuit-breaker settings shared by every provider (see ``fallback.breaker``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_size: int = Field(default=20, ge=1)
    min_calls: int = Field(default=5, ge=1)
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    cooldown_s: float = Field(default=30.0, ge=0)
    half_open_max_calls: int = Field(default=1, ge=1)

    def settings(self) -> BreakerSettings:
        return BreakerSettings(**self.model_dump())


class GatewayConfig(BaseModel):
    """Providers in fallback order plus the retry, deadline, breaker and redaction policy.

    ``overall_deadline_s`` bounds a whole escalation from the start of the caller's request;
    ``escalation_budget_s`` (shorter) bounds one made while a usable local answer is waiting, from the start
    of the escalation (``DEFAULT_ESCALATION_BUDGET_S`` says why 8 s). Both are wall-clock.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[ProviderConfig] = Field(min_length=1)
    overall_deadline_s: float = Field(default=60.0, gt=0)
    escalation_budget_s: float = Field(default=DEFAULT_ESCALATION_BUDGET_S, gt=0)
    backoff_base_s: float = Field(default=0.25, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    jitter: bool = True
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    redact: bool = True
    redaction_kinds: tuple[str, ...] = ALL_KINDS

    @field_validator("redaction_kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_kinds(value)

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        names = [p.name for p in self.providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"provider names must be unique; repeated: {duplicates}")
        return self

    @classmethod
    def build(cls, data: Mapping[str, Any], *, source: str = "config") -> GatewayConfig:
        """Validate ``data``; ConfigError lists every bad field as ``path: reason``."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            # "from None": pydantic's own message echoes input values, which could include a pasted key.
            raise ConfigError(f"invalid {source}: {_describe(exc)}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig | None:
        """One provider from ``EDGE_CLOUD_*`` variables; None when ``EDGE_CLOUD_BASE_URL`` is unset."""
        env = os.environ if environ is None else environ
        if not env.get(ENV_BASE_URL, "").strip():
            return None
        if not env.get(ENV_MODEL, "").strip():
            raise ConfigError(f"{ENV_MODEL} must be set when {ENV_BASE_URL} is")
        provider: dict[str, Any] = {"name": "cloud", "base_url": env[ENV_BASE_URL],
                                    "model": env[ENV_MODEL].strip()}
        if env.get(ENV_API_KEY):
            provider["api_key_env"] = ENV_API_KEY
        for field, variable in (("price_input_per_mtok", ENV_PRICE_IN),
                                ("price_output_per_mtok", ENV_PRICE_OUT), ("timeout_s", ENV_TIMEOUT_S)):
            if env.get(variable, "").strip():
                provider[field] = _env_number(env, variable)
        settings: dict[str, Any] = {"providers": [provider]}
        if env.get(ENV_ESCALATION_BUDGET_S, "").strip():
            settings["escalation_budget_s"] = _env_number(env, ENV_ESCALATION_BUDGET_S)
        return cls.build(settings, source="EDGE_CLOUD_* environment")

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> GatewayConfig:
        """Load ``[[providers]]`` tables and top-level settings from a TOML file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read gateway config {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        return cls.build(data, source=str(path))


def _env_number(env: Mapping[str, str], variable: str) -> float:
    try:
        return float(env[variable])
    except ValueError as exc:
        raise ConfigError(f"{variable} must be a number; got {env[variable]!r}") from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error["loc"]) or "(root)"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)
