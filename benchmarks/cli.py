"""``edge-runtime bench``: measure every build this machine can run, compare machines, reach the cascade eval.

    edge-runtime bench [MODEL | MANIFEST] [--runs 5] [--prompt-lengths 64,256,1024] [--decode-tokens 64]
                       [--threads N] [--quick] [--no-gpu] [--label NAME] [--out bench-out]
    edge-runtime bench compare A.json B.json ... [--out DIR]
    edge-runtime bench eval ...            (the same command as ``edge-runtime eval``)

MODEL is a GGUF file or an ONNX build folder (default: the bundled model); a MANIFEST (``manifest.json`` or
its folder) means every accepted build whose backend runs here. Each build is measured in fresh processes
(``benchmarks.bench_run``); the report (``bench.json``, ``bench.md``, PNG plots) carries the device
fingerprint. ``edge_runtime.cli`` calls ``add_parsers``; heavy modules load inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

QUICK = {"runs": 2, "prompt_lengths": [16, 64], "decode_tokens": 8}
FULL = {"runs": 5, "prompt_lengths": [64, 256, 1024], "decode_tokens": 64}
QUICK_COPY_BYTES = 32 * 1024 * 1024


class _ModelOrCommand(argparse._SubParsersAction):
    """Sub-commands of ``bench`` where any other first word is the MODEL of a measurement run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choices = None  # any word is accepted: a known command, else a MODEL (argparse checks choices first)

    def alias(self, name: str, parser: argparse.ArgumentParser) -> None:
        self._name_parser_map[name] = parser

    def __call__(self, parser, namespace, values, option_string=None):
        if values and values[0] not in self._name_parser_map:
            values = ["run", *values]
        super().__call__(parser, namespace, values, option_string)


def add_parsers(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmark the builds this machine can run (see bench --help)",
                                  description="\n\n".join(__doc__.split("\n\n")[1:3]),
                                  formatter_class=argparse.RawTextHelpFormatter,
                                  epilog="also: bench compare A.json B.json ...; bench eval ... (= edge-runtime eval)")
    _add_measure_options(bench, None)
    bench.set_defaults(handler=bench_command, model=None)
    commands = bench.add_subparsers(dest="bench_command", action=_ModelOrCommand, metavar="[MODEL | compare | eval]")
    run = commands.add_parser("run", help="measure MODEL (a GGUF file, ONNX build folder or manifest)")
    run.add_argument("model", help="GGUF file, ONNX build folder, or manifest.json")
    _add_measure_options(run, argparse.SUPPRESS)
    compare = commands.add_parser("compare", help="merge bench.json files of several machines into one table and plot")
    compare.add_argument("reports", nargs="+", type=Path, help="bench.json files (or folders holding one)")
    compare.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder (default ./bench-out)")
    compare.set_defaults(handler=compare_command)
    if "eval" in subparsers.choices:  # edge_runtime.evaluation.cli registered it: the same parser here too
        commands.alias("eval", subparsers.choices["eval"])


