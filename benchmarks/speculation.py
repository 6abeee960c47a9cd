"""Prompt-lookup speculative decoding against plain greedy decoding, side by side in one process.

Workloads: extraction (pull fields out of a few paragraphs: the answer copies spans of the input) and ordinary
open-ended prompts (little to copy). Reports decode tokens/s, median of the runs, for: plain decoding with the
default (repacked) weights, plain decoding without repacking, and speculation (which needs unrepacked
weights so greedy output stays identical). Targets: extraction >= 1.5x; ordinary prompts no more than 3% slower.

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
ORDINARY = ["Write a short poem about the sea.", "Once upon a time, in a distant kingdom,"]


def decode_rate(runtime, prompt: str, tokens: int) -> float:
    runtime.backend._rewind_to(0)
    return runtime.generate(prompt, max_tokens=tokens).timings.decode_tokens_per_s


def median_rate(runtime, prompts: list[str], tokens: int, runs: int) -> float:
    return statistics.median(decode_rate(runtime, prompt, tokens) for _ in range(runs) for prompt in prompts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from edge_runtime.caps import LoadSettings
    from edge_runtime.models import resolve_model
    from edge_runtime.runtime import Runtime

    path = resolve_model(args.model).path
    default = Runtime.load(path, settings=LoadSettings(n_threads=args.threads))
    unpacked = Runtime.load(path, settings=LoadSettings(n_threads=args.threads, speculative=True))
    report = {}
    for name, prompts in (("extraction", EXTRACTION), ("ordinary", ORDINARY)):
        unpacked.backend.speculative = False
        plain_unpacked = median_rate(unpacked, prompts, args.tokens, args.runs)
        unpacked.backend.speculative = True
        speculative = median_rate(unpacked, prompts, args.tokens, args.runs)
        plain = median_rate(default, prompts, args.tokens, args.runs)
        report[name] = {"plain_tokens_per_s": plain, "plain_unrepacked_tokens_per_s": plain_unpacked,
                        "speculative_tokens_per_s": speculative, "speedup_vs_plain": speculative / plain,
                        "speedup_vs_unrepacked": speculative / plain_unpacked}
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
