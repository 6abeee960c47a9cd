"""The schema of a converter's ``DIR/manifest.json``: what was built from which source, how big, and whether it
passed the quality gate.

It is the contract between the converters, which write it, and the runtime, which reads it to choose a build
(``edge_runtime.build_folder.choose_build``; ``edge-runtime run --model DIR/manifest.json``), so it lives with
the runtime and the converters import it. A pydantic model with ``extra="forbid"`` and a schema version; paths
inside are relative to the manifest's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GateThresholds(_Strict):
    """A build is accepted only when every metric is on the right side of its threshold."""

    min_top1_agreement: float = Field(default=0.85, ge=0, le=1)
    max_mean_kl: float = Field(default=0.15, ge=0)
    min_greedy_agreement: float = Field(default=0.5, ge=0, le=1)
    max_perplexity_ratio: float = Field(default=1.25, ge=1)


class GateResult(_Strict):
    """Quality of one build next to the source model, on the fixed prompts of ``converters.gate``."""

    top1_agreement: float
    mean_kl: float
    greedy_agreement: float
    perplexity: float
    reference_perplexity: float
    perplexity_ratio: float
    method: Literal["runtime", "weight-simulation"]
    method_note: str = ""
    prompts: int
    greedy_tokens: int
    thresholds: GateThresholds
    failures: list[str] = Field(default_factory=list)


class Build(_Strict):
    target: Literal["gguf", "onnx", "coreml"]
    preset: str
    entry: str = Field(description="the path a backend loads, relative to the manifest's folder")
    files: list[str]
    bytes: int = Field(ge=0)
    sha256: dict[str, str] = Field(description="file -> sha256, for every file in files")
    status: Literal["accepted", "rejected"]
    gate: GateResult
    conversion_s: float = Field(ge=0)
    notes: list[str] = Field(default_factory=list)


class SourceInfo(_Strict):
    path: str
    kind: Literal["hf", "gguf"]
    arch: str
    sha256: str


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    created_at: str
    source: SourceInfo
    tool_versions: dict[str, str]
    builds: list[Build] = Field(default_factory=list)

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / MANIFEST_NAME
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path`` (a manifest.json or the folder holding one); ``ManifestError`` otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(path, f"cannot read manifest ({exc.strerror or exc})") from exc
    except ValidationError as exc:
        raise ManifestError(path, f"not a valid manifest: {exc.error_count()} problem(s): "
                                  f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
