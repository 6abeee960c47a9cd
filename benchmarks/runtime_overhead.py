"""What per-token confidence and a cold start cost: our runtime against llama-cpp-python, side by side.

Interleaves, on the bundled model with the same prompt and threads:
  (a) raw ``Llama.generate`` greedy, no log-probabilities (the speed ceiling),
  (b) ``edge_runtime.Runtime`` greedy with a log-probability for every token, speculation off (the same
      repacked weights and plain steps as (a)); (b2) the same with default settings (policy-gated speculation);
      (b3) (b) with the middle layer tapped (``LoadSettings.middle_layer``: a ggml callback on every graph node),
  (c) ``Llama.create_completion(logprobs=5)`` with ``logits_all=True`` (what llama-cpp-python needs for them),
and prints decode tokens/s (median of the runs) with the ratios b/a and b/c. Then cold start: fresh processes,
from just before each starts to its first token (and the CPU seconds each used), in interleaved rounds:
``Runtime.load()`` + the first streamed token, ``edge-runtime run PROMPT --max-tokens 1`` (its first byte on
stdout), llama-cpp-python's defaults (``Llama(model_path, verbose=False)``: n_ctx 512, memory-mapped weights,
repacked where the CPU allows, half the cores for decoding) + a one-token completion, and llama-cpp-python with
our defaults' settings (n_ctx 2048, every core, weights read into memory). The llama-cpp-python children import
nothing of ours. Our packages' bytecode is written first (``compile_our_packages``), as an installed copy has it.
Targets: b/a >= 0.97, b/c >= 5, cold start <= 1.0x llama-cpp-python's defaults.

    python -m benchmarks.runtime_overhead [--runs 7] [--tokens 128] [--json out.json]
    python -m benchmarks.runtime_overhead --cold-only --cold-runs 7 --json docs/bench/runtime_overhead_cold.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROMPT = "The history of the printing press begins"
THREADS = 2


def decode_rate(token_times: list[float]) -> float:
    """Tokens per second after the first token (prefill excluded)."""
    if len(token_times) < 2:
        return 0.0
    return (len(token_times) - 1) / (token_times[-1] - token_times[0])


def run_raw(llama, tokens: int) -> float:
    prompt_ids = llama.tokenize(PROMPT.encode())
    llama.reset()
    times = []
    for _ in llama.generate(prompt_ids, temp=0.0, reset=True):
        times.append(time.perf_counter())
        if len(times) == tokens:
            break
    return decode_rate(times)


def run_ours(runtime, tokens: int) -> float:
    times = []
    for _ in runtime.stream(PROMPT, max_tokens=tokens):
        times.append(time.perf_counter())
    return decode_rate(times)


def run_logits_all(llama, tokens: int) -> float:
    llama.reset()
    times = [time.perf_counter() for _ in llama.create_completion(PROMPT, max_tokens=tokens, temperature=0.0,
                                                                   logprobs=5, stream=True)]
    return decode_rate(times)


def decode_comparison(path: str, runs: int, tokens: int) -> dict:
    from edge_runtime.backends.llamacpp_native import safe_high_level_llama
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime

    raw = safe_high_level_llama(model_path=path, n_ctx=2048, n_threads=THREADS, verbose=False)
    with_logits = safe_high_level_llama(model_path=path, n_ctx=2048, n_threads=THREADS, logits_all=True,
                                        verbose=False)
    ours = Runtime.load(path, settings=LoadSettings(n_ctx=2048, n_threads=THREADS, speculative=False,
                                                    prefix_cache=False))
    default = Runtime.load(path, settings=LoadSettings(n_ctx=2048, n_threads=THREADS, prefix_cache=False))
    tapped = Runtime.load(path, settings=LoadSettings(n_ctx=2048, n_threads=THREADS, speculative=False,
                                                      prefix_cache=False, middle_layer=True))
    rates = {"a_raw_generate": [], "b_edge_runtime": [], "b2_edge_runtime_default": [],
             "b3_edge_runtime_middle_layer": [], "c_logits_all": []}
    for _ in range(runs + 1):  # the first round warms up and is dropped
        rates["a_raw_generate"].append(run_raw(raw, tokens))
        rates["b_edge_runtime"].append(run_ours(ours, tokens))
        rates["b2_edge_runtime_default"].append(run_ours(default, tokens))
        rates["b3_edge_runtime_middle_layer"].append(run_ours(tapped, tokens))
        rates["c_logits_all"].append(run_logits_all(with_logits, tokens))
    return {name: statistics.median(values[1:]) for name, values in rates.items()} | {"runs": runs, "tokens": tokens}


# Each cold-start child prints FIRST at its first token; the parent times it from just before the fork.
COLD_OURS = """
import sys
from edge_runtime import Runtime
runtime = Runtime.load(sys.argv[1] if sys.argv[1] != "-" else None)
next(iter(runtime.stream(sys.argv[2], max_tokens=1)))
print("FIRST", flush=True)
"""
# llama-cpp-python alone (no edge_runtime import). Where the CPU advertises AMX, llama.cpp's extra buffer types
# crash at the first decode (see edge_runtime.engine.cpu), so there, and only there, they are turned off.
COLD_LLAMA = """
import sys, json
import llama_cpp
from llama_cpp import Llama
if sys.platform == "linux" and " amx" in open("/proc/cpuinfo").read():
    original = llama_cpp.llama_cpp.llama_model_default_params
    def defaults():
        params = original()
        params.use_extra_bufts = False
        return params
    llama_cpp.llama_cpp.llama_model_default_params = defaults