def _add_measure_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The measurement options; ``default=SUPPRESS`` on the ``run`` form keeps values given before MODEL."""
    def given(value):
        return default if default is argparse.SUPPRESS else value

    parser.add_argument("--runs", type=int, default=given(None), help="warm rounds and fresh processes (default 5)")
    parser.add_argument("--prompt-lengths", type=_lengths, default=given(None), metavar="N,N,...",
                        help="prompt lengths in tokens for prefill (default 64,256,1024)")
    parser.add_argument("--decode-tokens", type=int, default=given(None), help="tokens per decode run (default 64)")
    parser.add_argument("--threads", type=int, default=given(None), help="CPU threads (default: all usable cores)")
    parser.add_argument("--quick", action="store_true", default=given(False),
                        help="tiny settings for a smoke test: 2 runs, prompts 16,64, 8 decoded tokens")
    parser.add_argument("--no-gpu", action="store_true", default=given(False), help="never offload to a GPU")
    parser.add_argument("--label", default=given(None), help="machine name in reports (default: the hostname)")
    parser.add_argument("--out", type=Path, default=given(Path("bench-out")),
                        help="output folder (default ./bench-out)")


def _lengths(text: str) -> list[int]:
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts, got {text!r}") from None
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(f"prompt lengths must be positive, got {text!r}")
    return sorted(set(lengths))


# -- options ---------------------------------------------------------------------------------------------------
@dataclass
class Options:
    runs: int
    prompt_lengths: list[int]
    decode_tokens: int
    threads: int
    quick: bool
    use_gpu: bool


def usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def options_from(args: argparse.Namespace) -> Options:
    """Explicit options win over the quick or full defaults; bad values raise ``BenchError``."""
    from benchmarks.bench_run import BenchError

    defaults = QUICK if args.quick else FULL
    def pick(value, default):
        return default if value is None else value

    options = Options(pick(args.runs, defaults["runs"]), pick(args.prompt_lengths, defaults["prompt_lengths"]),
                      pick(args.decode_tokens, defaults["decode_tokens"]), pick(args.threads, usable_cores()),
                      args.quick, not args.no_gpu)
    for name in ("runs", "threads"):
        if getattr(options, name) < 1:
            raise BenchError(f"--{name} must be at least 1; got {getattr(options, name)}")
    if options.decode_tokens < 2:
        raise BenchError(f"--decode-tokens must be at least 2 to time decoding; got {options.decode_tokens}")
    return options


# -- what to measure -------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One build to measure."""

    backend: str
    build: str
    path: Path
    model_bytes: int


def unavailable_reason(model_format: str, platform: str, installed: set[str]) -> str | None:
    """Why a format cannot run here (None when it can); ``installed`` holds importable module names."""
    if model_format == "coreml" and platform != "darwin":
        return "Core ML prediction runs only on macOS"
    needed = {"gguf": ("llama_cpp",), "onnx": ("onnxruntime", "tokenizers"), "coreml": ("coremltools",)}
    missing = [name for name in needed.get(model_format, ()) if name not in installed]
    if model_format not in needed:
        return f"no benchmark runner for format {model_format!r}"
    return f"{', '.join(missing)} not installed" if missing else None


def installed_modules() -> set[str]:
    from importlib.util import find_spec

    return {name for name in ("llama_cpp", "onnxruntime", "tokenizers", "coremltools") if find_spec(name)}


def manifest_targets(manifest, folder: Path, reason_for) -> tuple[list[Target], list]:
    """Targets for the accepted builds that can run here; the others as ``Skipped`` with the reason."""
    from benchmarks.bench_report import Skipped

    targets, skipped = [], []
    for build in manifest.builds:
        reason = reason_for(build.target)
        if build.status != "accepted":
            reason = "rejected by the quality gate" + (f": {build.gate.failures[0]}" if build.gate.failures else "")
        if reason:
            skipped.append(Skipped(backend=build.target, build=build.preset, reason=reason))
        else:
            targets.append(Target(build.target, build.preset, folder / build.entry, build.bytes))
    return targets, skipped


