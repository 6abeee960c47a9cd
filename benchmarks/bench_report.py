"""The benchmark report: its JSON schema, the markdown table, the PNG plots, and merging reports of machines.

``bench.json`` is the contract (outside checks and ``bench compare`` read it), so it is a pydantic model with
a schema version; ``extra="forbid"`` on our own parts, ``extra="allow"`` on the device fingerprint so a newer
fingerprint still loads. Raw samples from ``bench_run`` become a ``Spread`` (median, min, max, n, samples);
the flat fields the checks rely on (``load_s``, ``ttft_s``, ``prefill_tokens_per_s``,
``decode_tokens_per_s``, ``peak_rss_bytes``, ``model_bytes``) are medians. matplotlib is imported only to
draw, and a report without it still gets its JSON and markdown.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
REPORT_NAME, TABLE_NAME = "bench.json", "bench.md"
THROUGHPUT_PLOT, LATENCY_PLOT = "tokens_per_s.png", "latency.png"
COMPARE_NAME, COMPARE_TABLE = "compare.json", "compare.md"
COMPARE_PLOT, COMPARE_LATENCY_PLOT = "compare.png", "compare_latency.png"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Spread(_Strict):
    median: float
    min: float
    max: float
    n: int
    samples: list[float] = Field(default_factory=list)

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Spread":
        values = [float(value) for value in samples] or [0.0]
        return cls(median=statistics.median(values), min=min(values), max=max(values), n=len(samples),
                   samples=values if samples else [])


class PrefillPoint(_Strict):
    prompt_tokens: int
    tokens_per_s: Spread


class RooflineResult(_Strict):
    bandwidth_bytes_per_s: float
    weights_bytes_per_token: int
    kv_bytes_per_token: int
    bytes_per_token: int
    context_tokens: int
    limit_tokens_per_s: float
    measured_tokens_per_s: float
    share_of_limit: float


class BuildResult(_Strict):
    backend: str
    build: str
    path: str
    model_bytes: int
    load_s: float = Field(description="median over fresh processes")
    ttft_s: float = Field(description="warm time to first token at the shortest prompt, median")
    cold_ttft_s: float = Field(description="first generation right after load, median over fresh processes")
    prefill_tokens_per_s: float = Field(description="median at the longest prompt length measured")
    decode_tokens_per_s: float
    token_latency_p50_s: float
    token_latency_p95_s: float
    peak_rss_bytes: int
    load: Spread
    cold_ttft: Spread
    warm_ttft: Spread
    prefill: list[PrefillPoint]
    decode: Spread
    token_latency: Spread = Field(description="gaps between decoded tokens, seconds")
    decoded_tokens: list[int]
    n_threads: int | None
    n_gpu_layers: int
    execution_providers: list[str]
    n_ctx: int
    roofline: RooflineResult | None = None
    notes: list[str] = Field(default_factory=list)


class Skipped(_Strict):
    backend: str
    build: str
    reason: str


class BenchSettings(_Strict):
    runs: int
    prompt_lengths: list[int]
    decode_tokens: int
    threads: int | None
    quick: bool


class Device(BaseModel):
    """The fingerprint from ``benchmarks.fingerprint.collect``; unknown extra fields are kept."""

    model_config = ConfigDict(extra="allow")

    label: str
    cpu: dict
    ram_bytes: int
    gpus: list[dict]
    os: dict
    python: dict
    libraries: dict
    llama_cpp: dict
    onnxruntime_providers: list[str]
    accelerator: dict
    load_average: list[float] | None = None
    load_average_after: list[float] | None = None


class BenchReport(_Strict):
    schema_version: int = SCHEMA_VERSION
    created_at: str
    model: str
    settings: BenchSettings
    device: Device
    bandwidth_bytes_per_s: float | None = None
    results: list[BuildResult]
    skipped: list[Skipped] = Field(default_factory=list)


# -- raw samples -> a result ---------------------------------------------------------------------------------
def percentile(values: Sequence[float], share: float) -> float:
    """Linear-interpolated percentile (``share`` in [0, 1]); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(backend: str, build: str, path: str, model_bytes: int, full: dict, colds: list[dict],
              roofline: RooflineResult | None = None) -> BuildResult:
    """A ``BuildResult`` from the full child's raw samples and the cold-only children's."""
    loads = [full["load_s"], *(cold["load_s"] for cold in colds)]
    cold_ttfts = [full["cold_ttft_s"], *(cold["cold_ttft_s"] for cold in colds)]
    prefill = [PrefillPoint(prompt_tokens=full["prefill_tokens"][length], tokens_per_s=Spread.of(samples))
               for length, samples in sorted(full["prefill"].items(), key=lambda item: int(item[0]))]
    gaps = full["token_gaps_s"]
    load, cold, warm, decode = (Spread.of(loads), Spread.of(cold_ttfts), Spread.of(full["warm_ttft_s"]),
                                Spread.of(full["decode_tokens_per_s"]))
    return BuildResult(
        backend=backend, build=build, path=path, model_bytes=model_bytes, load_s=load.median,
        ttft_s=warm.median, cold_ttft_s=cold.median,
        prefill_tokens_per_s=prefill[-1].tokens_per_s.median if prefill else 0.0,
        decode_tokens_per_s=decode.median, token_latency_p50_s=percentile(gaps, 0.5),
        token_latency_p95_s=percentile(gaps, 0.95),
        peak_rss_bytes=max([full["peak_rss_bytes"], *(cold["peak_rss_bytes"] for cold in colds)]),
        load=load, cold_ttft=cold, warm_ttft=warm, prefill=prefill, decode=decode,
        token_latency=Spread.of([round(gap, 6) for gap in gaps]), decoded_tokens=full["decoded_tokens"],
        n_threads=full.get("n_threads"), n_gpu_layers=full.get("n_gpu_layers", 0),
        execution_providers=full.get("execution_providers", []), n_ctx=full["n_ctx"], roofline=roofline,
        notes=full.get("notes", []))


