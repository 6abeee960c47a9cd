"""Runs a short decode of a model in a child process before the first real load of a configuration.

``python -m edge_runtime.engine.probe MODEL SETTINGS_JSON`` loads the model with those settings, decodes a few
tokens, scores a continuation and exits 0. The parent (``safe_settings``) reads how the child ended: killed by
a signal (or hung) marks the configuration bad and the next safer one is tried; the verdicts are cached (see
``verdicts``), so this costs one child per configuration per machine, once.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.caps import LoadSettings
from edge_runtime.child_process import describe_exit, killed_by_signal, python_module_argv
from edge_runtime.engine import safety
from edge_runtime.engine.verdicts import Verdict, VerdictStore, llama_build_id, verdict_key
from edge_runtime.errors import BackendError

log = logging.getLogger("edge_runtime.engine")
PROBE_MODULE = "edge_runtime.engine.probe"
PROBE_TIMEOUT_S = 120.0
PROBE_PROMPT = "The capital of France is"
PROBE_CONTEXT = 256

ProbeArgv = Callable[[Path, str], Sequence[str]]


def default_probe_argv(path: Path, settings_json: str) -> list[str]:
    return python_module_argv(PROBE_MODULE, str(path), settings_json)


@dataclass
class SafeChoice:
    """The settings to load with and what the choice cost or changed (for the result's ``notes``)."""

    settings: LoadSettings
    notes: list[str] = field(default_factory=list)
    probed: int = 0


def probe_disabled(settings: LoadSettings) -> bool:
    return not settings.native_probe or os.environ.get("EDGE_NATIVE_PROBE", "").lower() in ("0", "off", "false")


def safe_settings(path: Path, settings: LoadSettings, *, info: str | None = None,
                  store: VerdictStore | None = None, probe_argv: ProbeArgv = default_probe_argv) -> SafeChoice:
    """The first configuration of the safety ladder that does not crash on this machine (probing those
    without a cached verdict). Raises ``BackendError`` when every configuration crashed."""
    from edge_runtime.engine.cpu import has_amx, system_info

    info = system_info() if info is None else info
    choice = SafeChoice(settings, _cpu_notes(settings, info, has_amx(info)))
    if probe_disabled(settings):
        return choice
    store = store or VerdictStore()

    def verdict_of(key: str, candidate: LoadSettings) -> Verdict | None:
        verdict = store.get(key)
        if verdict is None:
            verdict, choice.probed = run_probe(path, candidate, info, probe_argv), choice.probed + 1
            if verdict is not None:
                store.put(key, verdict)
        return verdict

    candidate, _ = _walk_ladder(path, settings, info, verdict_of, lambda note: _step_note(choice.notes, path, note))
    if candidate is None:
        raise BackendError(f"{path}: every native configuration crashed in a probe on this machine "
                           f"({'; '.join(choice.notes)})")
    choice.settings = candidate
    return choice


def _walk_ladder(path: Path, settings: LoadSettings, info: str, verdict_of, say) -> tuple:
    """(the first configuration of the ladder whose verdict is ok or unknown, that verdict), stepping past the
    ones that crashed and telling ``say`` each step; (None, None) when every configuration crashed."""
    from edge_runtime.engine.cpu import cpu_fingerprint

    cpu, build = cpu_fingerprint(info), llama_build_id()
    crashed = None  # what the previous configuration did, said once the next one is tried
    for label, candidate in safety.ladder(settings, info):
        if crashed is not None:
            say(f"{crashed}; stepping down: {label}")
        verdict = verdict_of(verdict_key(path, safety.signature(candidate, info), cpu, build), candidate)
        if verdict is None or verdict.ok:
            return candidate, verdict
        crashed = f"native configuration ({verdict.configuration}) {verdict.detail}"
    say(crashed)
    return None, None


def _step_note(notes: list[str], path: Path, note: str) -> None:
    log.warning("%s: %s", path.name, note)
    notes.append(note)


def _cpu_notes(settings: LoadSettings, info: str, amx: bool) -> list[str]:
    if amx and safety.wants_repack(settings) and settings.extra_buffers is None:
        return ["weights kept out of llama.cpp's extra buffers: this CPU advertises AMX, where they crash"]
    return []


def run_probe(path: Path, settings: LoadSettings, info: str, probe_argv: ProbeArgv) -> Verdict | None:
    """Runs one probe child; None when it failed without a native crash (the real load will say why)."""
    import time

    configuration = safety.describe(settings, info)
    probe_settings = settings.model_copy(update={"n_ctx": min(settings.n_ctx, PROBE_CONTEXT),
                                                 "prefix_cache": False, "native_probe": False})
    try:
        finished = subprocess.run(list(probe_argv(path, probe_settings.model_dump_json())), capture_output=True,
                                  timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"hung for {PROBE_TIMEOUT_S:.0f} s in a probe", configuration, time.time())
    except OSError as exc:
        log.warning("could not start the native probe: %s", exc)
        return None
    if killed_by_signal(finished.returncode):
        return Verdict(False, f"{describe_exit(finished.returncode)} in a probe", configuration, time.time())
    if finished.returncode != 0:
        log.warning("native probe %s: %s", describe_exit(finished.returncode),
                    finished.stderr.decode("utf-8", "replace")[-500:])
        return None
    return Verdict(True, "ran", configuration, time.time())


def main(argv: Sequence[str]) -> int:
    """The child: load, decode a few tokens, score a continuation, exit 0 (or die trying)."""
    from edge_runtime.backends import SamplingParams, load_backend

    path, settings = Path(argv[0]), LoadSettings.model_validate_json(argv[1])
    backend = load_backend("gguf", path, settings)
    prompt = backend.tokenize(PROBE_PROMPT)
    for _ in backend.generate_tokens(prompt, SamplingParams(max_tokens=4), lambda: False):
        pass
    backend.score_continuations(prompt[:-1], [prompt[-1:]])
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def mark_crashed(path: Path, settings: LoadSettings, info: str, detail: str,
                 store: VerdictStore | None = None) -> None:
    """Records that ``settings`` crashed on this machine (seen outside a probe, e.g. by the supervisor)."""
    import time

    from edge_runtime.engine.cpu import cpu_fingerprint

    key = verdict_key(path, safety.signature(settings, info), cpu_fingerprint(info), llama_build_id())
    (store or VerdictStore()).put(key, Verdict(False, detail, safety.describe(settings, info), time.time()))


def cached_choice(path: Path, settings: LoadSettings, *, info: str | None = None,
                  store: VerdictStore | None = None) -> dict:
    """What a load of ``path`` would run with, from cached verdicts only (never probes): for plan / models."""
    from edge_runtime.engine.cpu import has_amx, system_info

    info = system_info() if info is None else info
    store = store or VerdictStore()
    notes = _cpu_notes(settings, info, has_amx(info))
    candidate, verdict = _walk_ladder(path, settings, info, lambda key, _candidate: store.get(key), notes.append)
    if candidate is None:
        return {"configuration": None, "status": "every configuration crashed", "notes": notes}
    status = "probe passed" if verdict is not None else "not probed yet (the first load probes it)"
    return {"configuration": safety.describe(candidate, info), "status": status, "notes": notes}
