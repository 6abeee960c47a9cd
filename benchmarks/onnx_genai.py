"""ONNX GenAI builds of the bundled model side by side with llama.cpp Q4_K_M: one script, same prompts, same machine.

For each build (the ``onnx`` builds of a converter manifest: int4, int8 and the fp32 reference; and the bundled
Q4_K_M GGUF through llama.cpp) a fresh process loads it through ``edge_runtime.backends`` (what
``edge-runtime run`` uses: greedy, a log-probability for every token) and measures load time, prefill tokens/s
(a prompt of ``--prompt-tokens`` tokens to its first token), decode tokens/s (the ``--decode-tokens`` after the
first), and its peak RSS. Each round uses a different prompt opening, so no build reuses a cached prefix. For
the GenAI folders it also times onnxruntime-genai's own loop (``generate_next_token``, no log-probabilities)
to show what our per-token loop costs. Medians of ``--runs`` rounds after one warm-up.

    python -m benchmarks.onnx_genai --manifest DIR/manifest.json [--json docs/bench/onnx_genai.json]

Targets (issue #15): int4 or int8 decode >= 3x the fp32 reference and >= 0.6x llama.cpp Q4_K_M.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

FILLER = ("The old lighthouse keeper climbed the winding stairs each evening to light the lamp, and the ships "
          "that passed the rocky coast at night relied on its steady beam to find their way home safely. ")
OPENINGS = ("Story", "Chapter", "Note", "Entry", "Tale", "Record", "Letter", "Scene")


def prompt_ids(backend, length: int, round_index: int) -> list[int]:
    """``length`` tokens starting with a round-specific word, so rounds share no prefix beyond BOS."""
    text = f"{OPENINGS[round_index % len(OPENINGS)]} {round_index}: " + FILLER * (1 + length // 30)
    return backend.tokenize(text)[:length]


def time_generation(backend, ids: list[int], decode_tokens: int) -> dict:
    from edge_runtime.backends.base import SamplingParams

    start, times = time.perf_counter(), []
    for _ in backend.generate_tokens(ids, SamplingParams(max_tokens=decode_tokens + 1), lambda: False):
        times.append(time.perf_counter())
    return {"prefill_tokens_per_s": len(ids) / (times[0] - start),
            "decode_tokens_per_s": (len(times) - 1) / (times[-1] - times[0]), "decoded": len(times)}


def time_native_genai(folder: Path, ids: list[int], decode_tokens: int) -> float:
    """Decode tokens/s of onnxruntime-genai's own greedy loop on the same prompt."""
    import numpy as np
    import onnxruntime_genai as og

    from edge_runtime.backends.onnx_genai import generator_length, read_genai_config

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    length = generator_length(read_genai_config(folder), len(ids) + decode_tokens + 1)
    params.set_search_options(max_length=length, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    times = []
    while len(times) <= decode_tokens and not generator.is_done():
        generator.generate_next_token()
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def measure(model_format: str, path: str, args) -> dict:
    """One build in this process: load, one warm-up, ``args.runs`` measured rounds."""
    from edge_runtime.backends import load_backend
    from edge_runtime.caps import LoadSettings

    settings = LoadSettings(n_ctx=1024, n_threads=args.threads)
    started = time.perf_counter()
    backend = load_backend(model_format, Path(path), settings)
    load_s = time.perf_counter() - started
    rounds = [time_generation(backend, prompt_ids(backend, args.prompt_tokens, index), args.decode_tokens)
              for index in range(args.runs + 1)][1:]
    result = {"load_s": load_s, "provider": getattr(backend, "execution_provider", "llama.cpp CPU"),
              "backend": type(backend).__name__, "prompt_tokens": args.prompt_tokens,
              "decoded_tokens": statistics.median(r["decoded"] for r in rounds)}
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        result[key] = statistics.median(r[key] for r in rounds)
    ids = prompt_ids(backend, args.prompt_tokens, 0)
    backend.close()
    if model_format == "onnx" and Path(path, "genai_config.json").is_file():
        result["native_genai_decode_tokens_per_s"] = statistics.median(
            time_native_genai(Path(path), ids, args.decode_tokens) for _ in range(args.runs))
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def targets(args) -> list[tuple[str, str, str]]:
    """(label, format, path): the manifest's onnx builds, then the GGUF."""
    from converters.manifest import read_manifest
    from edge_runtime.models import bundled_model_path

    manifest_path = Path(args.manifest)
    folder = manifest_path if manifest_path.is_dir() else manifest_path.parent
    found = [(f"onnx {b.preset}", "onnx", str(folder / b.entry)) for b in read_manifest(manifest_path).builds
             if b.target == "onnx" and b.preset in args.presets]
    return [*sorted(found, key=lambda t: args.presets.index(t[0].split()[1])),
            ("llama.cpp Q4_K_M", "gguf", args.gguf or str(bundled_model_path()))]


def run_child(model_format: str, path: str, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.onnx_genai", "--child", model_format, path,
               "--threads", str(args.threads), "--runs", str(args.runs), "--prompt-tokens", str(args.prompt_tokens),
               "--decode-tokens", str(args.decode_tokens)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model_format} {path}: child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: dict[str, dict]) -> str:
    lines = ["| build | decode tok/s | prefill tok/s | load s | peak RSS MB | GenAI's own loop tok/s |",
             "|---|---|---|---|---|---|"]
    for label, r in rows.items():
        native = r.get("native_genai_decode_tokens_per_s")
        lines.append(f"| {label} | {r['decode_tokens_per_s']:.1f} | {r['prefill_tokens_per_s']:.1f} | "
                     f"{r['load_s']:.2f} | {r['peak_rss_bytes'] / 1e6:.0f} | {f'{native:.1f}' if native else '-'} |")
    return "\n".join(lines)


def ratios(rows: dict[str, dict]) -> dict[str, float]:
    decode = {label: r["decode_tokens_per_s"] for label, r in rows.items()}
    reference, llama = decode.get("onnx fp32"), decode.get("llama.cpp Q4_K_M")
    out = {}
    for preset in ("int4", "int8"):
        rate = decode.get(f"onnx {preset}")
        if rate and reference:
            out[f"{preset}_vs_fp32"] = rate / reference
        if rate and llama:
            out[f"{preset}_vs_llama_cpp_q4_k_m"] = rate / llama
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_genai", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", help="a converter manifest with onnx builds (int4, int8, fp32)")
    parser.add_argument("--gguf", help="the llama.cpp build to compare (default: the bundled Q4_K_M)")
    parser.add_argument("--presets", nargs="+", default=["int4", "int8", "fp32"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the results here (e.g. docs/bench/onnx_genai.json)")
    parser.add_argument("--child", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child, args)))
        return 0
    if not args.manifest:
        raise SystemExit("--manifest is required")
    rows, load_before = {}, os.getloadavg()
    for label, model_format, path in targets(args):
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        rows[label] = {"path": path, **run_child(model_format, path, args)}
    from benchmarks.fingerprint import cpu_info

    report = {"cpu": cpu_info()["model"], "threads": args.threads, "runs": args.runs,
              "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens,
              "load_average_before_after": [load_before[0], os.getloadavg()[0]],
              "builds": rows, "ratios": ratios(rows)}
    print(f"CPU: {report['cpu']}, {args.threads} threads, load average {load_before[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}\n" + table(rows))
    print(json.dumps(report["ratios"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
