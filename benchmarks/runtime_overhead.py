"""What per-token confidence costs: our runtime against llama-cpp-python, side by side in one process.

Interleaves, on the bundled model with the same prompt and threads:
  (a) raw ``Llama.generate`` greedy, no log-probabilities (the speed ceiling),
  (b) ``edge_runtime.Runtime`` greedy with a log-probability for every token, speculation off (the same
      repacked weights and plain steps as (a)); (b2) the same with default settings (policy-gated speculation),
  (c) ``Llama.create_completion(logprobs=5)`` with ``logits_all=True`` (what llama-cpp-python needs for them),
and prints decode tokens/s (median of the runs) with the ratios b/a and b/c. Then cold start: a fresh process
to its first token, ours against llama-cpp-python's defaults. Targets: b/a >= 0.97, b/c >= 5, cold <= 0.6x.

    python -m benchmarks.runtime_overhead [--runs 7] [--tokens 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

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
    rates = {"a_raw_generate": [], "b_edge_runtime": [], "b2_edge_runtime_default": [], "c_logits_all": []}
    for _ in range(runs + 1):  # the first round warms up and is dropped
        rates["a_raw_generate"].append(run_raw(raw, tokens))
        rates["b_edge_runtime"].append(run_ours(ours, tokens))
        rates["b2_edge_runtime_default"].append(run_ours(default, tokens))
        rates["c_logits_all"].append(run_logits_all(with_logits, tokens))
    return {name: statistics.median(values[1:]) for name, values in rates.items()} | {"runs": runs, "tokens": tokens}


COLD_OURS = """
import sys, time
from edge_runtime.runtime import Runtime
runtime = Runtime.load(sys.argv[1])
next(iter(runtime.stream(sys.argv[2], max_tokens=1)))
print("FIRST", flush=True)
"""
COLD_LLAMA = """
import sys
from edge_runtime.backends.llamacpp_native import safe_high_level_llama
llama = safe_high_level_llama(model_path=sys.argv[1], verbose=False)
next(iter(llama.create_completion(sys.argv[2], max_tokens=1, stream=True)))
print("FIRST", flush=True)
"""


def time_to_first_token_in_fresh_process(script: str, path: str) -> float:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", script, path, PROMPT], stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("FIRST"):
            elapsed = time.perf_counter() - started
            break
    else:
        raise RuntimeError("the child process ended without a first token")
    process.wait(timeout=60)
    return elapsed


def cold_start_comparison(path: str, runs: int) -> dict:
    ours, theirs = [], []
    for _ in range(runs + 1):
        ours.append(time_to_first_token_in_fresh_process(COLD_OURS, path))
        theirs.append(time_to_first_token_in_fresh_process(COLD_LLAMA, path))
    return {"ours_s": statistics.median(ours[1:]), "llama_cpp_defaults_s": statistics.median(theirs[1:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: the bundled model)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    from edge_runtime.models import resolve_model

    path = str(resolve_model(args.model).path)
    decode = decode_comparison(path, args.runs, args.tokens)
    cold = cold_start_comparison(path, max(3, args.runs // 2))
    report = {"decode_tokens_per_s": decode, "cold_start": cold,
              "ratios": {"b_over_a": decode["b_edge_runtime"] / decode["a_raw_generate"],
                         "b_over_c": decode["b_edge_runtime"] / decode["c_logits_all"],
                         "cold_ours_over_llama_cpp": cold["ours_s"] / cold["llama_cpp_defaults_s"]}}
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


def format_report(report: dict) -> str:
    decode, cold, ratios = report["decode_tokens_per_s"], report["cold_start"], report["ratios"]
    return "\n".join([
        f"decode tokens/s (median of {decode['runs']} runs, {decode['tokens']} tokens, {THREADS} threads)",
        "| path | tokens/s |", "|---|---|",
        f"| (a) llama-cpp-python Llama.generate, no logprobs | {decode['a_raw_generate']:.1f} |",
        f"| (b) edge-runtime, logprob on every token, no speculation | {decode['b_edge_runtime']:.1f} |",
        f"| (b2) edge-runtime defaults (policy-gated speculation) | {decode['b2_edge_runtime_default']:.1f} |",
        f"| (c) llama-cpp-python create_completion(logprobs=5), logits_all | {decode['c_logits_all']:.1f} |",
        f"b/a = {ratios['b_over_a']:.3f} (target >= 0.97); b/c = {ratios['b_over_c']:.1f} (target >= 5)",
        f"cold start to first token: ours {cold['ours_s']:.3f} s, llama-cpp-python defaults "
        f"{cold['llama_cpp_defaults_s']:.3f} s, ratio {ratios['cold_ours_over_llama_cpp']:.2f} (target <= 0.6)",
    ])


if __name__ == "__main__":
    sys.exit(main())
