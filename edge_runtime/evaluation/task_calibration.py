"""Per-task confidence calibration for the evaluation: which feature sets to try, and the chosen fit.

Label tasks (scored choices) and generation tasks (free text) produce different signals (see
``answerer.LocalAnswerer``), so each gets its own candidate list. The 270M model's reliability differs
by the label it predicts, so label candidates include the one-hot predicted label and its products with the
top probability, and the query's question word (``fallback.tasks.query_signals``). Generated answers get the
signals of all their tokens and of their value tokens only (per JSON field for structured answers), with
margins over the runner-up token. Where the answers carry hidden states, linear probes (``fallback.probe``) on
the prompt's last one and on the first generated tokens' add one signal each, and where the gold answers form
classes (label tasks, languages, a JSON field's values) the class probe (``fallback.class_probe``) adds its
log-odds of the answer said (whole answers only); the calibration items get out-of-fold probe scores, and
candidates use the probes alone or beside the probabilities. The candidate with the best cross-validated AUROC
on the calibration items wins (so a probe stays only where it helps); the test items are never seen here.
``use`` restricts the candidates ("probs", "probe") for the ablation.

``calibrate_running`` fits the running decision's checkpoints (``fallback.early``) the same way, on the
calibration answers cut after 1, 1 + every, ... tokens, each with its own early threshold, and a prompt-only
checkpoint 0 (the prompt probe and the question word, known after the prefill, before any token). The text
checkpoint -1 is fitted to the final rule's own decision rather than to correctness (``TEXT_PRECISIONS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fallback.calibration import Calibrator, Candidate, select_calibrator
from fallback.class_probe import ClassProbe, class_out_of_fold, class_probes_of, class_signals, fit_class_probe
from fallback.early import DEFAULT_EVERY, PROMPT_CHECKPOINT, TEXT_CHECKPOINT, RunningCalibration, early_threshold
from fallback.grounding import answer_grounding
from fallback.probe import SOURCES, Probe, fit_probe, fit_settings, out_of_fold, probe_signals, probes_of, text_vector
from fallback.tasks import QUESTION_WORDS, LocalAnswer, TaskItem, query_or_prompt, query_signals

LABEL_BASES = ("max_prob", "margin", "neg_entropy")
GENERATION_BASES = ("mean_logprob", "min_logprob", "p10_logprob", "first_logprob")
VALUE_BASES = ("value_mean_logprob", "value_min_logprob", "value_first_logprob")
MARGIN_BASES = ("value_min_margin", "value_first_margin", "value_mean_margin")
STRONG_L2 = 1.0
CLASS_SOURCE = "prompt"  # the class probe reads the prompt's last state (recorded for every task, served too)
MIN_CHECKPOINT_ITEMS = 20  # fewer calibration answers still running at a checkpoint: no decision there
MIN_PROMPT_ITEMS = 10  # fewer calibration answers: no decision from the text or the prompt alone
# the text checkpoint escalates, before the model runs, the queries the final rule would escalate anyway: it
# predicts the final decision from the query text and escalates where, on the calibration items, at least a
# share (a precision) of what it escalates is escalated by the final rule too (the rest is the price of deciding
# early: cloud calls the final rule would not have made). The first of these shares (most precise first) at which
# the text checkpoint takes at least EARLY_SHARE of all the escalations on the calibration items (its own, those
# the final rule would not have made included, and the final rule's on the rest) is used, so that
# most escalated requests are decided before the model runs; where none gets there, the most precise (the goal is
# out of reach, and a looser one would only add cloud calls).
TEXT_PRECISIONS = (0.75, 0.7, 0.65, 0.6)
EARLY_SHARE = 0.6


def _label_names(signals: dict[str, float]) -> list[str]:
    return sorted((name for name in signals if name.startswith("label_")), key=lambda name: int(name[6:]))


def item_signals(item: TaskItem, answer: LocalAnswer, tokens: int | None = None, probes: Sequence[Probe] = (),
                 class_probes: Sequence[ClassProbe] = ()) -> dict[str, float]:
    """What confidence is computed from: the local answer's signals after ``tokens`` tokens (recomputed from
    its tokens when it has them; all by default), ``probes``' logits, the query's text signals, and (the whole
    answer only: its class needs its words) the class probe's log-odds of the answer given."""
    hidden = [probe for probe in probes if probe.source != "text"]
    text = probe_signals([probe for probe in probes if probe.source == "text"], lambda _: item_text_vector(item))
    grounding = (answer_grounding(answer.answer, answer.fields, tokens, query_or_prompt(item.prompt))
                 if answer.keys else {})
    said = class_signals(class_probes, answer.hidden, answer.answer) if tokens is None else {}
    return {**answer.signals_after(tokens, hidden), **text, **query_signals(item.prompt), **grounding, **said}


