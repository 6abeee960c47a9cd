"""The fit plan against the memory a process really uses: plan total beside measured peak RSS.

Each configuration runs in a fresh process, measured from here with ``os.wait4`` (the child's peak resident
set, the kernel's ``ru_maxrss``), and its plan comes from ``edge-runtime plan`` with the same settings:

- ``short``: ``edge-runtime run PROMPT --ctx N --batch B --max-tokens 8`` through the real CLI;
- ``long``: ``Runtime.load`` + a prompt that fills the context (every micro-batch attends to a full cache), a
  speculative greedy answer and a scored label choice: the worst case the plan must still cover;
- ``parallel`` / ``parallel-full``: the batched context (``n_parallel`` sequences, as the server runs it) with
  that many concurrent requests, short prompts / prompts that nearly fill every sequence's context (the plan's
  worst case);

The plan must be an upper bound (ratio >= 1.0) everywhere and tight (<= 1.15) for ``short``. The first load of
a configuration probes it in a child (``edge_runtime.engine.probe``); one warm-up run caches the verdicts first.

    python -m benchmarks.memory_plan [--ctx 512 2048 8192] [--batch 256 64] [--json docs/bench/memory_plan.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

MiB = 1024 * 1024
PROMPT = "The history of the printing press begins"
UPPER_RATIO = 1.15

LONG = """
import sys
from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime
ctx, batch = int(sys.argv[1]), int(sys.argv[2])
runtime = Runtime.load(settings=LoadSettings(n_ctx=ctx, n_batch=batch, prefix_cache=False))
words = ("the history of the printing press begins in the fifteenth century " * (ctx // 8)).split()
text = " ".join(words[:ctx])
ids = runtime.backend.tokenize(text)
text = " ".join(words[:int(len(words[:ctx]) * (ctx - 40) / len(ids))])
runtime.generate(text, max_tokens=16)
runtime.score_choices(text[:len(text) * 3 // 4], ["the printing press of Gutenberg in Mainz", "movable type"])
"""
PARALLEL = """
import sys, threading
from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime
ctx, batch, parallel, fill = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "fill"
runtime = Runtime.load(settings=LoadSettings(n_ctx=ctx, n_batch=batch, n_parallel=parallel, prefix_cache=False))
prompts = [f"{n} + {n} = " * 20 for n in range(parallel)]
if fill:  # every sequence's context nearly full: the worst case the plan must cover
    words = ("the history of the printing press begins in the fifteenth century " * (ctx // 8)).split()
    prompts = [f"{n} " + " ".join(words[:ctx]) for n in range(parallel)]
    prompts = [" ".join(p.split()[:int(len(p.split()) * (ctx - 40) / len(runtime.backend.tokenize(p)))]) for p in prompts]
threads = [threading.Thread(target=runtime.generate, args=(prompt,), kwargs={"max_tokens": 8}) for prompt in prompts]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


@dataclass
class Row:
    workload: str
    ctx: int
    batch: int
    parallel: int
    plan_bytes: int
    peak_rss_bytes: int

    @property
    def ratio(self) -> float:
        return self.plan_bytes / self.peak_rss_bytes


# Started from a small interpreter, not from the caller: Linux counts the parent's resident pages at fork time
# in a child's ru_maxrss (exec records the old address space's high-water mark), so a child of a large process
# (a test session holding models) would report the parent's peak instead of its own.
MEASURER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_bytes(argv: list[str]) -> int:
    """Runs ``argv`` to the end and returns its peak resident set (raises if it fails)."""
    finished = subprocess.run([sys.executable, "-c", MEASURER, *argv], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
    fields = finished.stdout.split()
    returncode = int(fields[0]) if len(fields) == 2 else finished.returncode
    if returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} ... exited {returncode}: {finished.stderr[-800:]}")
    return int(fields[1]) * 1024  # kilobytes on Linux


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime.cli", *args]


def planned_bytes(ctx: int, batch: int, parallel: int = 1) -> int:
    completed = subprocess.run(cli("plan", "--ctx", str(ctx), "--batch", str(batch), "--parallel", str(parallel),
                                   "--no-prefix-cache"), capture_output=True, text=True, check=True, timeout=300)
    return json.loads(completed.stdout)["total_bytes"]


def run_argv(ctx: int, batch: int, prompt: str = PROMPT) -> list[str]:
    """``edge-runtime run`` as a user types it, prefix cache off, 8 tokens."""
    return cli("run", prompt, "--ctx", str(ctx), "--batch", str(batch), "--max-tokens", "8", "--no-prefix-cache")


def measure(workload: str, ctx: int, batch: int, parallel: int = 1) -> Row:
    argv = {"short": lambda: run_argv(ctx, batch),
            "long": lambda: [sys.executable, "-c", LONG, str(ctx), str(batch)],
            "parallel": lambda: [sys.executable, "-c", PARALLEL, str(ctx), str(batch), str(parallel), "short"],
            "parallel-full": lambda: [sys.executable, "-c", PARALLEL, str(ctx), str(batch), str(parallel), "fill"],
            }[workload]()
    return Row(workload, ctx, batch, parallel, planned_bytes(ctx, batch, parallel), peak_rss_bytes(argv))


def format_rows(rows: list[Row]) -> str:
    lines = ["| workload | ctx | batch | parallel | plan MiB | peak RSS MiB | plan / peak |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.workload} | {row.ctx} | {row.batch} | {row.parallel} | {row.plan_bytes / MiB:.0f} | "
                     f"{row.peak_rss_bytes / MiB:.0f} | {row.ratio:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--long", type=int, nargs="*", default=[2048, 8192], help="contexts of the long workload")
    parser.add_argument("--parallel", type=int, default=4, help="sequences of the batched run (0: skip it)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    subprocess.run(run_argv(512, 256), capture_output=True, check=True)  # caches the probe verdicts
    rows = [measure("short", ctx, batch) for ctx in args.ctx for batch in args.batch]
    rows += [measure("long", ctx, args.batch[0]) for ctx in args.long]
    if args.parallel > 1:
        rows.append(measure("parallel", 2048, args.batch[0], args.parallel))
        rows.append(measure("parallel-full", 2048, args.batch[0], args.parallel))
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": [asdict(row) | {"ratio": row.ratio} for row in rows], "load_average": os.getloadavg()},
                      handle, indent=2)
    return 0 if all(row.ratio >= 1.0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
