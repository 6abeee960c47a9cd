"""What reusing cached prefixes buys: the SST-2 evaluation and a repeated 1,000-token system prompt, with the
KV-prefix reuse on and off, side by side in one process on the bundled model.

Every SST-2 prompt shares its few-shot block, so with reuse only the review itself is prefilled. Targets (issue
on prefix caching): items/s >= 3x with reuse; time to first token <= 0.2x for a repeated system prompt.

    python -m benchmarks.prefix_cache [--items 60] [--data ../shared/data/sst2_dev.jsonl] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

SYSTEM_PROMPT = " ".join(f"Rule {index}: answer politely, cite sources, and keep replies short." for index in range(63))


def items_per_second(runtime, items: list[dict]) -> float:
    started = time.perf_counter()
    for item in items:
        runtime.score_choices(item["prompt"], item["choices"])
    return len(items) / (time.perf_counter() - started)


def repeated_prompt_ttft(runtime, questions: list[str]) -> float:
    ttfts = []
    for question in questions:
        result = runtime.generate(f"{SYSTEM_PROMPT}\n\nUser: {question}\nAssistant:", max_tokens=1)
        ttfts.append(result.timings.time_to_first_token_s)
    return statistics.median(ttfts[1:])


def measure(path: str, items: list[dict], threads: int | None) -> dict:
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime

    runtime = Runtime.load(path, settings=LoadSettings(n_threads=threads))
    questions = [f"What is rule {index}?" for index in range(6)]
    report = {"system_prompt_tokens": runtime.count_tokens(SYSTEM_PROMPT)}
    for reuse in (False, True):
        runtime.backend.prefix_reuse = reuse
        runtime.backend._rewind_to(0)
        key = "with_cache" if reuse else "without_cache"
        report[key] = {"sst2_items_per_s": items_per_second(runtime, items),
                       "repeated_system_prompt_ttft_s": repeated_prompt_ttft(runtime, questions)}
    report["items_per_s_ratio"] = report["with_cache"]["sst2_items_per_s"] / report["without_cache"]["sst2_items_per_s"]
    report["ttft_ratio"] = (report["with_cache"]["repeated_system_prompt_ttft_s"]
                            / report["without_cache"]["repeated_system_prompt_ttft_s"])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/sst2_dev.jsonl"))
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from edge_runtime.models import resolve_model

    with open(args.data, encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle][:args.items]
    report = measure(str(resolve_model(args.model).path), items, args.threads)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