def item_text_vector(item: TaskItem):
    return text_vector(query_or_prompt(item.prompt))


def calibrator_signals(item: TaskItem, answer: LocalAnswer, calibrator: Calibrator,
                       tokens: int | None = None) -> dict[str, float]:
    """``item_signals`` with the probes ``calibrator`` carries."""
    return item_signals(item, answer, tokens, probes_of(calibrator), class_probes_of(calibrator))


def probe_features(items: Sequence[TaskItem], answers: Sequence[LocalAnswer], correct: Sequence[bool],
                   tokens: int | None = None, seed: int = 0,
                   sources: Sequence[str] = SOURCES) -> tuple[list[dict[str, float]], list[Probe]]:
    """Per answer, the out-of-fold logit of each probe whose hidden state every answer has; and the probes,
    fitted on all answers. The "tokens" and "last" probes only where some answer recorded generated tokens."""
    extra: list[dict[str, float]] = [{} for _ in answers]
    probes = []
    if len(set(map(bool, correct))) < 2:
        return extra, probes
    for source in sources:
        if source in ("tokens", "last") and not any(answer.hidden_tokens for answer in answers):
            continue
        vectors = [item_text_vector(item) if source == "text" else answer.hidden(source, tokens)
                   for item, answer in zip(items, answers)]
        if any(vector is None for vector in vectors):
            continue
        x = np.stack(vectors)
        for row, value in zip(extra, out_of_fold(x, correct, source, seed=seed)):
            row[f"probe_{source}"] = float(value)
        probes.append(fit_probe(x, correct, source, *fit_settings(source)))
    return extra, probes


def class_probe_features(items: Sequence[TaskItem], answers: Sequence[LocalAnswer], correct: Sequence[bool],
                         tokens: int | None = None, seed: int = 0) -> tuple[list[dict[str, float]], list[ClassProbe]]:
    """Per answer, the out-of-fold class probes' log-odds, and the class probes fitted on all answers: one for a
    free answer, one per JSON field for a structured one. Empty rows and no probe where it does not apply: a cut
    answer (its class needs its words), answers without the prompt's hidden state, gold answers too varied to
    give two classes."""
    extra: list[dict[str, float]] = [{} for _ in answers]
    if tokens is not None or len(set(map(bool, correct))) < 2:
        return extra, []
    vectors = [answer.hidden(CLASS_SOURCE) for answer in answers]
    if any(vector is None for vector in vectors):
        return extra, []
    x, gold, said = np.stack(vectors), [item.answer for item in items], [answer.answer for answer in answers]
    probes = []
    for field in _answer_fields(items):
        values = class_out_of_fold(x, gold, said, correct, CLASS_SOURCE, seed=seed, field=field)
        if values is None:
            continue
        probe = fit_class_probe(x, gold, CLASS_SOURCE, field=field)
        for row, value in zip(extra, values):
            row[probe.signal] = float(value)
        probes.append(probe)
    return extra, probes


def _answer_fields(items: Sequence[TaskItem]) -> list[str]:
    """The class probes' fields: "" (the whole answer) for free answers, the schema's keys for JSON ones."""
    return list(dict.fromkeys(key for item in items for key in item.keys)) if items[0].is_structured else [""]


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
    if "ungrounded_values" in signals:  # values the query never mentions (``fallback.grounding``)
        sets |= {f"{name}+grounding": (*features, "ungrounded_values") for name, features in
                 (("values", VALUE_BASES), ("worst field", sets["worst field"]), ("everything", sets["everything"]))}
    for name, features in sets.items():
        candidates += [Candidate(f"{name} (l2={l2:g})", "platt", features, l2) for l2 in (1e-2, STRONG_L2)]
    return candidates


def probe_candidates(signals: dict[str, float]) -> list[Candidate]:
    probes = tuple(name for name in signals if name.startswith("probe_"))
    words = tuple(f"qword_{word}" for word in QUESTION_WORDS if f"qword_{word}" in signals)
    candidates = [Candidate(name, "platt", (name,)) for name in probes]
    if len(probes) > 1:
        candidates.append(Candidate("probes", "platt", probes))
    if words and probes:
        candidates.append(Candidate("probes+question word", "platt", (*probes, *words), STRONG_L2))
    return candidates


