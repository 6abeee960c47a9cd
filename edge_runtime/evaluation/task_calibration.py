"""Per-task confidence calibration for the evaluation: which feature sets to try, and the chosen fit.

Label tasks (scored choices) and generation tasks (free text) produce different signals (see
``answerer.LocalAnswerer``), so each gets its own candidate list. The 270M model's reliability differs
by the label it predicts, so label candidates include the one-hot predicted label and its products with the
top probability, and the query's question word (``fallback.tasks.query_signals``). Generated answers get the
signals of all their tokens and of their value tokens only (per JSON field for structured answers), with
margins over the runner-up token. The candidate with the best cross-validated AUROC on the calibration items
wins; the test items are never seen here.

``calibrate_running`` fits the running decision's checkpoints (``fallback.early``) the same way, on the
calibration answers cut after 1, 1 + every, ... tokens, each with its own early threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

from fallback.calibration import Calibrator, Candidate, select_calibrator
from fallback.early import DEFAULT_EVERY, RunningCalibration, early_threshold
from fallback.tasks import QUESTION_WORDS, LocalAnswer, TaskItem, query_signals

LABEL_BASES = ("max_prob", "margin", "neg_entropy")
GENERATION_BASES = ("mean_logprob", "min_logprob", "p10_logprob", "first_logprob")
VALUE_BASES = ("value_mean_logprob", "value_min_logprob", "value_first_logprob")
MARGIN_BASES = ("value_min_margin", "value_first_margin", "value_mean_margin")
STRONG_L2 = 1.0
MIN_CHECKPOINT_ITEMS = 20  # fewer calibration answers still running at a checkpoint: no decision there


def _label_names(signals: dict[str, float]) -> list[str]:
    return sorted((name for name in signals if name.startswith("label_")), key=lambda name: int(name[6:]))


def item_signals(item: TaskItem, answer: LocalAnswer) -> dict[str, float]:
    """What confidence is computed from: the local answer's signals (recomputed from its tokens when it has
    them) plus the query's text signals."""
    return {**answer.signals_after(), **query_signals(item.prompt)}


def label_candidates(signals: dict[str, float]) -> list[Candidate]:
    labels = _label_names(signals)
    one_hot = tuple(labels[1:])  # one label is the baseline (the intercept)
    candidates = [Candidate("max_prob", "platt", ("max_prob",)),
                  Candidate("raw_max_prob", "platt", ("raw_max_prob",)),
                  Candidate("isotonic max_prob", "isotonic", ("max_prob",)),
                  Candidate("calibrated+raw", "platt", (*LABEL_BASES, *(f"raw_{b}" for b in LABEL_BASES)))]
    words = tuple(f"qword_{word}" for word in QUESTION_WORDS if f"qword_{word}" in signals)
    for base in ("max_prob", "margin"):
        products = tuple(f"{label}*{base}" for label in labels)
        for l2 in (1e-2, STRONG_L2):
            candidates += [Candidate(f"label+{base} (l2={l2:g})", "platt", (base, *one_hot), l2),
                           Candidate(f"label x {base} (l2={l2:g})", "platt", (*one_hot, *products), l2),
                           Candidate(f"label x {base} + raw (l2={l2:g})", "platt",
                                     (*one_hot, *products, "raw_max_prob", "raw_margin"), l2)]
        if words:
            candidates += [Candidate(f"label+{base}+question word (l2={l2:g})", "platt", (base, *one_hot, *words),
                                     l2) for l2 in (STRONG_L2, 3 * STRONG_L2)]
    return candidates


def generation_candidates(signals: dict[str, float]) -> list[Candidate]:
    candidates = [Candidate(name, "platt", (name,)) for name in GENERATION_BASES]
    candidates += [Candidate("isotonic mean_logprob", "isotonic", ("mean_logprob",)),
                   Candidate("mean+min+first", "platt", ("mean_logprob", "min_logprob", "first_logprob")),
                   Candidate("all logprobs+length", "platt", (*GENERATION_BASES, "n_tokens")),
                   Candidate("all logprobs+length (l2=1)", "platt", (*GENERATION_BASES, "n_tokens"), STRONG_L2)]
    if "value_min_logprob" not in signals:
        return candidates  # signals of an older answer cache
    candidates += [Candidate(name, "platt", (name,)) for name in (*VALUE_BASES, *MARGIN_BASES)]
    fields = tuple(sorted(name for name in signals if name.startswith("field_") and name.count("_") >= 2
                          and not name.startswith("field_min_")))
    sets = {"values": VALUE_BASES, "values+margins": (*VALUE_BASES, *MARGIN_BASES),
            "worst field": ("field_min_sum", "field_min_first", "value_min_margin")}
    if fields:
        sets |= {"per field": fields, "per field+margins": (*fields, *MARGIN_BASES)}
    sets["everything"] = (*GENERATION_BASES, *sets.pop("values+margins"), "n_tokens", *fields)
    for name, features in sets.items():
        candidates += [Candidate(f"{name} (l2={l2:g})", "platt", features, l2) for l2 in (1e-2, STRONG_L2)]
    return candidates


def candidates_for(signals: dict[str, float]) -> list[Candidate]:
    return label_candidates(signals) if "max_prob" in signals else generation_candidates(signals)


def calibrate_task(task: str, rows: Sequence[dict[str, float]], correct: Sequence[bool], model: str,
                   folds: int = 5, seed: int = 0) -> Calibrator:
    """The best candidate for one task's calibration items, labelled with the task and model."""
    calibrator = select_calibrator(candidates_for(rows[0]), rows, correct, folds=folds, seed=seed)
    calibrator.task, calibrator.model = task, model
    return calibrator


def calibrate_running(task: str, answers: Sequence[LocalAnswer], correct: Sequence[bool], final: Calibrator,
                      every: int = DEFAULT_EVERY, folds: int = 5, seed: int = 0) -> RunningCalibration | None:
    """Checkpoint calibrators for a generation task, or None for label tasks (their answer is whole at once).

    At checkpoint n only the answers still running there count (longer than n tokens). Each checkpoint's
    threshold escalates early only what is no more often right than what ``final`` escalates at its end."""
    if not any(answer.logprobs for answer in answers):
        return None
    final_rows = [answer.signals_after() for answer in answers]
    final_escalated = [ok for row, ok in zip(final_rows, correct) if final.predict(row) < final.threshold]
    cap = sum(final_escalated) / len(final_escalated) if final_escalated else 0.0
    running = RunningCalibration(every)
    for tokens in range(1, max(len(answer.logprobs) for answer in answers), every):
        chosen = [i for i, answer in enumerate(answers) if len(answer.logprobs) > tokens]
        if len(chosen) < MIN_CHECKPOINT_ITEMS:
            break
        rows = [answers[i].signals_after(tokens) for i in chosen]
        labels = [correct[i] for i in chosen]
        calibrator = select_calibrator(candidates_for(rows[0]), rows, labels, folds=folds, seed=seed)
        calibrator.task, calibrator.model = task, final.model
        calibrator.threshold = early_threshold([calibrator.predict(row) for row in rows], labels, cap,
                                               final.threshold)
        calibrator.extra["tokens"] = tokens
        running.by_tokens[tokens] = calibrator
    return running
