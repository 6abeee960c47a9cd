"""What reusing cached prefixes buys, side by side in one process on the bundled model.

Three caching modes: ``none`` (every prompt prefilled from scratch), ``live`` (only the KV cache of the last
request is reused: ``prefix_cache_bytes=0``) and ``store`` (the live KV plus the byte-budgeted store of saved
prefixes, the default). Workloads:

* ``sst2``: the evaluation's local pass (``edge_runtime.evaluation.answerer.LocalAnswerer``) over SST-2; every
  prompt shares its few-shot block. Target (issue on prefix caching): items/s >= 3x with the cache.
* ``mixed``: the same pass over SST-2, AG News and TREC items taken in turn, so consecutive prompts never share
  their few-shot block; here only the store helps. The eval command caches each task's block up front
  (``Runtime.cache_prefix``), as measured in ``mixed-preloaded``.
* ``system``: time to first token for a request repeating a ~1,000-token system prompt. Target <= 0.2x.
* ``two-systems``: the same, alternating between two different system prompts.

    python -m benchmarks.prefix_cache [--items 30] [--data-dir ../shared/data] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

MODES = {"none": {"prefix_cache": False}, "live": {"prefix_cache_bytes": 0}, "store": {}}
SYSTEM_PROMPTS = [" ".join(f"{noun} {index}: answer politely, cite sources, and keep replies short."
                           for index in range(63)) for noun in ("Rule", "Policy")]
QUESTIONS = [f"What is rule {index}?" for index in range(7)]


def load_items(data_dir: Path, names: list[str], count: int) -> dict[str, list]:
    from fallback.tasks import load_items as load

    return {name: load(data_dir / f"{name}_dev.jsonl")[:count] for name in names}


def interleave(groups: list[list]) -> list:
    return [item for row in zip(*groups) for item in row]


def items_per_second(runtime, items: list, preload: bool = False) -> float:
    from edge_runtime.evaluation.answerer import LocalAnswerer

    runtime.backend.forget_prefixes()
    answerer = LocalAnswerer(runtime)
    started = time.perf_counter()
    if preload:
        from edge_runtime.evaluation.harness import shared_prefixes

        for prefix in shared_prefixes(items):
            runtime.cache_prefix(prefix)
    for item in items:
        answerer.answer(item)
    return len(items) / (time.perf_counter() - started)


def system_prompt_ttft(runtime, systems: list[str]) -> float:
    """Median time to first token over the questions, each asked under every system prompt in turn; the
    first round (cold) is left out."""
    runtime.backend.forget_prefixes()
    ttfts = []
    for question in QUESTIONS:
        for system in systems:
            result = runtime.generate(f"{system}\n\nUser: {question}\nAssistant:", max_tokens=1)
            ttfts.append(result.timings.time_to_first_token_s)
    return statistics.median(ttfts[len(systems):])


def measure_mode(path: str, mode: str, items: dict[str, list], threads: int | None) -> dict:
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime

    with Runtime.load(path, settings=LoadSettings(n_threads=threads, **MODES[mode])) as runtime:
        mixed = interleave(list(items.values()))
        row = {"sst2_items_per_s": items_per_second(runtime, items["sst2"]),
               "mixed_items_per_s": items_per_second(runtime, mixed),
               "mixed_preloaded_items_per_s": items_per_second(runtime, mixed, preload=True),
               "system_prompt_ttft_s": system_prompt_ttft(runtime, SYSTEM_PROMPTS[:1]),
               "two_systems_ttft_s": system_prompt_ttft(runtime, SYSTEM_PROMPTS)}
        stats = runtime.backend.stats().prefix_cache
        if stats is not None:
            row.update(hit_ratio=stats.hit_ratio, store_entries=stats.store_entries,
                       store_bytes=stats.store_bytes, store_restores=stats.store_restores)
        row["system_prompt_tokens"] = runtime.count_tokens(SYSTEM_PROMPTS[0])
        return row


def ratios(report: dict) -> dict:
    none, live, store = (report[mode] for mode in ("none", "live", "store"))
    return {"sst2_items_per_s_store_vs_none": store["sst2_items_per_s"] / none["sst2_items_per_s"],
            "mixed_items_per_s_store_vs_none": store["mixed_items_per_s"] / none["mixed_items_per_s"],
            "mixed_items_per_s_store_vs_live": store["mixed_items_per_s"] / live["mixed_items_per_s"],
            "mixed_preloaded_store_vs_none": store["mixed_preloaded_items_per_s"] / none["mixed_items_per_s"],
            "system_ttft_store_vs_none": store["system_prompt_ttft_s"] / none["system_prompt_ttft_s"],
            "two_systems_ttft_store_vs_none": store["two_systems_ttft_s"] / none["two_systems_ttft_s"],
            "two_systems_ttft_store_vs_live": store["two_systems_ttft_s"] / live["two_systems_ttft_s"]}


def table(report: dict) -> str:
    lines = ["| mode | SST-2 items/s | mixed items/s | mixed, preloaded | system TTFT s | two systems TTFT s |",
             "|---|---|---|---|---|---|"]
    for mode in MODES:
        row = report[mode]
        lines.append(f"| {mode} | {row['sst2_items_per_s']:.2f} | {row['mixed_items_per_s']:.2f} | "
                     f"{row['mixed_preloaded_items_per_s']:.2f} | {row['system_prompt_ttft_s']:.3f} | "
                     f"{row['two_systems_ttft_s']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    parser.add_argument("--items", type=int, default=30, help="items per task (default 30)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from edge_runtime.models import resolve_model

    items = load_items(args.data_dir, ["sst2", "agnews", "trec"], args.items)
    path = str(resolve_model(args.model).path)
    report = {mode: measure_mode(path, mode, items, args.threads) for mode in MODES}
    report["ratios"] = ratios(report)
    print(table(report))
    print(json.dumps(report["ratios"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