def candidates_for(signals: dict[str, float], use: Sequence[str] = ("probs", "probe")) -> list[Candidate]:
    """Probability candidates, probe candidates, and (both in ``use``) each Platt probability candidate with
    the probes beside it."""
    probs = label_candidates(signals) if "max_prob" in signals else generation_candidates(signals)
    probes = probe_candidates(signals) if "probe" in use else []
    if "probs" not in use:
        return probes or probs  # no probe (one class only): the probabilities, which then find nothing
    signals_of_probes = tuple(name for name in signals if name.startswith("probe_"))
    if not probes or not signals_of_probes:
        return probs
    both = [Candidate(f"{c.name} + probe", "platt", (*c.features, *signals_of_probes), c.l2)
            for c in probs if c.kind == "platt"]
    return [*probs, *probes, *both]


def fit_calibrator(task: str, items: Sequence[TaskItem], answers: Sequence[LocalAnswer], correct: Sequence[bool],
                   model: str, tokens: int | None = None, use: Sequence[str] = ("probs", "probe"), folds: int = 5,
                   seed: int = 0, sources: Sequence[str] = SOURCES) -> tuple[Calibrator, list[dict[str, float]]]:
    """The best candidate for one task's calibration answers (cut after ``tokens``), labelled with the task and
    model and carrying the probes it uses; and the rows it was chosen on (out-of-fold probe scores), which
    thresholds should be picked on."""
    rows = [item_signals(item, answer, tokens) for item, answer in zip(items, answers)]
    extra, probes = probe_features(items, answers, correct, tokens, seed, sources) if "probe" in use else ([], [])
    rows = [row | probe_row for row, probe_row in zip(rows, extra)] if extra else rows
    said, class_probes = class_probe_features(items, answers, correct, tokens, seed) if "probe" in use else ([], [])
    rows = [row | said_row for row, said_row in zip(rows, said)] if said else rows
    calibrator = select_calibrator(candidates_for(rows[0], use), rows, correct, folds=folds, seed=seed)
    used = calibrator.signal_names
    calibrator.extra["probes"] = [probe.to_dict() for probe in probes if probe.signal in used]
    kept = [probe.to_dict() for probe in class_probes if probe.signal in used]
    if kept:
        calibrator.extra["class_probes"] = kept
    calibrator.task, calibrator.model = task, model
    return calibrator, rows


def calibrate_task(task: str, items: Sequence[TaskItem], answers: Sequence[LocalAnswer], correct: Sequence[bool],
                   model: str, folds: int = 5, seed: int = 0) -> tuple[Calibrator, list[dict[str, float]]]:
    """The final decision's calibrator of one task (the whole answers), and its calibration rows."""
    return fit_calibrator(task, items, answers, correct, model, folds=folds, seed=seed)


def calibrate_running(task: str, items: Sequence[TaskItem], answers: Sequence[LocalAnswer], correct: Sequence[bool],
                      final: Calibrator, final_rows: Sequence[dict[str, float]], every: int = DEFAULT_EVERY,
                      folds: int = 5, seed: int = 0) -> RunningCalibration | None:
    """Checkpoint calibrators for a generation task, or None for label tasks (their answer is whole at once).

    At checkpoint n only the answers still running there count (longer than n tokens); the prompt-only
    checkpoint counts every answer. Each checkpoint's threshold escalates early only what is no more often right
    than what ``final`` escalates at its end (judged on ``final_rows``, the rows it was chosen on)."""
    if not any(answer.logprobs for answer in answers):
        return None
    final_keeps = [final.predict(row) >= final.threshold for row in final_rows]
    final_escalated = [ok for keeps, ok in zip(final_keeps, correct) if not keeps]
    cap = sum(final_escalated) / len(final_escalated) if final_escalated else 0.0
    running = RunningCalibration(every)
    text = _text_checkpoint(task, items, answers, final_keeps, final, folds, seed)
    prompt = _checkpoint(task, items, answers, correct, final, PROMPT_CHECKPOINT, cap, folds, seed)
    for checkpoint, calibrator in ((TEXT_CHECKPOINT, text), (PROMPT_CHECKPOINT, prompt)):
        if calibrator is not None:
            running.by_tokens[checkpoint] = calibrator
    for tokens in range(1, max(len(answer.logprobs) for answer in answers), every):
        chosen = [i for i, answer in enumerate(answers) if len(answer.logprobs) > tokens]
        if len(chosen) < MIN_CHECKPOINT_ITEMS:
            break
        running.by_tokens[tokens] = _checkpoint(task, [items[i] for i in chosen], [answers[i] for i in chosen],
                                                [correct[i] for i in chosen], final, tokens, cap, folds, seed)
    return running


