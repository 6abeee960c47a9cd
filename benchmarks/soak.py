"""Load and soak: N concurrent clients for T seconds against an ``edge-runtime serve`` process on loopback.

    python -m benchmarks.soak [--clients 32] [--seconds 60] [--warmup 10] [--max-tokens 16] [--stream-share 0.25]
                              [--parallel 8] [--queue 16] [--with-cloud] [--url URL --pid PID] [--json]

By default it starts the server itself (bundled model, ``--parallel``/``--queue`` as given, no ledger) on a free
127.0.0.1 port; ``--with-cloud`` also starts a loopback test cloud (127.0.0.1) for the server to spill to.
``--url`` and ``--pid`` point it at a server already running instead. Each client sends completions (a share of
them streamed) one after another until the time is up; every request has its own 120 s timeout, and after a
429 or 503 a client waits ``Retry-After`` (at most 5 s) as a well-behaved client does.

Reported: requests and throughput (requests/s, completion tokens/s), latency p50/p95/p99 of the successful
requests, errors by type (HTTP status or exception class), and the server's resident memory (RSS) at the start,
after the warm-up and at the end. Exit status 1 when an error other than an explicit 429 or 503 happened, or
when RSS grew 5% or more between the end of the warm-up and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx

from benchmarks.ports import free_port, stop_server

ALLOWED_ERRORS = {"HTTP 429", "HTTP 503"}
PROMPTS = ["Q: What is the capital of France?\nA:", "Write one sentence about the sea.",
           "List three colours:", "Translate 'good morning' into Spanish:", "Once upon a time",
           "Q: How many legs does a spider have?\nA:", "Explain what a CPU does in one line."]


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)
    routes: Counter = field(default_factory=Counter)


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def rss_bytes(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


async def one_request(http: httpx.AsyncClient, rng: random.Random, args: argparse.Namespace, tally: Tally) -> None:
    body = {"prompt": rng.choice(PROMPTS), "max_tokens": args.max_tokens, "temperature": 0.0}
    stream = rng.random() < args.stream_share
    started = time.perf_counter()
    try:
        retry_after = 1.0
        if stream:
            status, tokens, route = await _streamed(http, {**body, "stream": True,
                                                           "stream_options": {"include_usage": True}})
        else:
            response = await http.post("/v1/completions", json=body)
            status, route = response.status_code, response.headers.get("x-edge-route-taken")
            tokens = response.json().get("usage", {}).get("completion_tokens", 0) if status == 200 else 0
            retry_after = _seconds(response.headers.get("retry-after"))
    except httpx.HTTPError as exc:
        tally.errors[type(exc).__name__] += 1
        return
    if status != 200:
        tally.errors[f"HTTP {status}"] += 1
        if status in (429, 503):  # a polite client waits as told (at most 5 s) instead of spinning
            await asyncio.sleep(min(5.0, retry_after))
        return
    tally.latencies_s.append(time.perf_counter() - started)
    tally.completion_tokens += tokens
    tally.routes[route or "?"] += 1


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


async def _streamed(http: httpx.AsyncClient, body: dict) -> tuple[int, int, str | None]:
    tokens, done = 0, False
    async with http.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, 0, None
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    return 599, 0, None  # in-band error after a 200: counted as "HTTP 599"
                tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
    return (200 if done else 598), tokens, response.headers.get("x-edge-route-taken")


async def client_loop(url: str, index: int, args: argparse.Namespace, stop_at: float, tally: Tally) -> None:
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop_at:
            await one_request(http, rng, args, tally)


async def soak(url: str, pid: int, args: argparse.Namespace) -> dict:
    rss_start = rss_bytes(pid)
    started = time.monotonic()
    warm, measured = Tally(), Tally()
    await asyncio.gather(*(client_loop(url, i, args, started + args.warmup, warm) for i in range(args.clients)))
    rss_warm = rss_bytes(pid)
    measure_started = time.monotonic()
    stop_at = measure_started + args.seconds
    rss_peak = [rss_warm]
    sampler = asyncio.ensure_future(_sample_rss(pid, rss_peak))
    await asyncio.gather(*(client_loop(url, i + 1000, args, stop_at, measured) for i in range(args.clients)))
    sampler.cancel()
    elapsed = time.monotonic() - measure_started
    return _report(args, measured, warm, elapsed, rss_start, rss_warm, rss_bytes(pid), max(rss_peak))


async def _sample_rss(pid: int, peak: list[int]) -> None:
    while True:
        await asyncio.sleep(1.0)
        peak[0] = max(peak[0], rss_bytes(pid))


def _report(args, tally: Tally, warm: Tally, elapsed: float, rss_start: int, rss_warm: int, rss_end: int,
            rss_peak: int) -> dict:
    done = len(tally.latencies_s)
    growth = (rss_end - rss_warm) / rss_warm * 100
    unexpected = {kind: count for kind, count in tally.errors.items() if kind not in ALLOWED_ERRORS}
    return {
        "clients": args.clients, "seconds": round(elapsed, 1), "warmup_s": args.warmup,
        "max_tokens": args.max_tokens, "stream_share": args.stream_share,
        "requests_ok": done, "requests_per_s": round(done / elapsed, 2),
        "completion_tokens_per_s": round(tally.completion_tokens / elapsed, 1),
        "latency_s": {name: _round(percentile(tally.latencies_s, share))
                      for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))},
        "errors": dict(tally.errors), "unexpected_errors": unexpected, "warmup_errors": dict(warm.errors),
        "routes": dict(tally.routes),
        "rss_mb": {"start": _mb(rss_start), "after_warmup": _mb(rss_warm), "end": _mb(rss_end), "peak": _mb(rss_peak)},
        "rss_growth_after_warmup_pct": round(growth, 2),
        "ok": not unexpected and growth < 5.0,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _mb(value: int) -> float:
    return round(value / 2 ** 20, 1)


def start_server(args: argparse.Namespace, stack: ExitStack) -> tuple[str, int]:
    """``edge-runtime serve`` in a child process on a free loopback port; waits (at most 300 s) for /health."""
    env = dict(os.environ)
    if args.with_cloud:
        from benchmarks.loopback_cloud import LoopbackCloud

        cloud = stack.enter_context(LoopbackCloud(answer_fn=lambda body: "Cloud answer for the soak run."))
        env.update(EDGE_CLOUD_BASE_URL=cloud.base_url, EDGE_CLOUD_MODEL="loopback-1")
    else:
        env.pop("EDGE_CLOUD_BASE_URL", None)
    port = free_port()
    command = [sys.executable, "-m", "edge_runtime.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--parallel", str(args.parallel), "--queue", str(args.queue), "--ctx", "1024", "--no-ledger"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stack.callback(stop_server, server)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"soak: the server exited early: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url, server.pid
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("soak: the server did not become healthy within 300 s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time, after the warm-up")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stream-share", type=float, default=0.25, help="share of requests that stream")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--with-cloud", action="store_true", help="start a loopback cloud to spill to")
    parser.add_argument("--url", default=None, help="a running server (loopback) instead of starting one")
    parser.add_argument("--pid", type=int, default=None, help="its process id, for RSS")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args(argv)
    if (args.url is None) != (args.pid is None):
        parser.error("--url and --pid go together")
    if args.url is not None and httpx.URL(args.url).host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must be a loopback address (127.0.0.1 or localhost)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        url, pid = (args.url, args.pid) if args.url else start_server(args, stack)
        report = asyncio.run(soak(url, pid, args))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
