"""``ServerSettings``: where each setting comes from (flags > EDGE_* environment > TOML file > defaults),
the variables the server always read, the cloud's three forms, and errors that name the field."""

from __future__ import annotations

import pytest

from edge_runtime.cli import build_parser
from edge_runtime.server.cli import settings_from_flags
from edge_runtime.server.settings import ServerSettings, ServerSettingsError

FILE = """
parallel = 3
queue = 5
port = 9000
model_name = "from-file"
confidence_threshold = 0.2

[cloud]
overall_deadline_s = 12

[[cloud.providers]]
name = "inline"
base_url = "http://127.0.0.1:9/v1"
model = "inline-1"
"""


@pytest.fixture()
def settings_file(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text(FILE, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in [name for name in os.environ if name.upper().startswith("EDGE_")]:
        monkeypatch.delenv(name)


def serve_flags(*flags: str) -> ServerSettings:
    return settings_from_flags(build_parser().parse_args(["serve", *flags]))


def test_defaults_are_the_documented_ones():
    settings = serve_flags()
    assert (settings.host, settings.port, settings.parallel, settings.queue, settings.ctx) == \
        ("127.0.0.1", 8080, 8, 16, 2048)
    assert settings.prefix_cache and settings.ledger and settings.native_probe and not settings.in_process
    assert settings.admission_limit() == 24 and settings.gateway_config() is None


def test_flags_beat_environment_beat_file_beat_defaults(monkeypatch, settings_file):
    monkeypatch.setenv("EDGE_CONFIG_FILE", str(settings_file))
    monkeypatch.setenv("EDGE_PORT", "9100")
    monkeypatch.setenv("EDGE_PARALLEL", "4")
    settings = serve_flags("--parallel", "2")
    assert settings.parallel == 2  # flag over environment and file
    assert settings.port == 9100  # environment over file
    assert settings.model_name == "from-file" and settings.queue == 5  # file over defaults
    assert settings.ctx == 2048  # default
    assert settings.admission_limit() == 7


def test_a_flag_left_out_does_not_override_the_file(settings_file):
    settings = serve_flags("--config", str(settings_file), "--no-ledger")
    assert (settings.parallel, settings.ledger, settings.prefix_cache) == (3, False, True)


def test_every_serve_flag_lands_on_a_setting(tmp_path):
    settings = serve_flags(
        "--model", "m.gguf", "--backend", "onnx", "--host", "0.0.0.0", "--port", "1", "--api-key-env", "KEY",
        "--parallel", "2", "--queue", "3", "--ctx", "512", "--threads", "2", "--prefix-cache-mb", "8",
        "--no-prefix-cache", "--max-body-bytes", "10", "--cloud-config", "c.toml", "--ledger", "l.sqlite3",
        "--no-ledger", "--calibration", "cal.json", "--log-prompts", "--model-name", "mine", "--in-process",
        "--no-native-probe")
    assert settings.model_dump(include={
        "model", "backend", "host", "port", "api_key_env", "parallel", "queue", "ctx", "threads",
        "prefix_cache_mb", "prefix_cache", "max_body_bytes", "ledger", "log_prompts", "model_name", "in_process",
        "native_probe"}) == {
        "model": "m.gguf", "backend": "onnx", "host": "0.0.0.0", "port": 1, "api_key_env": "KEY", "parallel": 2,
        "queue": 3, "ctx": 512, "threads": 2, "prefix_cache_mb": 8.0, "prefix_cache": False,
        "max_body_bytes": 10, "ledger": False, "log_prompts": True, "model_name": "mine", "in_process": True,
        "native_probe": False}
    assert (str(settings.cloud_config), str(settings.ledger_path), str(settings.calibration)) == \
        ("c.toml", "l.sqlite3", "cal.json")


def test_the_variables_the_server_always_read_keep_their_names(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_CONFIDENCE_THRESHOLD", "0.7")
    monkeypatch.setenv("EDGE_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    monkeypatch.setenv("EDGE_MEMORY_BUDGET_BYTES", "123456789")
    monkeypatch.setenv("EDGE_OTEL_EXPORTER", " Console ")
    monkeypatch.setenv("EDGE_OTEL_RECORD_TEXT", "1")
    monkeypatch.setenv("EDGE_NATIVE_VERDICTS", "/elsewhere")  # another part's variable: not a setting, no error
    settings = ServerSettings.load()
    assert settings.confidence_threshold == 0.7 and settings.ledger_path == tmp_path / "ledger.sqlite3"
    assert settings.memory_budget_bytes == 123456789
    assert (settings.otel_exporter, settings.otel_record_text) == ("console", True)


def test_an_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("EDGE_OTEL_RECORD_TEXT", "")
    monkeypatch.setenv("EDGE_CLOUD_BASE_URL", "")
    settings = ServerSettings.load()
    assert settings.otel_record_text is False and settings.gateway_config() is None


def test_cloud_from_edge_cloud_variables_with_the_key_kept_secret(monkeypatch):
    monkeypatch.setenv("EDGE_CLOUD_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("EDGE_CLOUD_MODEL", "env-1")
    monkeypatch.setenv("EDGE_CLOUD_API_KEY", "sk-very-secret")
    monkeypatch.setenv("EDGE_CLOUD_TIMEOUT_S", "7")
    settings = ServerSettings.load()
    provider = settings.gateway_config().providers[0]
    assert (provider.name, provider.model, provider.timeout_s, provider.api_key_env) == \
        ("cloud", "env-1", 7.0, "EDGE_CLOUD_API_KEY")
    assert provider.api_key(settings.key_environment({})) == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings) and "sk-very-secret" not in str(settings.model_dump())


def test_cloud_config_file_then_inline_table_then_variables(monkeypatch, tmp_path, settings_file):
    monkeypatch.setenv("EDGE_CLOUD_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("EDGE_CLOUD_MODEL", "env-1")
    assert ServerSettings.load().gateway_config().providers[0].name == "cloud"
    inline = ServerSettings.load(config_file=settings_file).gateway_config()
    assert inline.providers[0].name == "inline" and inline.overall_deadline_s == 12
    gateway_file = tmp_path / "cloud.toml"
    gateway_file.write_text('[[providers]]\nname = "filed"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "f"\n',
                            encoding="utf-8")
    chosen = ServerSettings.load(config_file=settings_file, cloud_config=gateway_file).gateway_config()
    assert chosen.providers[0].name == "filed"


def test_errors_name_every_bad_field(tmp_path):
    with pytest.raises(ServerSettingsError, match="port: .*integer.*; prefix_cache_mb: .*greater than") as caught:
        ServerSettings.load(port="eighty", prefix_cache_mb=-1)
    assert isinstance(caught.value, ValueError)  # the CLI prints it as one line
    typo = tmp_path / "typo.toml"
    typo.write_text("paralel = 4\n", encoding="utf-8")
    with pytest.raises(ServerSettingsError, match="paralel: Extra inputs are not permitted"):
        ServerSettings.load(config_file=typo)
    with pytest.raises(ServerSettingsError, match="cannot read settings file"):
        ServerSettings.load(config_file=tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("parallel = = 4\n", encoding="utf-8")
    with pytest.raises(ServerSettingsError, match="not valid TOML"):
        ServerSettings.load(config_file=broken)


def test_serve_with_a_bad_setting_exits_2_with_one_line(capsys):
    from edge_runtime.cli import main

    assert main(["serve", "--prefix-cache-mb", "-1"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("edge-runtime: error: invalid server settings: prefix_cache_mb") and "\n" not in error