def _text_checkpoint(task: str, items: Sequence[TaskItem], answers: Sequence[LocalAnswer], final_keeps: Sequence[bool],
                     final: Calibrator, folds: int, seed: int) -> Calibrator | None:
    """The text checkpoint: a calibrator of the final rule's decision (``final_keeps``) from the query text,
    thresholded at the first of ``TEXT_PRECISIONS`` that decides ``EARLY_SHARE`` of the escalations early (judged
    on the out-of-fold rows it was chosen on)."""
    fitted = _fit_checkpoint(task, items, answers, final_keeps, final, TEXT_CHECKPOINT, folds, seed)
    if fitted is None:
        return None
    calibrator, rows = fitted
    scores = [calibrator.predict(row) for row in rows]
    calibrator.threshold = text_threshold(scores, final_keeps)
    calibrator.extra["early_share"] = early_share(scores, final_keeps, calibrator.threshold)
    return calibrator


def text_threshold(text_scores: Sequence[float], final_keeps: Sequence[bool]) -> float:
    """The highest threshold below which at most 1 - precision of the items are kept by the final rule, for the
    first of ``TEXT_PRECISIONS`` whose threshold decides ``EARLY_SHARE`` of the escalations early; else the most
    precise one's."""
    thresholds = [early_threshold(text_scores, final_keeps, 1.0 - precision, 1.0) for precision in TEXT_PRECISIONS]
    reaching = [t for t in thresholds if early_share(text_scores, final_keeps, t) >= EARLY_SHARE]
    return reaching[0] if reaching else thresholds[0]


def early_share(text_scores: Sequence[float], final_keeps: Sequence[bool], threshold: float) -> float:
    """The share of the escalations (the text checkpoint's, below ``threshold``, and the final rule's on the
    rest) that the text checkpoint decides."""
    early = sum(score < threshold for score in text_scores)
    late = sum(score >= threshold and not keeps for score, keeps in zip(text_scores, final_keeps))
    return early / (early + late) if early + late else 0.0


def _checkpoint(task: str, items: Sequence[TaskItem], answers: Sequence[LocalAnswer], labels: Sequence[bool],
                final: Calibrator, tokens: int, cap: float, folds: int, seed: int) -> Calibrator | None:
    """One checkpoint's calibrator of ``labels`` and its early threshold: the highest (at most the final
    threshold) below which at most ``cap`` of the calibration items are labelled True."""
    fitted = _fit_checkpoint(task, items, answers, labels, final, tokens, folds, seed)
    if fitted is None:
        return None
    calibrator, rows = fitted
    calibrator.threshold = early_threshold([calibrator.predict(row) for row in rows], labels, cap, final.threshold)
    return calibrator


def _fit_checkpoint(task: str, items: Sequence[TaskItem], answers: Sequence[LocalAnswer], labels: Sequence[bool],
                    final: Calibrator, tokens: int, folds: int,
                    seed: int) -> tuple[Calibrator, list[dict[str, float]]] | None:
    """One checkpoint's calibrator of ``labels`` and the rows it was chosen on; None for a prompt-only
    checkpoint without a probe, or labels of one kind. The text checkpoint reads the query text only; the prompt
    one the probes too; later ones everything."""
    use = ("probe",) if tokens <= PROMPT_CHECKPOINT else ("probs", "probe")
    sources = ("text",) if tokens == TEXT_CHECKPOINT else SOURCES
    if len(answers) < MIN_PROMPT_ITEMS or len(set(map(bool, labels))) < 2 or (
            tokens == PROMPT_CHECKPOINT and not any(answer.hidden_prompt for answer in answers)):
        return None
    calibrator, rows = fit_calibrator(task, items, answers, labels, final.model, max(tokens, 0), use, folds, seed,
                                      sources)
    calibrator.extra["tokens"] = tokens
    return calibrator, rows