llama = Llama(model_path=sys.argv[1], verbose=False, **json.loads(sys.argv[3]))
next(iter(llama.create_completion(sys.argv[2], max_tokens=1, stream=True)))
print("FIRST", flush=True)
"""
# what our defaults load with (edge_runtime.caps.LoadSettings): 2048 tokens of context, every core, mmap
MATCHED_OPTIONS = {"n_ctx": 2048, "use_mmap": True}


@dataclass
class ColdRun:
    """One fresh process: seconds from just before its start to its first token, and the CPU it used."""

    first_token_s: float
    cpu_s: float


def _cold_argv(variant: str, path: str | None) -> list[str]:
    """The command line of one cold-start variant (``path`` None: the bundled default, as a user runs it)."""
    if variant == "ours_api":
        return [sys.executable, "-c", COLD_OURS, path or "-", PROMPT]
    if variant == "ours_cli":
        cli = [str(Path(sys.executable).with_name("edge-runtime"))]
        return [*cli, "run", PROMPT, "--max-tokens", "1", *(["--model", path] if path else [])]
    options = {} if variant == "llama_cpp_defaults" else dict(MATCHED_OPTIONS, n_threads=len(os.sched_getaffinity(0)))
    return [sys.executable, "-c", COLD_LLAMA, path, PROMPT, json.dumps(options)]


def time_to_first_token_in_fresh_process(argv: list[str], marker: bytes | None = b"FIRST") -> ColdRun:
    """Runs ``argv`` and times the first stdout line starting with ``marker`` (None: the first byte, which is
    where ``edge-runtime run`` writes the first token's text)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    elapsed = None
    while elapsed is None:
        chunk = process.stdout.readline() if marker else process.stdout.read(1)
        if not chunk:
            break
        if marker is None or chunk.startswith(marker):
            elapsed = time.perf_counter() - started
    process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if elapsed is None or process.returncode != 0:
        raise RuntimeError(f"{argv[:4]} ended without a first token (exit {process.returncode})")
    return ColdRun(elapsed, usage.ru_utime + usage.ru_stime)


COLD_VARIANTS = ("ours_api", "ours_cli", "llama_cpp_defaults", "llama_cpp_matched")


def cold_start_comparison(path: str, runs: int, default_model: bool = False) -> dict:
    """Interleaved rounds of every variant in fresh processes; the first round (which may probe the native
    configuration and fills the page cache) is dropped. Medians of wall time and of the children's CPU time."""
    rounds: dict[str, list[ColdRun]] = {variant: [] for variant in COLD_VARIANTS}
    compile_our_packages()
    for _ in range(runs + 1):
        for variant in COLD_VARIANTS:
            ours_path = None if default_model and variant.startswith("ours") else path
            marker = None if variant == "ours_cli" else b"FIRST"
            rounds[variant].append(time_to_first_token_in_fresh_process(_cold_argv(variant, ours_path), marker))
    medians = {f"{variant}_s": statistics.median(run.first_token_s for run in kept[1:])
               for variant, kept in rounds.items()}
    cpu = {f"{variant}_cpu_s": statistics.median(run.cpu_s for run in kept[1:]) for variant, kept in rounds.items()}
    return {"ours_s": medians["ours_api_s"], "llama_cpp_defaults_s": medians["llama_cpp_defaults_s"], **medians,
            **cpu, "runs": runs, "rounds_s": {variant: [round(run.first_token_s, 4) for run in kept]
                                              for variant, kept in rounds.items()},
            "load_average": os.getloadavg(), "cpu": cpu_name()}


def compile_our_packages() -> None:
    """Writes our packages' bytecode, as ``pip install`` does for an installed wheel (llama-cpp-python's and
    numpy's is there already). An editable checkout under ``PYTHONDONTWRITEBYTECODE`` (set on these VMs) would
    otherwise compile about 30 modules from source at every start (25 ms here), which no installed copy pays."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in ("edge_runtime", "fallback"):
        compileall.compile_dir(root / package, quiet=1)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: the bundled model)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cold-runs", type=int, default=None, help="cold-start rounds (default: max(3, runs/2))")
    parser.add_argument("--cold-only", action="store_true", help="measure only the cold start")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    from edge_runtime.models import resolve_model

    path = str(resolve_model(args.model).path)
    decode = None if args.cold_only else decode_comparison(path, args.runs, args.tokens)
    cold = cold_start_comparison(path, args.cold_runs or max(3, args.runs // 2), default_model=args.model is None)
    report = {"decode_tokens_per_s": decode, "cold_start": cold, "ratios": ratios_of(decode, cold)}
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


def ratios_of(decode: dict | None, cold: dict) -> dict:
    ratios = {"cold_ours_over_llama_cpp": cold["ours_s"] / cold["llama_cpp_defaults_s"],
              "cold_cli_over_llama_cpp": cold["ours_cli_s"] / cold["llama_cpp_defaults_s"],
              "cold_ours_over_llama_cpp_matched": cold["ours_s"] / cold["llama_cpp_matched_s"]}
    if decode is not None:
        ratios |= {"b_over_a": decode["b_edge_runtime"] / decode["a_raw_generate"],
                   "b_over_c": decode["b_edge_runtime"] / decode["c_logits_all"]}
        if "b3_edge_runtime_middle_layer" in decode:
            ratios["b3_over_b"] = decode["b3_edge_runtime_middle_layer"] / decode["b_edge_runtime"]
    return ratios


def format_decode(decode: dict, ratios: dict) -> list[str]:
    return [
        f"decode tokens/s (median of {decode['runs']} runs, {decode['tokens']} tokens, {THREADS} threads)",
        "| path | tokens/s |", "|---|---|",
        f"| (a) llama-cpp-python Llama.generate, no logprobs | {decode['a_raw_generate']:.1f} |",
        f"| (b) edge-runtime, logprob on every token, no speculation | {decode['b_edge_runtime']:.1f} |",
        f"| (b2) edge-runtime defaults (policy-gated speculation) | {decode['b2_edge_runtime_default']:.1f} |",
        f"| (b3) (b) with the middle layer tapped | {decode['b3_edge_runtime_middle_layer']:.1f} |",
        f"| (c) llama-cpp-python create_completion(logprobs=5), logits_all | {decode['c_logits_all']:.1f} |",
        f"b/a = {ratios['b_over_a']:.3f} (target >= 0.97); b/c = {ratios['b_over_c']:.1f} (target >= 5); "
        f"b3/b = {ratios['b3_over_b']:.3f} (the tap's cost)",
    ]


COLD_LABELS = {
    "ours_api": "edge-runtime `Runtime.load()` + first streamed token (defaults: n_ctx 2048, all cores, mmap)",
    "ours_cli": "edge-runtime `edge-runtime run PROMPT --max-tokens 1` (first byte on stdout)",
    "llama_cpp_defaults": "llama-cpp-python `Llama(model_path, verbose=False)` + completion (n_ctx 512, mmap)",
    "llama_cpp_matched": "llama-cpp-python with our settings (n_ctx 2048, all cores, mmap)",
}


def format_cold(cold: dict, ratios: dict) -> list[str]:
    rows = [f"| {COLD_LABELS[variant]} | {cold[f'{variant}_s']:.3f} | {cold[f'{variant}_cpu_s']:.3f} |"
            for variant in COLD_VARIANTS]
    load = ", ".join(f"{value:.2f}" for value in cold["load_average"])
    return [f"cold start, fresh process to first token (median of {cold['runs']} interleaved rounds; {cold['cpu']};"
            f" load average {load})", "| process | wall s | CPU s |", "|---|---|---|", *rows,
            f"ratios to llama-cpp-python defaults: API {ratios['cold_ours_over_llama_cpp']:.2f}, CLI "
            f"{ratios['cold_cli_over_llama_cpp']:.2f} (target <= 1.0); API to matched settings "
            f"{ratios['cold_ours_over_llama_cpp_matched']:.2f}"]


def format_report(report: dict) -> str:
    decode, ratios = report["decode_tokens_per_s"], report["ratios"]
    lines = format_decode(decode, ratios) if decode is not None else []
    return "\n".join([*lines, *format_cold(report["cold_start"], ratios)])


if __name__ == "__main__":
    sys.exit(main())
