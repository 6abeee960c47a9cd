"""The text checkpoint (-1) predicts the final rule's decision from the query text and escalates, before the
model runs, what the final rule would escalate: pure calibration logic on made-up answers (no model).

Film questions get unsure answers (the final rule escalates them), person questions sure ones (kept local);
the names vary, so only the question's wording tells them apart before any token."""

from __future__ import annotations

import math
import random

from edge_runtime.evaluation.task_calibration import (EARLY_SHARE, TEXT_PRECISIONS, calibrate_running,
                                                      calibrate_task, calibrator_signals, early_share,
                                                      text_threshold)
from fallback.early import TEXT_CHECKPOINT, early_threshold
from fallback.tasks import LocalAnswer, TaskItem

NAMES = ["Ana Ruiz", "Jan de Vries", "Paul Martin", "Yuki Sato", "Lars Berg", "Ines Costa", "Omar Haddad",
         "Eva Novak", "Tom Hardy", "Mia Rossi", "Karl Weber", "Lena Fischer", "Hugo Petit", "Sara Lind"]


def item_and_answer(index: int, rng: random.Random) -> tuple[TaskItem, LocalAnswer, bool]:
    film = index % 2 == 0
    name = f"{rng.choice(NAMES)} {index}"
    query = (f"Q: What is the original language of the film {name}?\nA:" if film
             else f"Q: What is the native language of {name}?\nA:")
    right = rng.random() < (0.25 if film else 0.85)
    sure = rng.uniform(0.25, 0.6) if film else rng.uniform(0.8, 0.99)
    logprobs = [math.log(sure), math.log(min(0.99, sure + 0.05)), -0.01]
    answer = LocalAnswer(answer="French" if right else "Dutch", signals={}, tokens_in=12, tokens_out=3,
                         latency_s=0.12, logprobs=logprobs, margins=[1.0, 1.0, 5.0], fields=["", "", None],
                         token_times_s=[0.08, 0.1, 0.12])
    item = TaskItem(id=f"t-{index}", task="languages", prompt=query, answer="French", stop=["\n"])
    return item, answer, right


def test_the_text_checkpoint_escalates_what_the_final_rule_would_escalate():
    rng = random.Random(3)
    triples = [item_and_answer(index, rng) for index in range(160)]
    items, answers, correct = ([t[k] for t in triples] for k in range(3))
    final, rows = calibrate_task("languages", items, answers, correct, "fake")
    running = calibrate_running("languages", items, answers, correct, final, rows)
    text = running.by_tokens[TEXT_CHECKPOINT]
    final_escalates = [final.predict(row) < final.threshold for row in rows]
    early = [text.predict(calibrator_signals(item, answer, text, TEXT_CHECKPOINT)) < text.threshold
             for item, answer in zip(items, answers)]
    films = [index % 2 == 0 for index in range(len(items))]
    assert sum(early) >= 0.8 * sum(films), "most film questions are escalated before the model runs"
    persons_early = sum(e and not film for e, film in zip(early, films))
    assert persons_early <= 0.1 * (len(items) - sum(films)), "few person questions are escalated early"
    agreeing = sum(e and f for e, f in zip(early, final_escalates))
    assert agreeing >= min(TEXT_PRECISIONS) * sum(early), "what it escalates, the final rule escalates too"


def test_a_looser_text_cut_is_taken_only_where_it_decides_most_escalations_before_the_model_runs():
    # text scores of 100 items, lowest first; the final rule keeps the first 10 items at 3 in 10, the next 40 at
    # 3 in 10 (so a cut at precision 0.75 takes about nothing), the last 50 all
    keeps = [i % 10 < 3 for i in range(50)] + [True] * 50
    scores = [i / 100 for i in range(100)]
    threshold = text_threshold(scores, keeps)
    early = [s < threshold for s in scores]
    assert early_share(scores, keeps, threshold) >= EARLY_SHARE
    assert sum(e and not k for e, k in zip(early, keeps)) >= min(TEXT_PRECISIONS) * sum(early)
    assert threshold > early_threshold(scores, keeps, 1.0 - TEXT_PRECISIONS[0], 1.0)
    # where no cut gets there, the most precise one: a looser one would add cloud calls and not meet the target
    mixed = [i % 2 == 0 for i in range(100)]  # half kept everywhere: no cut is even 0.6 precise
    assert text_threshold(scores, mixed) == early_threshold(scores, mixed, 1.0 - TEXT_PRECISIONS[0], 1.0)
