"""Everything ``edge-runtime serve`` can be told, in one validated object read once at start.

A setting comes from the first of these that gives it (highest first):

1. a command-line flag (``--parallel 4``), or a keyword in code (``ServerSettings(parallel=4)``);
2. an environment variable: ``EDGE_`` and the setting's name in capitals (``EDGE_PARALLEL=4``); the
   variables the server read before keep their names (``EDGE_CONFIDENCE_THRESHOLD``, ``EDGE_LEDGER_PATH``,
   ``EDGE_MEMORY_BUDGET_BYTES``, ``EDGE_OTEL_EXPORTER``, ``EDGE_OTEL_RECORD_TEXT``, ``EDGE_CLOUD_*``); an
   empty variable counts as unset;
3. the settings file, TOML, named by ``--config`` or ``EDGE_CONFIG_FILE``: top-level keys are the settings'
   names (``parallel = 4``), and a ``[cloud]`` table takes the ``--cloud-config`` file's format;
4. the defaults below.

The cloud comes from one of three settings, the first that is set: ``cloud_config`` (a gateway TOML file with
``[[providers]]``, as ``--cloud-config`` always took), ``cloud`` (the same gateway settings inline: the
``[cloud]`` table, or a ``GatewayConfig`` in code), the single-provider ``EDGE_CLOUD_*`` variables. None of
them: no cloud. Keys: ``api_key`` and ``cloud_api_key`` hold one (best from the environment, never shown);
``api_key_env`` and a provider's ``api_key_env`` name the variable that holds one, read once at build.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_runtime.errors import EdgeRuntimeError
from fallback.providers import (ENV_API_KEY, ENV_BASE_URL, ENV_ESCALATION_BUDGET_S, ENV_MODEL, ENV_PRICE_IN,
                                ENV_PRICE_OUT, ENV_TIMEOUT_S, GatewayConfig)


class ServerSettingsError(EdgeRuntimeError, ValueError):
    """The server's settings are invalid or the settings file cannot be read; the message names each field."""


class ServerSettings(BaseSettings):
    """The server's settings; precedence: flags (or keywords) > ``EDGE_*`` environment > TOML file > defaults.

    See the module docstring for the sources and for how the cloud is chosen.
    """

    model_config = SettingsConfigDict(env_prefix="EDGE_", env_ignore_empty=True, extra="forbid", frozen=True)

    config_file: Path | None = None  # the TOML settings file itself (flag --config)
    # what is served, and where
    model: str | None = None  # GGUF file or manifest.json; None: the bundled model
    backend: Literal["gguf", "onnx", "coreml"] | None = None  # with a manifest: only builds of this format
    model_name: str = "edge-runtime-local"  # the id /v1/models reports
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # loading and capacity
    parallel: int = Field(default=8, ge=1)  # requests decoded together
    queue: int = Field(default=16, ge=0)  # requests waiting beyond those
    max_in_flight: int | None = Field(default=None, ge=0)  # admission limit; None: parallel + queue
    ctx: int = Field(default=2048, gt=0)  # context per request, tokens
    threads: int | None = Field(default=None, gt=0)
    prefix_cache: bool = True  # reuse KV state between requests (flag --no-prefix-cache turns it off)
    prefix_cache_mb: float = Field(default=64.0, ge=0)  # saved prefixes beyond the live KV cache
    in_process: bool = False  # the engine runs in the server's process, not a supervised child
    native_probe: bool = True  # first-load crash probe of the native configuration
    memory_budget_bytes: int | None = Field(default=None, ge=0)  # None: half of physical RAM
    # the HTTP edge
    api_key: SecretStr | None = None  # bearer key clients must send
    api_key_env: str | None = None  # or the name of the variable that holds it
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    log_prompts: bool = False
    # the cascade
    calibration: Path | None = None  # calibration JSON for free-generation confidence
    confidence_threshold: float | None = Field(default=None, ge=0, le=1)  # None: calibrated, else 0.5
    early_floor: float | None = Field(default=None, ge=0, le=1)  # stop a failing local answer early
    ledger: bool = True  # record requests (flag --no-ledger turns it off)
    ledger_path: Path | None = None  # None: $XDG_CACHE_HOME/edge-runtime/ledger.sqlite3
    otel_exporter: str = ""  # "console" or "otlp" exports a span tree per request
    otel_record_text: bool = False  # put prompts and answers in spans
    # the cloud (see the module docstring for which one is used)
    cloud_config: Path | None = None
    cloud: GatewayConfig | None = None
    cloud_base_url: str | None = None
    cloud_model: str | None = None
    cloud_api_key: SecretStr | None = None
    cloud_price_in: float | None = None
    cloud_price_out: float | None = None
    cloud_timeout_s: float | None = None
    cloud_escalation_budget_s: float | None = None

    @field_validator("otel_exporter")
    @classmethod
    def _exporter_name(cls, value: str) -> str:
        return value.strip().lower()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings, env_settings,
                                   dotenv_settings, file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _SettingsFile(settings_cls)

    @classmethod
    def load(cls, **values: Any) -> ServerSettings:
        """``ServerSettings(**values)`` with every invalid field listed in one ``ServerSettingsError``."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ServerSettingsError(f"invalid server settings: {_describe(exc)}") from None

    def admission_limit(self) -> int:
        return self.max_in_flight if self.max_in_flight is not None else self.parallel + self.queue

    def gateway_config(self) -> GatewayConfig | None:
        """The cloud: ``cloud_config``'s file, else ``cloud``, else the ``EDGE_CLOUD_*`` settings, else None."""
        if self.cloud_config is not None:
            return GatewayConfig.from_toml(self.cloud_config)
        if self.cloud is not None:
            return self.cloud
        return GatewayConfig.from_env(self._cloud_variables())

    def key_environment(self, environ: dict[str, str]) -> dict[str, str]:
        """Where provider keys are read from: ``environ`` plus ``cloud_api_key`` under its variable's name."""
        if self.cloud_api_key is None:
            return environ
        return {**environ, ENV_API_KEY: self.cloud_api_key.get_secret_value()}

    def _cloud_variables(self) -> dict[str, str]:
        values = {ENV_BASE_URL: self.cloud_base_url, ENV_MODEL: self.cloud_model,
                  ENV_API_KEY: self.cloud_api_key.get_secret_value() if self.cloud_api_key else None,
                  ENV_PRICE_IN: self.cloud_price_in, ENV_PRICE_OUT: self.cloud_price_out,
                  ENV_TIMEOUT_S: self.cloud_timeout_s, ENV_ESCALATION_BUDGET_S: self.cloud_escalation_budget_s}
        return {name: str(value) for name, value in values.items() if value is not None}


class _SettingsFile(PydanticBaseSettingsSource):
    """The TOML settings file named by a higher source (flag or environment), read whole; lowest precedence."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config_file")
        return read_settings_file(Path(path)) if path else {}


def read_settings_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ServerSettingsError(f"cannot read settings file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ServerSettingsError(f"{path} is not valid TOML: {exc}") from exc


def _describe(exc: ValidationError) -> str:
    # input values are left out: one could be a pasted key
    return "; ".join(f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
                     for error in exc.errors())
