"""What running the engine in a supervised child process costs, side by side with running it in-process.

Three measurements, each alternating the two modes in rounds (this machine is shared and noisy):
  server   ``edge-runtime serve`` vs ``serve --in-process``: streamed tokens/s and latency at 1 / 4 / 8 clients
  api      ``Runtime.load(isolation="process")`` vs in-process: greedy decode tokens/s of one sequence
  cold     a fresh process from start to first token, for each mode (``Runtime.load`` + ``generate``)

    python -m benchmarks.isolation [--rounds 2] [--tokens 48] [--requests 16] [--json docs/bench/isolation.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from benchmarks.server_throughput import measure, server_commands

SERVERS = ("edge-runtime", "edge-runtime (in-process)")
PROMPT = "The lighthouse keeper climbed the stairs and"
COLD_SCRIPT = """
import sys, time
started = time.perf_counter()
from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime
runtime = Runtime.load(sys.argv[1], settings=LoadSettings(n_ctx=512), isolation=sys.argv[2])
runtime.generate("Hello", max_tokens=1)
print(time.perf_counter() - started)
runtime.close()
"""


def server_rounds(model: str, port: int, rounds: int, requests: int, tokens: int) -> list[dict]:
    rows = []
    for round_index in range(rounds):
        for offset, name in enumerate(SERVERS):
            port_here = port + 2 * round_index + offset
            command = server_commands(model, port_here, None)[name]
            rows += [{**row, "round": round_index} for row in measure(name, command, port_here, requests, tokens)]
    return rows


def api_decode(model: str, rounds: int, tokens: int) -> dict[str, list[float]]:
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime

    settings = LoadSettings(n_ctx=1024, speculative=False, prefix_cache=False)
    runtimes = {"in-process": Runtime.load(model, settings=settings),
                "isolated": Runtime.load(model, settings=settings, isolation="process")}
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(rounds + 1):  # the first round warms both up and is dropped
        for name, runtime in runtimes.items():
            rates[name].append(runtime.generate(PROMPT, max_tokens=tokens).timings.decode_tokens_per_s)
    for runtime in runtimes.values():
        runtime.close()
    return {name: values[1:] for name, values in rates.items()}


def cold_starts(model: str, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"none": [], "process": []}
    for _ in range(rounds):
        for isolation in times:
            output = subprocess.run([sys.executable, "-c", COLD_SCRIPT, model, isolation], capture_output=True,
                                    text=True, check=True).stdout
            times[isolation].append(float(output.strip().splitlines()[-1]))
    return times


def summary(server: list[dict], api: dict, cold: dict) -> dict:
    out = {}
    for clients in sorted({row["clients"] for row in server}):
        def median_of(name: str, field: str) -> float:
            return statistics.median(r[field] for r in server if r["server"] == name and r["clients"] == clients)
        out[f"server_{clients}_clients_tokens_per_s_ratio"] = (median_of(SERVERS[0], "tokens_per_s")
                                                               / median_of(SERVERS[1], "tokens_per_s"))
        out[f"server_{clients}_clients_p50_latency_delta_ms"] = 1000 * (median_of(SERVERS[0], "latency_p50_s")
                                                                        - median_of(SERVERS[1], "latency_p50_s"))
    out["api_decode_tokens_per_s_ratio"] = statistics.median(api["isolated"]) / statistics.median(api["in-process"])
    out["cold_start_s"] = {name: statistics.median(values) for name, values in cold.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--port", type=int, default=8193)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from edge_runtime.models import resolve_model

    model = str(resolve_model(args.model).path)
    started = time.perf_counter()
    server = server_rounds(model, args.port, args.rounds, args.requests, args.tokens)
    api = api_decode(model, args.rounds, 64)
    cold = cold_starts(model, args.rounds + 1)
    report = {"server": server, "api_decode_tokens_per_s": api, "cold_start_s": cold,
              "summary": summary(server, api, cold), "wall_s": time.perf_counter() - started}
    print(json.dumps(report["summary"], indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
