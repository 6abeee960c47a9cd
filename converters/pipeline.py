"""Runs a conversion: source -> every (target, preset) build -> quality gate -> ``DIR/manifest.json``.

Each target module (``converters.gguf``, ``converters.onnx``, ``converters.coreml``) has the same parts:
``PRESETS``, ``DEFAULT_PRESETS``, ``GATE_METHOD``, ``build(source, preset, out_dir, work_dir)`` (export +
quantize) and ``scorer(entry, source)`` (validate). The pipeline knows nothing target-specific: it times
each build, gates it against the source model run in the torch definition, hashes its files and appends it
to the manifest, which is rewritten after every build so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from converters.errors import UnknownPresetError
from converters.manifest import Build, GateThresholds, Manifest, SourceInfo
from converters.source import SourceModel, load_source, sha256_of

TARGET_MODULES = {"gguf": "converters.gguf", "onnx": "converters.onnx", "coreml": "converters.coreml"}
TOOLS = ("torch", "onnx", "onnxruntime", "onnxruntime-genai", "coremltools", "gguf", "llama-cpp-python",
         "transformers", "tokenizers", "safetensors")


@dataclass
class ConvertOptions:
    """What to build and how strictly to judge it; ``presets`` maps target -> preset names."""

    targets: Sequence[str] = ("gguf", "onnx", "coreml")
    presets: Mapping[str, Sequence[str]] = field(default_factory=dict)
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    greedy_tokens: int = 16
    progress: bool = True


def target_module(name: str):
    if name not in TARGET_MODULES:
        raise UnknownPresetError(f"unknown target {name!r}; known: {', '.join(TARGET_MODULES)}")
    return importlib.import_module(TARGET_MODULES[name])


def build_plan(options: ConvertOptions) -> list[tuple[str, str]]:
    """(target, preset) pairs in order; unknown names fail before any work starts."""
    plan = []
    for target in options.targets:
        module = target_module(target)
        for preset in options.presets.get(target) or module.DEFAULT_PRESETS:
            if preset not in module.PRESETS:
                raise UnknownPresetError(f"unknown {target} preset {preset!r}; known: {', '.join(module.PRESETS)}")
            plan.append((target, preset))
    return plan


def convert(source_path: Path, out_dir: Path, options: ConvertOptions | None = None) -> Manifest:
    """Builds, gates and records every planned build; returns the manifest (also written to disk)."""
    options = options or ConvertOptions()
    plan = build_plan(options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-convert-") as work:
        source = load_source(Path(source_path), Path(work))
        manifest = new_manifest(source)
        bar = _progress(len(plan) + 1, options.progress)
        bar.set_description("reference")
        gate_set = _reference_gate_set(source, options)
        bar.update()
        for target, preset in plan:
            bar.set_description(f"{target} {preset}")
            manifest.builds.append(run_build(source, target, preset, out_dir, Path(work), gate_set, options))
            manifest.write(out_dir)
            bar.update()
        bar.close()
    manifest.write(out_dir)
    return manifest


def new_manifest(source: SourceModel) -> Manifest:
    return Manifest(created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    source=SourceInfo(path=str(source.path), kind=source.kind, arch=source.config.arch,
                                      sha256=source.sha256),
                    tool_versions=tool_versions())


def tool_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for tool in TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _reference_gate_set(source: SourceModel, options: ConvertOptions):
    from converters.gate import TorchScorer, prepare_gate_set
    from edge_runtime.backends.json_tokenizer import JsonTokenizer

    tokenizer = JsonTokenizer(source.tokenizer_json, source.edge_metadata())
    return prepare_gate_set(TorchScorer(source.reference_model()), tokenizer.tokenize, options.greedy_tokens)


def run_build(source: SourceModel, target: str, preset: str, out_dir: Path, work_dir: Path, gate_set,
              options: ConvertOptions) -> Build:
    from converters.gate import evaluate

    module = target_module(target)
    build_dir = out_dir / f"{target}-{preset}"
    shutil.rmtree(build_dir, ignore_errors=True)
    started = time.perf_counter()
    entry, notes = module.build(source, preset, build_dir, work_dir)
    conversion_s = time.perf_counter() - started
    scorer = module.scorer(entry, source)
    gate = evaluate(scorer, gate_set, options.thresholds, module.GATE_METHOD, getattr(module, "GATE_NOTE", ""))
    getattr(scorer, "close", lambda: None)()
    files = sorted(p for p in build_dir.rglob("*") if p.is_file())
    return Build(target=target, preset=preset, entry=str(entry.relative_to(out_dir)),
                 files=[str(p.relative_to(out_dir)) for p in files], bytes=sum(p.stat().st_size for p in files),
                 sha256={str(p.relative_to(out_dir)): sha256_of(p) for p in files},
                 status="rejected" if gate.failures else "accepted", gate=gate,
                 conversion_s=round(conversion_s, 3), notes=notes)


class _PlainBar:
    """A minimal stderr progress line for when tqdm is not installed."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.label = total, 0, enabled, ""

    def set_description(self, label: str) -> None:
        self.label = label
        self._draw()

    def update(self, count: int = 1) -> None:
        self.done += count
        self._draw()

    def _draw(self) -> None:
        if self.enabled:
            filled = int(20 * self.done / max(self.total, 1))
            print(f"\r[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} {self.label:<24}",
                  end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(total, enabled)
    return tqdm(total=total, file=sys.stderr, disable=not enabled, unit="stage")
