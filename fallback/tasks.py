"""Labelled task items (the JSONL format of ``shared/data``) and how the local model answers them.

Label items (with ``choices``) are answered by scoring every label with ``Runtime.score_choices``; generation
items (with ``stop``) by greedy generation. Either way the answer comes with the signals that confidence is
computed from; ``query_signals`` adds a few read from the prompt text alone. Contextual calibration needs a
content-free version of the prompt: the value of the first line of the prompt's last block ("Review: ...",
"Question: ...") is replaced by "N/A".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fallback.confidence import contextual_calibrate, generation_signals, label_signals
from fallback.errors import ConfigError

CONTENT_FREE_TEXT = "N/A"
MAX_ANSWER_TOKENS = 16
QUESTION_WORDS = ("what", "how", "who", "when", "where", "which", "why", "name")
ANSWERER_VERSION = 1  # bump when answers or signals change, so cached answers are recomputed


class TaskItem(BaseModel):
    """One labelled item; ``choices`` for label tasks, ``stop`` for generation tasks."""

    model_config = ConfigDict(extra="ignore")

    id: str
    task: str
    prompt: str = Field(min_length=1)
    answer: str
    choices: list[str] | None = None
    stop: list[str] | None = None

    @property
    def is_label_task(self) -> bool:
        return bool(self.choices)


def load_items(path: str | Path) -> list[TaskItem]:
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                items.append(TaskItem.model_validate_json(line))
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not a task item: {' '.join(str(exc).split())[:200]}") from exc
    return items


def is_correct(item: TaskItem, answer: str) -> bool:
    return answer.strip().casefold() == item.answer.strip().casefold()


def query_text(prompt: str) -> str:
    """The value of the first line of the prompt's last block ("Question: <this>"), or "" if it has none."""
    first_line = prompt.rpartition("\n\n")[2].partition("\n")[0]
    return first_line.partition(": ")[2]


def query_signals(prompt: str) -> dict[str, float]:
    """One-hot of the query's first word among the question words: how reliable a question-type answer is
    depends on it ("who" questions are easy, "what" questions ambiguous). From the text alone, no model."""
    words = query_text(prompt).casefold().split()
    first = words[0] if words else ""
    return {f"qword_{word}": float(first == word) for word in QUESTION_WORDS}


def content_free_prompt(prompt: str) -> str:
    """The prompt with its final query replaced by "N/A", keeping the few-shot block and the answer cue."""
    head, separator, last = prompt.rpartition("\n\n")
    first_line, newline, rest = last.partition("\n")
    label, colon, _ = first_line.partition(": ")
    if not colon:
        return prompt
    return f"{head}{separator}{label}: {CONTENT_FREE_TEXT}{newline}{rest}"


@dataclass
class LocalAnswer:
    """The local model's answer to one item and what confidence is read from."""

    answer: str
    signals: dict[str, float]
    tokens_in: int
    tokens_out: int
    latency_s: float
    probabilities: list[float] = field(default_factory=list)


class LocalAnswerer:
    """Answers items on a runtime, caching content-free label probabilities per prompt template."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self._content_free: dict[tuple[str, tuple[str, ...]], list[float]] = {}

    def answer(self, item: TaskItem) -> LocalAnswer:
        return self._label(item) if item.is_label_task else self._generate(item)

    def _bias(self, item: TaskItem) -> list[float]:
        key = (content_free_prompt(item.prompt), tuple(item.choices))
        if key not in self._content_free:
            self._content_free[key] = self.runtime.score_choices(key[0], item.choices).probabilities
        return self._content_free[key]

    def _label(self, item: TaskItem) -> LocalAnswer:
        import time

        started = time.perf_counter()
        scores = self.runtime.score_choices(item.prompt, item.choices)
        calibrated = contextual_calibrate(scores.probabilities, self._bias(item))
        raw = label_signals(scores.probabilities)
        signals = {**label_signals(calibrated), **{f"raw_{name}": value for name, value in raw.items()}}
        best = max(range(len(calibrated)), key=calibrated.__getitem__)
        signals.update({f"label_{index}": float(index == best) for index in range(len(item.choices))})
        return LocalAnswer(item.choices[best], signals, self.runtime.count_tokens(item.prompt),
                           scores.token_counts[best], time.perf_counter() - started, calibrated)

    def _generate(self, item: TaskItem) -> LocalAnswer:
        result = self.runtime.generate(item.prompt, max_tokens=MAX_ANSWER_TOKENS, stop=item.stop)
        signals = generation_signals([token.logprob for token in result.tokens])
        signals["n_tokens"] = float(len(result.tokens))
        return LocalAnswer(result.text.strip(), signals, result.usage.prompt_tokens, result.usage.completion_tokens,
                           result.timings.total_s)


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
