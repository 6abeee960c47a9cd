"""What a converter's build folder looks like to the runtime, and which build of a manifest runs on this machine.

The converters write build folders and ``manifest.json`` (``edge_runtime.manifest``); the runtime reads them,
so both halves of that contract live here, with the runtime:

* ``resolve_build(path, layout)``: the folder and the entry a backend loads (``model.onnx``, the GenAI
  config's decoder file, ``model.mlpackage``), and the files that must sit beside it, or ``ModelFileError``
  naming what is missing; ``onnx_layout`` and ``COREML_LAYOUT`` describe the formats' folders;
* ``choose_build(manifest, formats, budget)``: pure data in, one decision out. The rule, in order:

  1. only ``accepted`` builds whose format has a backend here (``backend_formats_available``);
  2. only builds that fit: ``bytes * MEMORY_OVERHEAD <= memory_budget_bytes`` (weights dominate a decoder's
     memory; the overhead covers the KV cache and runtime buffers at the default context);
  3. prefer formats in ``FORMAT_PREFERENCE`` order (gguf, then onnx, then coreml: llama.cpp is the fastest
     backend measured on CPUs);
  4. within a format, best quality first: lowest gate ``mean_kl``, then highest ``top1_agreement``, then the
     smaller build.

  Nothing is read but the manifest; no model file is opened or loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import ModelFileError, NoBuildFitsError
from edge_runtime.manifest import Build, read_manifest

FORMAT_PREFERENCE = ("gguf", "onnx", "coreml")
MEMORY_OVERHEAD = 1.2
ONNX_MODEL_FILE = "model.onnx"
COREML_PACKAGE = "model.mlpackage"
GENAI_CONFIG = "genai_config.json"
TOKENIZER_FILE = "tokenizer.json"
EDGE_METADATA_FILE = "edge_model.json"


# -- build folders ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildLayout:
    """One format's build folder: the entry a backend loads (a file, or a package folder holding ``marker``)
    and the files that must sit beside it."""

    kind: str  # the format as messages name it: "ONNX", "Core ML"
    entry_name: str
    entry_suffix: str
    beside: tuple[str, ...]
    marker: str | None = None


COREML_LAYOUT = BuildLayout("Core ML", COREML_PACKAGE, ".mlpackage", (TOKENIZER_FILE, EDGE_METADATA_FILE),
                            marker="Manifest.json")


def is_genai_folder(folder: Path) -> bool:
    return (Path(folder) / GENAI_CONFIG).is_file()


def onnx_layout(folder: Path) -> BuildLayout:
    """An ONNX Runtime GenAI folder (its config names the decoder file; tokenizer.json beside it) or our
    explicit-KV layout (model.onnx, tokenizer.json and edge_model.json)."""
    if is_genai_folder(folder):
        entry = read_genai_config(folder)["model"]["decoder"].get("filename", ONNX_MODEL_FILE)
        return BuildLayout("ONNX", entry, ".onnx", (TOKENIZER_FILE,))
    return BuildLayout("ONNX", ONNX_MODEL_FILE, ".onnx", (TOKENIZER_FILE, EDGE_METADATA_FILE))


def read_genai_config(folder: Path) -> dict:
    return read_folder_json(Path(folder) / GENAI_CONFIG, "the GenAI config")


def read_folder_json(path: Path, what: str) -> dict:
    """One JSON file of a build folder; ``ModelFileError`` says why ``what`` cannot be used."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelFileError(path, f"cannot read {what} ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ModelFileError(path, f"{what} is not valid JSON ({exc})") from exc


def resolve_build(path: Path, layout: BuildLayout) -> tuple[Path, Path]:
    """(build folder, entry) for a build folder or its entry; ``ModelFileError`` names what is missing."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file or folder")
    entry = path if path.suffix == layout.entry_suffix else path / layout.entry_name
    _check_entry(entry, layout)
    for name in layout.beside:
        if not (entry.parent / name).is_file():
            raise ModelFileError(entry.parent / name, f"missing from the {layout.kind} build folder")
    return entry.parent, entry


def _check_entry(entry: Path, layout: BuildLayout) -> None:
    if layout.marker is not None:
        if not (entry / layout.marker).is_file():
            raise ModelFileError(entry, f"not a {layout.kind} package (no {layout.marker})")
        return
    if not entry.is_file():
        raise ModelFileError(entry, f"no {layout.kind} model in the build folder")
    if entry.stat().st_size == 0:
        raise ModelFileError(entry, "file is empty")


# -- choosing a build of a manifest ------------------------------------------------------------------------------
def rank_key(build: Build) -> tuple:
    format_rank = FORMAT_PREFERENCE.index(build.target) if build.target in FORMAT_PREFERENCE else 99
    return format_rank, build.gate.mean_kl, -build.gate.top1_agreement, build.bytes


def fits(build: Build, memory_budget_bytes: int) -> bool:
    return build.bytes * MEMORY_OVERHEAD <= memory_budget_bytes


def choose_build(manifest_path: Path, backend_formats_available: Iterable[str],
                 memory_budget_bytes: int) -> tuple[str, Path]:
    """(format, path to load) of the best accepted build that fits; ``NoBuildFitsError`` says why none
    (``ManifestError`` when the manifest cannot be read)."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    formats = set(backend_formats_available)
    usable = [b for b in manifest.builds if b.status == "accepted" and b.target in formats]
    fitting = [b for b in usable if fits(b, memory_budget_bytes)]
    if not fitting:
        raise NoBuildFitsError(manifest_path, _why_none(manifest.builds, usable, formats, memory_budget_bytes))
    best = min(fitting, key=rank_key)
    folder = manifest_path if manifest_path.is_dir() else manifest_path.parent
    return best.target, folder / best.entry


def _why_none(builds: list[Build], usable: list[Build], formats: set[str], budget: int) -> str:
    accepted = sum(b.status == "accepted" for b in builds)
    if not usable:
        return (f"no accepted build in a usable format: {accepted} of {len(builds)} builds accepted; "
                f"formats available here: {', '.join(sorted(formats)) or 'none'}")
    smallest = min(usable, key=lambda b: b.bytes)
    return (f"no accepted build fits the memory budget of {budget:,} bytes; the smallest, "
            f"{smallest.target} {smallest.preset}, needs about {int(smallest.bytes * MEMORY_OVERHEAD):,}")
