"""Benchmark: the bundled Gemma 3 270M Q4_K_M through every converter target.

Per build it reports bytes, conversion time, the quality-gate metrics, and greedy decode tokens/s through the
runtime's own backend (llama.cpp for GGUF, onnxruntime for ONNX; Core ML cannot run on Linux and shows n/a).
The ONNX quantized / fp32 decode ratios are the headline numbers
(target for int8: at least 3x). Prints a markdown table and
writes JSON (default ``bench-out/convert_bundled.json``)::

    python -m benchmarks.convert_bundled [--out DIR] [--targets gguf,onnx,coreml] [--decode-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PRESETS = {"gguf": ["Q8_0", "Q4_K_M"], "onnx": ["fp32", "int8", "int8-dynamic"], "coreml": ["int8", "int4"]}
DECODE_PROMPT = "Once upon a time, in a small village by the sea,"
RUNNABLE = ("gguf", "onnx")


def decode_tokens_per_s(target: str, entry: Path, count: int, threads: int, repeats: int = 3) -> float:
    """Best greedy decode speed of ``repeats`` runs after a warm-up, timed from the first generated token to
    the last. Best-of, because this machine is shared: slower runs measure the neighbours, not the build."""
    from edge_runtime.backends import load_backend
    from edge_runtime.backends.base import SamplingParams
    from edge_runtime.caps import LoadSettings

    backend = load_backend(target, entry, LoadSettings(n_ctx=512, n_threads=threads))
    try:
        ids = backend.tokenize(DECODE_PROMPT)
        list(backend.generate_tokens(ids, SamplingParams(max_tokens=4), lambda: False))  # warm-up
        speeds = []
        for _ in range(repeats):
            stamps = [time.perf_counter() for _ in backend.generate_tokens(
                ids, SamplingParams(max_tokens=count), lambda: False)]
            speeds.append((len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0)
    finally:
        backend.close()
    return max(speeds)


def build_rows(manifest, out_dir: Path, decode_tokens: int, threads: int) -> list[dict]:
    rows = []
    for build in manifest.builds:
        speed = (decode_tokens_per_s(build.target, out_dir / build.entry, decode_tokens, threads)
                 if build.target in RUNNABLE else None)
        gate = build.gate
        rows.append({"target": build.target, "preset": build.preset, "status": build.status, "bytes": build.bytes,
                     "conversion_s": build.conversion_s, "top1_agreement": gate.top1_agreement,
                     "mean_kl": gate.mean_kl, "greedy_agreement": gate.greedy_agreement,
                     "perplexity": gate.perplexity, "perplexity_ratio": gate.perplexity_ratio,
                     "gate_method": gate.method, "decode_tokens_per_s": speed})
    return rows


def onnx_speedups(rows: list[dict]) -> dict[str, float]:
    """Decode speed of each quantized ONNX build over fp32."""
    speeds = {r["preset"]: r["decode_tokens_per_s"] for r in rows if r["target"] == "onnx"}
    if not speeds.get("fp32"):
        return {}
    return {preset: speed / speeds["fp32"] for preset, speed in speeds.items() if preset != "fp32" and speed}


def markdown(rows: list[dict], speedups: dict[str, float]) -> str:
    lines = ["| build | status | MB | convert s | top-1 | mean KL | greedy | ppl | ppl ratio | gate | tok/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        speed = f"{r['decode_tokens_per_s']:.1f}" if r["decode_tokens_per_s"] else "n/a (macOS only)"
        lines.append(f"| {r['target']} {r['preset']} | {r['status']} | {r['bytes'] / 1e6:.1f} | "
                     f"{r['conversion_s']:.1f} | {r['top1_agreement']:.3f} | {r['mean_kl']:.4f} | "
                     f"{r['greedy_agreement']:.3f} | {r['perplexity']:.2f} | {r['perplexity_ratio']:.3f} | "
                     f"{r['gate_method']} | {speed} |")
    for preset, ratio in speedups.items():
        lines.append(f"\nONNX {preset} / fp32 decode speed: {ratio:.2f}x (target for int8: >= 3x)")
    return "\n".join(lines)


def converted_manifest(args):
    """(manifest, seconds): a fresh conversion, or the one already in ``args.out`` with ``--reuse``."""
    from converters import ConvertOptions, convert, read_manifest
    from edge_runtime.models import bundled_model_path

    if args.reuse:
        manifest = read_manifest(args.out)
        return manifest, sum(build.conversion_s for build in manifest.builds)
    targets = [t for t in args.targets.split(",") if t]
    started = time.perf_counter()
    manifest = convert(bundled_model_path(), args.out,
                       ConvertOptions(targets=targets, presets={t: PRESETS[t] for t in targets}))
    return manifest, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/convert-bundled"))
    parser.add_argument("--json", type=Path, default=Path("bench-out/convert_bundled.json"))
    parser.add_argument("--targets", default="gguf,onnx,coreml")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="measure the builds of an existing --out manifest")
    args = parser.parse_args(argv)
    manifest, total_s = converted_manifest(args)
    rows = build_rows(manifest, args.out, args.decode_tokens, args.threads)
    speedups = onnx_speedups(rows)
    print(markdown(rows, speedups))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"source_sha256": manifest.source.sha256, "total_convert_s": total_s,
                                     "tool_versions": manifest.tool_versions, "builds": rows,
                                     "onnx_decode_speedup_over_fp32": speedups}, indent=2), encoding="utf-8")
    print(f"\nwrote {args.json} (conversion of all builds took {total_s:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