def _manifest_path(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".json":
        return path
    return path / "manifest.json" if (path / "manifest.json").is_file() else None


def find_targets(model: str | None) -> tuple[list[Target], list]:
    """The builds to measure for MODEL: the bundled one, a file or folder, or a manifest's builds."""
    from benchmarks.bench_run import BenchError

    installed = installed_modules()
    reason_for = lambda model_format: unavailable_reason(model_format, sys.platform, installed)  # noqa: E731
    manifest = _manifest_path(Path(model).expanduser()) if model else None
    targets, skipped = (_from_manifest(manifest, reason_for) if manifest else ([_single_target(model, reason_for)], []))
    if not targets:
        reasons = "; ".join(f"{item.backend} {item.build}: {item.reason}" for item in skipped) or "no builds"
        raise BenchError(f"{model}: nothing this machine can measure ({reasons})")
    return targets, skipped


def _from_manifest(path: Path, reason_for) -> tuple[list[Target], list]:
    from benchmarks.bench_run import BenchError
    from converters.errors import ConversionError
    from converters.manifest import read_manifest

    try:
        manifest = read_manifest(path)
    except ConversionError as exc:
        raise BenchError(str(exc)) from exc
    return manifest_targets(manifest, path.parent, reason_for)


def _single_target(model: str | None, reason_for) -> Target:
    from benchmarks.bench_run import BenchError
    from edge_runtime.gguf_file import read_header
    from edge_runtime.models import resolve_model

    resolved = resolve_model(model)  # ModelFileError (one line, exit 2) for a missing or unusable file
    reason = reason_for(resolved.format)
    if reason:
        raise BenchError(f"{resolved.path}: cannot benchmark a {resolved.format} model here: {reason}")
    if resolved.format == "gguf":
        read_header(resolved.path)  # a truncated or corrupt header fails here, not in a child process
    path = Path(resolved.path)
    size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return Target(resolved.format, path.stem if path.is_file() else path.name, path, size)


# -- the measurement command -------------------------------------------------------------------------------------
def bench_command(args: argparse.Namespace) -> int:
    from benchmarks import bench_report, fingerprint, roofline

    options = options_from(args)
    targets, skipped = find_targets(args.model)
    device = fingerprint.collect(args.label)
    bandwidth = roofline.measure_copy_bandwidth(QUICK_COPY_BYTES if options.quick else roofline.COPY_BYTES,
                                                threads=options.threads)
    results = measure_targets(targets, options, device["accelerator"], bandwidth, skipped)
    device["load_average_after"] = fingerprint.load_average()
    report = bench_report.BenchReport(
        created_at=_now(), model=str(args.model or "bundled"), device=device, bandwidth_bytes_per_s=bandwidth,
        settings=bench_report.BenchSettings(runs=options.runs, prompt_lengths=options.prompt_lengths,
                                            decode_tokens=options.decode_tokens, threads=options.threads,
                                            quick=options.quick),
        results=results, skipped=skipped)
    written = bench_report.write_report(report, args.out)
    print(bench_report.markdown_report(report))
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 0 if results else 2


def measure_targets(targets, options: Options, accelerator: dict, bandwidth: float, skipped: list):
    """A result for every target; a failing build goes to ``skipped`` unless it is the only one."""
    from benchmarks.bench_report import Skipped
    from benchmarks.bench_run import BenchError, measure_target

    progress = ProgressBar(sum(target_steps(options) for _ in targets))
    results = []
    for target in targets:
        try:
            result = measure_target(target, options, accelerator, bandwidth, progress)
        except BenchError as exc:
            if len(targets) == 1:
                progress.finish()
                raise
            skipped.append(Skipped(backend=target.backend, build=target.build, reason=str(exc)))
            continue
        results.append(result)
    progress.finish()
    return results


def target_steps(options: Options) -> int:
    """Progress events of one build: the full process, then one cold-only process per extra run."""
    return 2 + options.runs * (len(options.prompt_lengths) + 1) + 2 * (options.runs - 1)


class ProgressBar:
    """``[#####.....] 12/40 gguf Q4_K_M: prefill 256`` on stderr; redrawn in place on a terminal, else one line
    per build so logs stay short."""

    def __init__(self, total: int, stream=None, width: int = 30) -> None:
        self.total, self.done, self.width = max(total, 1), 0, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_label = ""

    def advance(self, label: str, steps: int = 1) -> None:
        self.done = min(self.total, self.done + steps)
        build = label.split(":")[0]
        if self.tty or build != self.last_label.split(":")[0]:
            self._draw(label)
        self.last_label = label

    def _draw(self, label: str) -> None:
        filled = self.width * self.done // self.total
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label}"
        self.stream.write(("\r\033[K" + line) if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- compare -----------------------------------------------------------------------------------------------------
def compare_command(args: argparse.Namespace) -> int:
    from benchmarks import bench_report
    from benchmarks.bench_run import BenchError

    try:
        reports = [bench_report.read_report(path) for path in args.reports]
    except ValueError as exc:
        raise BenchError(str(exc)) from exc
    written = bench_report.write_compare(reports, args.out)
    print(bench_report.compare_markdown(reports, bench_report.machine_labels(reports)))
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 0