# -- files ---------------------------------------------------------------------------------------------------
def write_report(report: BenchReport, out_dir: Path) -> list[Path]:
    """bench.json, bench.md and the plots in ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, table_path = out_dir / REPORT_NAME, out_dir / TABLE_NAME
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    table_path.write_text(markdown_report(report) + "\n", encoding="utf-8")
    return [json_path, table_path, *plot_report(report, out_dir)]


def read_report(path: Path) -> BenchReport:
    """A bench.json (or the folder holding one); ``ValueError`` with one line if it is not one."""
    from pydantic import ValidationError

    path = Path(path)
    path = path / REPORT_NAME if path.is_dir() else path
    try:
        return BenchReport.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{path}: not a bench report: {exc.error_count()} problem(s), first at "
                         f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


# -- markdown ------------------------------------------------------------------------------------------------
def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f}"


def _spread(spread: Spread, scale: float = 1.0, digits: int = 1) -> str:
    if spread.n <= 1:
        return f"{spread.median * scale:.{digits}f}"
    return f"{spread.median * scale:.{digits}f} ({spread.min * scale:.{digits}f}–{spread.max * scale:.{digits}f})"


def device_line(device: Device) -> str:
    cpu = device.cpu
    flags = ", ".join(name.upper() for name, present in cpu.get("flags", {}).items() if present) or "none"
    gpus = ", ".join(gpu["name"] for gpu in device.gpus) or "none"
    load = device.load_average[0] if device.load_average else None
    llama = device.llama_cpp
    backend = llama.get("gpu_backend") or ("BLAS" if llama.get("blas") else "CPU")
    libraries = ", ".join(f"{name} {version}" for name, version in device.libraries.items()
                          if version and name in ("llama-cpp-python", "onnxruntime", "onnxruntime-gpu", "numpy"))
    return (f"{device.label}: {cpu.get('model')} ({cpu.get('usable_cores')} cores; {flags}), "
            f"{device.ram_bytes / 2**30:.0f} GiB RAM, GPU: {gpus}; {device.os.get('system')} "
            f"{device.os.get('release')}, Python {device.python.get('version')}, {libraries}; llama.cpp "
            f"backend {backend}" + (f"; load average {load:.1f} at start" if load is not None else ""))


TABLE_HEADER = ("| backend | build | model MB | load s | TTFT cold ms | TTFT warm ms | prefill tok/s | "
                "decode tok/s | token p50 / p95 ms | peak RSS MB | roofline share |")


def table_row(result: BuildResult, machine: str | None = None) -> str:
    prefill = (f"{_spread(result.prefill[-1].tokens_per_s, digits=0)} @{result.prefill[-1].prompt_tokens}"
               if result.prefill else "n/a")
    share = f"{result.roofline.share_of_limit:.0%}" if result.roofline else "n/a"
    cells = [result.backend, result.build, _mb(result.model_bytes), _spread(result.load, digits=2),
             _spread(result.cold_ttft, 1000, 0), _spread(result.warm_ttft, 1000, 0), prefill,
             _spread(result.decode),
             f"{result.token_latency_p50_s * 1000:.1f} / {result.token_latency_p95_s * 1000:.1f}",
             _mb(result.peak_rss_bytes), share]
    return "| " + " | ".join(([machine] if machine else []) + cells) + " |"


def markdown_report(report: BenchReport) -> str:
    settings = report.settings
    lines = [f"**Device**: {device_line(report.device)}", "",
             f"Median (min–max) of {settings.runs} runs; prompt lengths {settings.prompt_lengths}, "
             f"{settings.decode_tokens} decoded tokens, threads {settings.threads or 'all'}"
             + (", quick mode" if settings.quick else "") + ".", "", TABLE_HEADER, _separator(TABLE_HEADER)]
    lines += [table_row(result) for result in report.results]
    lines += prefill_lines(report.results) + roofline_lines(report) + skipped_lines(report.skipped)
    return "\n".join(lines)


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def prefill_lines(results: list[BuildResult]) -> list[str]:
    lines = ["", "Prefill tokens/s by prompt length:", ""]
    for result in results:
        points = ", ".join(f"{point.prompt_tokens}: {point.tokens_per_s.median:,.0f}" for point in result.prefill)
        lines.append(f"- {result.backend} {result.build}: {points}")
    return lines


def roofline_lines(report: BenchReport) -> list[str]:
    if not report.bandwidth_bytes_per_s:
        return []
    lines = ["", f"Roofline: measured copy bandwidth {report.bandwidth_bytes_per_s / 1e9:.1f} GB/s (numpy copy on "
                 f"{report.settings.threads} thread(s), read + write).", ""]
    for result in report.results:
        roof = result.roofline
        if roof:
            lines.append(f"- {result.backend} {result.build}: {roof.bytes_per_token / 1e6:.1f} MB read per token "
                         f"(weights {roof.weights_bytes_per_token / 1e6:.1f} + KV {roof.kv_bytes_per_token / 1e6:.2f}"
                         f" at {roof.context_tokens} tokens), limit {roof.limit_tokens_per_s:.0f} tok/s, "
                         f"measured {roof.measured_tokens_per_s:.1f} = {roof.share_of_limit:.0%}")
    return lines


def skipped_lines(skipped: list[Skipped]) -> list[str]:
    if not skipped:
        return []
    return ["", "Not measured:", ""] + [f"- {item.backend} {item.build}: {item.reason}" for item in skipped]


# -- plots ---------------------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _error_bars(spreads: list[Spread]) -> list[list[float]]:
    return [[s.median - s.min for s in spreads], [s.max - s.median for s in spreads]]


def plot_throughput(rows: list[tuple[str, BuildResult]], path: Path, title: str) -> Path | None:
    """Grouped bars: prefill (longest prompt) and decode tokens/s per build, min–max as error bars."""
    plt = _pyplot()
    if plt is None or not rows:
        return None
    import numpy as np

    positions, width = np.arange(len(rows)), 0.38
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) + 3), 4.2))
    prefill = [result.prefill[-1].tokens_per_s if result.prefill else Spread.of([]) for _, result in rows]
    decode = [result.decode for _, result in rows]
    for offset, spreads, name in ((-width / 2, prefill, "prefill (longest prompt)"), (width / 2, decode, "decode")):
        bars = axis.bar(positions + offset, [s.median for s in spreads], width, yerr=_error_bars(spreads),
                        capsize=3, label=name)
        axis.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    axis.set_xticks(positions, [label for label, _ in rows], rotation=20, ha="right", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("tokens/s (log scale)")
    axis.set_title(title, fontsize=10)
    tallest = max((s.max for s in prefill + decode), default=1.0)
    axis.set_ylim(top=max(tallest, 1.0) * 5)  # headroom for the labels and the legend on the log scale
    axis.legend(fontsize=8, loc="upper right")
    return _save(figure, plt, path)


def plot_latency(rows: list[tuple[str, BuildResult]], path: Path, title: str) -> Path | None:
    """Box plots of the gaps between decoded tokens, one box per build (log scale: stalls stand out)."""
    plt = _pyplot()
    samples = {label: result.token_latency.samples for label, result in rows if result.token_latency.samples}
    if plt is None or not samples:
        return None
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(samples) + 3), 4.2))
    axis.boxplot([[value * 1000 for value in values] for values in samples.values()], whis=(5, 95),
                 showfliers=True, flierprops={"markersize": 2})
    axis.set_xticks(range(1, len(samples) + 1), list(samples), rotation=20, ha="right", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("ms per decoded token (log; whiskers p5–p95)")
    axis.set_title(title, fontsize=10)
    return _save(figure, plt, path)


def _save(figure, plt, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def build_label(result: BuildResult) -> str:
    return f"{result.backend} {result.build}"


def plot_report(report: BenchReport, out_dir: Path) -> list[Path]:
    title = f"{report.device.label}: {report.device.cpu.get('model')}"
    rows = [(build_label(result), result) for result in report.results]
    written = [plot_throughput(rows, out_dir / THROUGHPUT_PLOT, f"tokens/s — {title}"),
               plot_latency(rows, out_dir / LATENCY_PLOT, f"per-token decode latency — {title}")]
    return [path for path in written if path is not None]


# -- compare ---------------------------------------------------------------------------------------------------
def machine_labels(reports: list[BenchReport]) -> list[str]:
    """One label per report: the device label, made unique with #2, #3 when machines share one."""
    labels, seen = [], {}
    for report in reports:
        label = report.device.label
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def compare_markdown(reports: list[BenchReport], labels: list[str]) -> str:
    header = TABLE_HEADER.replace("| backend", "| machine | backend", 1)
    lines = ["Machines:", ""] + [f"- {device_line(report.device)}" for report in reports]
    lines += ["", header, _separator(header)]
    for label, report in zip(labels, reports):
        lines += [table_row(result, label) for result in report.results]
    return "\n".join(lines)


def write_compare(reports: list[BenchReport], out_dir: Path) -> list[Path]:
    """compare.json (the reports, labelled), compare.md and compare.png in ``out_dir``."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = machine_labels(reports)
    merged = {"schema_version": SCHEMA_VERSION,
              "machines": [{"label": label, "report": report.model_dump()} for label, report in zip(labels, reports)]}
    json_path, table_path = out_dir / COMPARE_NAME, out_dir / COMPARE_TABLE
    json_path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    table_path.write_text(compare_markdown(reports, labels) + "\n", encoding="utf-8")
    rows = [(f"{label}\n{build_label(result)}", result) for label, report in zip(labels, reports)
            for result in report.results]
    plots = [plot_throughput(rows, out_dir / COMPARE_PLOT, "tokens/s by machine, backend and build"),
             plot_latency(rows, out_dir / COMPARE_LATENCY_PLOT, "per-token decode latency by machine and build")]
    return [json_path, table_path] + [plot for plot in plots if plot]
