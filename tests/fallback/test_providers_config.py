"""Gateway configuration from the environment and from TOML; bad input becomes a clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from fallback.errors import ConfigError
from fallback.providers import GatewayConfig, ProviderConfig

SECRET = "sk-test-0123456789abcdefghijklmnop"


def env(**values: str) -> dict[str, str]:
    return {"EDGE_CLOUD_BASE_URL": "https://api.example.com/v1/", "EDGE_CLOUD_MODEL": "gpt-x", **values}


def test_from_env_is_none_without_a_base_url() -> None:
    assert GatewayConfig.from_env({}) is None
    assert GatewayConfig.from_env({"EDGE_CLOUD_BASE_URL": "  ", "EDGE_CLOUD_MODEL": "m"}) is None


def test_from_env_reads_every_variable() -> None:
    config = GatewayConfig.from_env(env(EDGE_CLOUD_API_KEY=SECRET, EDGE_CLOUD_PRICE_IN="0.15",
                                        EDGE_CLOUD_PRICE_OUT="0.6", EDGE_CLOUD_TIMEOUT_S="12.5"))
    assert config is not None
    (provider,) = config.providers
    assert provider.base_url == "https://api.example.com/v1"  # trailing slash dropped
    assert provider.model == "gpt-x"
    assert (provider.price_input_per_mtok, provider.price_output_per_mtok) == (0.15, 0.6)
    assert provider.timeout_s == 12.5
    assert provider.api_key_env == "EDGE_CLOUD_API_KEY"


def test_key_from_env_never_appears_in_config_repr_or_dump() -> None:
    environ = env(EDGE_CLOUD_API_KEY=SECRET)
    config = GatewayConfig.from_env(environ)
    assert config is not None
    assert SECRET not in repr(config) and SECRET not in config.model_dump_json()
    assert config.providers[0].api_key(environ) == SECRET


def test_from_env_without_key_sends_no_key() -> None:
    config = GatewayConfig.from_env(env())
    assert config is not None and config.providers[0].api_key({}) is None


def test_named_key_variable_that_is_unset_is_a_config_error() -> None:
    provider = ProviderConfig(name="p", base_url="http://x/v1", model="m", api_key_env="MISSING_KEY")
    with pytest.raises(ConfigError, match="MISSING_KEY is not set"):
        provider.api_key({})


@pytest.mark.parametrize("variables, message", [
    ({"EDGE_CLOUD_MODEL": ""}, "EDGE_CLOUD_MODEL must be set"),
    ({"EDGE_CLOUD_BASE_URL": "https://api.example.com"}, "must end with /v1"),
    ({"EDGE_CLOUD_BASE_URL": "api.example.com/v1"}, "http:// or https://"),
    ({"EDGE_CLOUD_PRICE_IN": "cheap"}, "EDGE_CLOUD_PRICE_IN must be a number"),
    ({"EDGE_CLOUD_PRICE_OUT": "-1"}, "price_output_per_mtok"),
    ({"EDGE_CLOUD_TIMEOUT_S": "0"}, "timeout_s"),
])
def test_bad_environment_is_a_clear_config_error(variables: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.from_env(env(**variables))


def test_cost_uses_prices_per_million_tokens() -> None:
    provider = ProviderConfig(name="p", base_url="http://x/v1", model="m",
                              price_input_per_mtok=2.0, price_output_per_mtok=8.0)
    assert provider.cost_usd(1_000_000, 500_000) == pytest.approx(6.0)
    assert provider.cost_usd(1500, 300) == pytest.approx(0.0054)


TOML = """
overall_deadline_s = 20
backoff_base_s = 0.1
redaction_kinds = ["email", "card"]

[breaker]
cooldown_s = 60
min_calls = 3

[[providers]]
name = "primary"
base_url = "https://api.one.example/v1"
model = "big"
api_key_env = "ONE_KEY"
price_input_per_mtok = 1.0
price_output_per_mtok = 3.0
extra_headers = { "X-Team" = "edge" }

[[providers]]
name = "backup"
base_url = "http://127.0.0.1:8081/v1"
model = "small"
max_retries = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_from_toml_reads_providers_in_order_and_settings(tmp_path: Path) -> None:
    config = GatewayConfig.from_toml(write(tmp_path, TOML))
    assert [p.name for p in config.providers] == ["primary", "backup"]
    assert config.providers[0].extra_headers == {"X-Team": "edge"}
    assert config.providers[1].max_retries == 0
    assert config.overall_deadline_s == 20 and config.backoff_base_s == 0.1
    assert config.breaker.cooldown_s == 60 and config.breaker.settings().min_calls == 3
    assert config.redaction_kinds == ("email", "card")


@pytest.mark.parametrize("text, message", [
    ("[[providers]\nname=", "not valid TOML"),
    ("providers = []", "providers"),
    (TOML + "\nsurprise = 1\n", "surprise"),
    (TOML.replace('model = "small"', 'model = "small"\ntimeout = 5'), "providers.1.timeout"),
    (TOML.replace('name = "backup"', 'name = "primary"'), "unique"),
    (TOML.replace('["email", "card"]', '["email", "horoscope"]'), "horoscope"),
])
def test_invalid_toml_config_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.from_toml(write(tmp_path, text))


def test_missing_toml_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        GatewayConfig.from_toml(tmp_path / "nope.toml")


def test_a_key_pasted_into_api_key_env_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NAME of an environment variable") as info:
        GatewayConfig.from_toml(write(tmp_path, TOML.replace('"ONE_KEY"', f'"{SECRET}"')))
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None
