"""The first-load probe: a child that crashes marks its configuration bad, loads step down, verdicts cache."""

from __future__ import annotations

import sys

import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.engine.probe import cached_choice, safe_settings
from edge_runtime.engine.verdicts import VerdictStore
from edge_runtime.errors import BackendError
from tests.edge_runtime.engine.test_cpu_safety import EPYC_AVX2, XEON_AMX


def crashing(when: str, info: str = EPYC_AVX2):
    def argv(path, settings_json):
        return [sys.executable, "-m", "tests.edge_runtime.engine.crashing_probe", str(path), settings_json, when,
                info]
    return argv


@pytest.fixture()
def store(tmp_path):
    return VerdictStore(tmp_path / "verdicts.json")


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    return path


def test_a_crashing_configuration_is_marked_and_the_load_steps_down(model_file, store):
    settings = LoadSettings(n_parallel=2, n_threads=2)
    choice = safe_settings(model_file, settings, info=EPYC_AVX2, store=store, probe_argv=crashing("extra"))
    assert choice.settings.extra_buffers is False and choice.probed == 2
    assert any("SIGSEGV" in note and "extra buffer types off" in note for note in choice.notes)
    # the verdicts are cached: the next load probes nothing and makes the same choice
    again = safe_settings(model_file, settings, info=EPYC_AVX2, store=store, probe_argv=crashing("always"))
    assert again.probed == 0 and again.settings == choice.settings and again.notes == choice.notes
    # plan and models read the same verdicts without probing
    cached = cached_choice(model_file, settings, info=EPYC_AVX2, store=store)
    assert cached["status"] == "probe passed" and "extra buffers off" in cached["configuration"]


def test_the_ladder_goes_as_far_as_it_must(model_file, store):
    settings = LoadSettings(n_parallel=2, n_threads=2)
    choice = safe_settings(model_file, settings, info=EPYC_AVX2, store=store, probe_argv=crashing("flash"))
    assert choice.settings.extra_buffers is False and choice.settings.flash_attn is False
    assert choice.settings.n_threads == 2 and choice.probed == 3


def test_every_configuration_crashing_is_a_typed_error(model_file, store):
    with pytest.raises(BackendError, match="every native configuration crashed"):
        safe_settings(model_file, LoadSettings(n_parallel=2, n_threads=2), info=EPYC_AVX2, store=store,
                      probe_argv=crashing("always"))
    assert cached_choice(model_file, LoadSettings(n_parallel=2, n_threads=2), info=EPYC_AVX2,
                         store=store)["status"] == "every configuration crashed"


def test_amx_is_avoided_without_a_probe_and_said(model_file, store):
    choice = safe_settings(model_file, LoadSettings(n_parallel=2), info=XEON_AMX, store=store,
                           probe_argv=crashing("extra", XEON_AMX))
    # the AMX rule already keeps weights out of the extra buffers, so the first probe passes
    assert choice.probed == 1 and choice.settings.extra_buffers is None
    assert any("AMX" in note for note in choice.notes)


def test_the_probe_can_be_turned_off(model_file, store):
    choice = safe_settings(model_file, LoadSettings(native_probe=False), info=EPYC_AVX2, store=store,
                           probe_argv=crashing("always"))
    assert choice.probed == 0 and choice.settings.native_probe is False


def test_the_real_probe_passes_on_the_bundled_model_once(bundled_path, store):
    settings = LoadSettings(n_ctx=512)
    first = safe_settings(bundled_path, settings, store=store)
    assert first.probed == 1 and first.settings == settings
    assert safe_settings(bundled_path, settings, store=store).probed == 0


def test_a_verdict_follows_the_file_content_not_its_path(model_file, store, tmp_path):
    """A one-file executable unpacks its model to a new folder at every start: that must not re-probe."""
    import shutil

    settings = LoadSettings(n_parallel=2, n_threads=2)
    safe_settings(model_file, settings, info=EPYC_AVX2, store=store, probe_argv=crashing("extra"))
    moved = tmp_path / "elsewhere" / "model.gguf"
    moved.parent.mkdir()
    shutil.copy(model_file, moved)
    again = safe_settings(moved, settings, info=EPYC_AVX2, store=store, probe_argv=crashing("always"))
    assert again.probed == 0 and again.settings.extra_buffers is False
    moved.write_bytes(b"GGUF" + bytes(63) + b"\x01")  # other content: probed anew
    assert safe_settings(moved, settings, info=EPYC_AVX2, store=store, probe_argv=crashing("extra")).probed == 2
