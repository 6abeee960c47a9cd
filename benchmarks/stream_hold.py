"""How long a stream must hold its first tokens to decide like the whole answer would (the hold's margin).

For dev items with free answers (capitals, languages: few-shot prompts, stop at the newline) the bundled model
answers greedily once; each hold policy is then replayed on the answer's token log-probabilities:

  fixed-8        hold 8 tokens (or to the end), then judge the held tokens (the old hold)
  adaptive m/g   commit once >= m tokens are held and their running confidence is >= threshold + g; judge at
                 the commit, at 8 tokens, or at the end, whichever comes first (the cascade's hold)

Reported per policy: agreement of the stream's decision with the whole answer's, share escalated, accuracy of
what is served when escalated answers go to an always-right cloud, and the mean tokens held before the first
byte is sent (time to first token, in tokens).

    python -m benchmarks.stream_hold [--items 60] [--threshold 0.5] [--json docs/bench/stream_hold.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TASKS = ("capitals", "languages")
LONGEST_HOLD = 8
POLICIES = [("fixed-8", LONGEST_HOLD, None)] + [(f"adaptive {m}/{g}", m, g) for m in (1, 2, 3, 4)
                                                  for g in (0.0, 0.05, 0.1, 0.2)]


def geometric_mean(logprobs: list[float]) -> float:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


def stream_decision(logprobs: list[float], threshold: float, min_tokens: int, margin: float | None) -> tuple[bool, int]:
    """(escalate?, tokens held) for one answer under a hold policy (margin None: fixed hold)."""
    for held in range(1, len(logprobs) + 1):
        prefix = logprobs[:held]
        if held >= LONGEST_HOLD or (margin is not None and held >= min_tokens
                                    and geometric_mean(prefix) >= threshold + margin):
            return geometric_mean(prefix) < threshold, held
    return geometric_mean(logprobs) < threshold, len(logprobs)


def answers(items: int) -> list[dict]:
    from edge_runtime.caps import LoadSettings
    from edge_runtime.runtime import Runtime

    rows = []
    with Runtime.load(settings=LoadSettings(n_ctx=1024)) as runtime:
        for task in TASKS:
            lines = (DATA / f"{task}_dev.jsonl").read_text().splitlines()[:items]
            for item in map(json.loads, lines):
                result = runtime.generate(item["prompt"], max_tokens=16, stop=item.get("stop"))
                rows.append({"task": task, "logprobs": [t.logprob for t in result.tokens],
                             "correct": result.text.strip().lower() == str(item["answer"]).strip().lower()})
    return rows


def replay(rows: list[dict], threshold: float) -> list[dict]:
    report = []
    for name, min_tokens, margin in POLICIES:
        agree = escalated = served_right = held_total = 0
        for row in rows:
            whole = geometric_mean(row["logprobs"]) < threshold
            escalate, held = stream_decision(row["logprobs"], threshold, min_tokens, margin)
            agree += escalate == whole
            escalated += escalate
            served_right += escalate or row["correct"]
            held_total += held
        count = len(rows)
        report.append({"policy": name, "agreement": agree / count, "escalated": escalated / count,
                       "served_accuracy": served_right / count, "mean_tokens_held": held_total / count})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=60, help="items per task")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = answers(args.items)
    whole_accuracy = sum(row["escalated"] if "escalated" in row else
                         (geometric_mean(row["logprobs"]) < args.threshold or row["correct"]) for row in rows) / len(rows)
    report = replay(rows, args.threshold)
    print(f"{len(rows)} answers; whole-answer decisions serve {whole_accuracy:.3f} accuracy")
    print("| policy | agreement with whole answer | escalated | served accuracy | mean tokens held |")
    print("|---|---|---|---|---|")
    for line in report:
        print(f"| {line['policy']} | {line['agreement']:.3f} | {line['escalated']:.3f} | "
              f"{line['served_accuracy']:.3f} | {line['mean_tokens_held']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"threshold": args.threshold, "answers": len(rows),
                                               "whole_answer_served_accuracy": whole_accuracy,
                                               "policies": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
