"""Prompt-lookup speculative decoding against plain greedy decoding, side by side in one process.

Workloads: extraction (pull fields out of a few paragraphs: the answer copies spans of the input) and ordinary
prompts (little to copy). Three runtimes on the same model, runs interleaved so load on the machine hits them
alike:

* ``plain``: default weights (CPU-repacked where llama.cpp can), no speculation;
* ``plain_unrepacked``: weights as stored (what exact speculation needs), no speculation;
* ``speculative``: weights as stored, prompt-lookup drafts gated by ``DraftPolicy`` (drafts only when the
  measured costs and acceptance say it pays);
* ``always_draft``: the same drafts verified whenever there is one (the policy's margin set to 0), to show what
  verification costs on this machine.

Reports decode tokens/s (median over runs and prompts), the measured cost of one decode step and of each extra
verified position, and acceptance. Targets: extraction >= 1.5x; ordinary prompts no more than 3% slower.

    python -m benchmarks.speculation [--runs 5] [--tokens 96] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

EXTRACTION = [
    ("Invoice INV-2024-0042 was issued on March 3, 2024 by Acme Supplies Ltd, 220 Harbour Road, Portsmouth, to "
     "Margaret Holloway, 14 Elm Street, Springfield. It lists 3 boxes of printer paper at $12.50 each and 2 ink "
     "cartridges at $34.99 each, for a total of $107.48, payable within 30 days to account 0042-771-93.\n\n"
     "Fields:\nInvoice number: INV-2024-0042\nIssue date:"),
    ("The meeting of the Riverside Community Garden Association took place on Tuesday, June 11, at the Oak Hall "
     "library. Chair: Daniel Okafor. Secretary: Priya Raman. Attendees voted 14 to 3 to extend the watering "
     "schedule to weekends and approved a budget of $2,350 for new raised beds from Greenleaf Timber.\n\n"
     "Summary:\nMeeting date: Tuesday, June 11\nLocation:"),
]
ORDINARY = ["Q: Why is the sky blue?\nA:", "Once upon a time, in a distant kingdom,",
            "The three most important inventions of the 20th century are"]
VARIANTS = {"plain": {"speculative": False}, "plain_unrepacked": {"speculative": True},
            "speculative": {"speculative": True},
            "always_draft": {"speculative": True}}


def load_variants(path, threads: int | None) -> dict:
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime

    runtimes = {name: Runtime.load(path, settings=LoadSettings(n_threads=threads, prefix_cache=False, **options))
                for name, options in VARIANTS.items()}
    runtimes["plain_unrepacked"].backend.speculative = False
    runtimes["always_draft"].backend.draft_margin = 0.0
    return runtimes


def decode_rates(runtimes: dict, prompts: list[str], tokens: int, runs: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(runs):
        for prompt in prompts:
            for name, runtime in runtimes.items():
                rates[name].append(runtime.generate(prompt, max_tokens=tokens).timings.decode_tokens_per_s)
    return rates


def summarise(rates: dict[str, list[float]]) -> dict:
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {**{f"{name}_tokens_per_s": value for name, value in medians.items()},
            "speculative_vs_plain": medians["speculative"] / medians["plain"],
            "always_draft_vs_plain": medians["always_draft"] / medians["plain"],
            "unrepacked_vs_plain": medians["plain_unrepacked"] / medians["plain"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from edge_runtime.models import resolve_model

    runtimes = load_variants(resolve_model(args.model).path, args.threads)
    report = {name: summarise(decode_rates(runtimes, prompts, args.tokens, args.runs))
              for name, prompts in (("extraction", EXTRACTION), ("ordinary", ORDINARY))}
    costs = runtimes["always_draft"].backend.decode_costs
    report["costs"] = {"decode_step_s": costs.step_s, "extra_verified_position_s": costs.extra_position_s}
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
