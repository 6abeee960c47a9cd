"""When a hopeless prompt is escalated: the server with the calibration's text checkpoint vs without, side by side.

Two servers from the production builder over one runtime (the bundled model) and one loopback cloud, both
loading the same calibration file (``benchmarks.early_calibration``: a made-up text checkpoint; what is
measured is when the decision is taken, not how good it is), whose final calibrator escalates every local
answer:

  before   ``confidence_threshold`` set, which turns the early decisions off (as ``eval``'s override does): the
           local model answers, then the final decision escalates (a stream: the hold's tokens, then the decision)
  after    the text checkpoint judges the prompt hopeless and the cloud is asked before any decoding

The time to the escalation decision is from sending the request to the loopback cloud receiving it (the
cloud's ``answer_fn`` records when it is called; the gateway's own overhead is included). Requests alternate
between the servers; medians over ``--rounds``, whole answers and streams.

    python -m benchmarks.early_escalation [--rounds 5] [--max-tokens 32] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _server(runtime, cloud, calibration: Path, early: bool):
    from benchmarks.served import running
    from edge_runtime.server.build import build_server
    from edge_runtime.server.settings import ServerSettings
    from fallback.providers import GatewayConfig, ProviderConfig

    provider = ProviderConfig(name="loopback", base_url=cloud.base_url, model="loopback-1", timeout_s=60,
                              max_retries=0)
    gateway = GatewayConfig(providers=[provider], overall_deadline_s=300, escalation_budget_s=300)
    settings = ServerSettings(cloud=gateway, calibration=calibration, ledger=False,
                              confidence_threshold=None if early else 0.5)
    return running(build_server(settings, runtime=runtime)[0])


def _time_to_cloud(url: str, arrivals: list[float], body: dict) -> tuple[float, float, str]:
    """(seconds to the cloud receiving it, seconds to the whole response, route taken) for one request."""
    import httpx

    arrivals.clear()
    started = time.perf_counter()
    response = httpx.post(url + "/v1/completions", json=body, timeout=600)
    finished = time.perf_counter()
    response.raise_for_status()
    return arrivals[0] - started, finished - started, response.headers["X-Edge-Route-Taken"]


def measure(rounds: int, max_tokens: int) -> dict:
    from contextlib import ExitStack

    from benchmarks.early_calibration import HOPELESS_QUERY, calibration
    from benchmarks.loopback_cloud import LoopbackCloud
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime

    arrivals: list[float] = []
    calibrator = calibration(tokens=False)
    calibrator.knots = [(-1000.0, 0.01)]  # the final decision escalates every local answer
    times: dict[str, list[tuple[float, float]]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        path = calibrator.save(Path(folder) / "calibration.json")
        runtime = stack.enter_context(Runtime.load(settings=LoadSettings(n_ctx=1024)))
        cloud = stack.enter_context(LoopbackCloud(answer_fn=lambda body: arrivals.append(time.perf_counter())
                                                  or "Cloud answer."))
        urls = {name: stack.enter_context(_server(runtime, cloud, path, name == "after"))
                for name in ("before", "after")}
        for _ in range(rounds):
            for stream in (False, True):
                for name, url in urls.items():
                    body = {"model": "m", "prompt": HOPELESS_QUERY + "\nAnswer:", "max_tokens": max_tokens,
                            "stream": stream}
                    to_cloud, total, route = _time_to_cloud(url, arrivals, body)
                    assert route == "cloud", route
                    times.setdefault(f"{name} {'stream' if stream else 'whole'}", []).append((to_cloud, total))
    return {key: {"median_decision_s": statistics.median(t for t, _ in rows),
                  "median_total_s": statistics.median(total for _, total in rows), "n": len(rows)}
            for key, rows in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = measure(args.rounds, args.max_tokens)
    for mode in ("whole", "stream"):
        before, after = report[f"before {mode}"], report[f"after {mode}"]
        ratio = after["median_decision_s"] / before["median_decision_s"]
        print(f"{mode:6s} decision: before {before['median_decision_s']:.3f} s, "
              f"after {after['median_decision_s']:.4f} s (after/before {ratio:.4f}); total: before {before['median_total_s']:.3f} s, after "
              f"{after['median_total_s']:.3f} s", file=sys.stdout)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
