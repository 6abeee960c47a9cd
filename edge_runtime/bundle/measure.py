"""Side by side: the one-file executable against the virtual environment's command, on this machine.

    python -m edge_runtime.bundle.measure dist/edge-runtime .venv/bin/edge-runtime [--runs 7] [--tokens 64]

Each run is a fresh process in a clean environment (only HOME, and for the virtual environment the cache folder
that already holds the assembled model). Measured from the parent: cold start to first token (process start to
the first byte of streamed text, so imports, unpacking, model load and prefill are all in it) and the CPU
seconds the process tree used; decode tokens/s is the command's own summary line. Commands alternate so a busy
machine slows both alike. Prints medians (min-max) as Markdown rows.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

PROMPT = "Q: What is the capital of France?\nA:"
SUMMARY = re.compile(r"\[(\d+) tokens, ([\d.]+) tokens/s")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_once(command: list[str], env: dict, tokens: int) -> dict:
    """One cold run: seconds to the first streamed byte, CPU seconds, decode tokens/s."""
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    process = subprocess.Popen([*command, "run", PROMPT, "--max-tokens", str(tokens)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.read(1)
    first_token_s = time.perf_counter() - started
    process.stdout.read()
    stderr = process.stderr.read().decode()
    if process.wait() != 0 or not first:
        raise RuntimeError(f"{command[0]} failed: {stderr[-500:]}")
    decoded = SUMMARY.search(stderr)
    return {"first_token_s": first_token_s, "cpu_s": _children_cpu_s() - cpu_before,
            "decode_tokens_per_s": float(decoded.group(2)) if decoded else float("nan")}


def _spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("venv_command", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--bundle-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the bundle's runs (e.g. EDGE_NATIVE_PROBE=0)")
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="edge-measure-")
    cache = os.environ.get("EDGE_RUNTIME_CACHE") or str(Path.home() / ".cache" / "edge-runtime")
    setups = {"bundle": ([str(args.bundle.resolve())], {"HOME": home, **dict(e.split("=", 1) for e in args.bundle_env)}),
              "venv": ([str(args.venv_command.absolute())], {"HOME": home, "EDGE_RUNTIME_CACHE": cache})}
    for command, env in setups.values():  # warm the page cache and any first-run work once
        measure_once(command, env, 4)
    results = {name: [] for name in setups}
    for _ in range(args.runs):
        for name, (command, env) in setups.items():
            results[name].append(measure_once(command, env, args.tokens))
    print("| build | cold start to first token s | CPU s per run | decode tokens/s |\n|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {_spread([r['first_token_s'] for r in runs], 2)} | {_spread([r['cpu_s'] for r in runs], 2)}"
              f" | {_spread([r['decode_tokens_per_s'] for r in runs], 1)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
