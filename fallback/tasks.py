"""Labelled task items (the JSONL format of ``shared/data``), their correctness, and what a local answer holds.

Label items have ``choices``, generation items ``stop``, structured items a ``schema`` (their gold ``answer`` is a
JSON object). The local model answers them in ``edge_runtime.evaluation.answerer`` (it drives the runtime, which
the fallback does not import); the answer (``LocalAnswer``) keeps what confidence is computed from: label
signals, or per generated token its log-probability (the model's, before the grammar masks it), its margin over
the best alternative, the JSON field it carries and when it was produced (so a running decision can be
replayed); ``query_signals`` adds a few read from the prompt text alone. Contextual calibration needs a
content-free version of the prompt: the value of the first line of the prompt's last block ("Review: ...",
"Question: ...") is replaced by "N/A".
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fallback.confidence import answer_signals
from fallback.errors import ConfigError
from fallback.structured import parse_object, same_fields

CONTENT_FREE_TEXT = "N/A"
MAX_ANSWER_TOKENS = 16
QUESTION_WORDS = ("what", "how", "who", "when", "where", "which", "why", "name")


class TaskItem(BaseModel):
    """One labelled item; ``choices`` for label tasks, ``stop`` for generation tasks, ``schema`` (JSON schema)
    for structured ones, whose object ``answer`` is kept as its JSON text (what a cloud would answer)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    task: str
    prompt: str = Field(min_length=1)
    answer: str
    choices: list[str] | None = None
    stop: list[str] | None = None
    json_schema: dict | None = Field(default=None, alias="schema")

    @field_validator("answer", mode="before")
    @classmethod
    def _object_as_json(cls, value: object) -> object:
        return json.dumps(value) if isinstance(value, dict) else value

    @property
    def is_label_task(self) -> bool:
        return bool(self.choices)

    @property
    def is_structured(self) -> bool:
        return self.json_schema is not None

    @property
    def response_format(self) -> dict | None:
        """The OpenAI ``response_format`` a structured item is asked with (None for the others)."""
        if self.json_schema is None:
            return None
        return {"type": "json_schema", "json_schema": {"name": self.task, "schema": self.json_schema}}

    @property
    def keys(self) -> list[str]:
        """The schema's top-level property names (a structured item's fields), in schema order."""
        return list((self.json_schema or {}).get("properties", {}))


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
    """Label and free answers: equal after trimming and case-folding. Structured answers: valid against the
    schema and every field equal (``fallback.structured.same_fields``)."""
    if not item.is_structured:
        return answer.strip().casefold() == item.answer.strip().casefold()
    from fallback.validity import check_output

    document, gold = parse_object(answer), parse_object(item.answer)
    return (document is not None and gold is not None and check_output(answer, item.response_format).ok
            and same_fields(document, gold))


def query_text(prompt: str) -> str:
    """The value of the first line of the prompt's last block ("Question: <this>"), or "" if it has none."""
    first_line = prompt.rpartition("\n\n")[2].partition("\n")[0]
    return first_line.partition(": ")[2]


def query_or_prompt(prompt: str) -> str:
    """What a request asks: its query line (``query_text``), or the whole prompt when it has none."""
    return query_text(prompt) or prompt


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
    """The local model's answer to one item and what confidence is read from.

    Generated answers keep, per token: ``logprobs`` (the model's, unmasked), ``margins`` (over the best other
    token), ``fields`` (the JSON key whose value the token carries; "" for a free answer's tokens, None for
    structure) and ``token_times_s`` (seconds from the request's start until the token was chosen; the first
    one ends the prefill). ``invalid`` says why an answer is unusable (empty, not JSON, off-schema)."""

    answer: str
    signals: dict[str, float]
    tokens_in: int
    tokens_out: int
    latency_s: float
    probabilities: list[float] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    fields: list[str | None] = field(default_factory=list)
    token_times_s: list[float] = field(default_factory=list)
    invalid: str = ""
    keys: list[str] = field(default_factory=list)
    hidden_prompt: str = ""  # the prompt's last hidden state (``fallback.probe.encode``), when recorded
    hidden_tokens: list[str] = field(default_factory=list)  # the first generated tokens' hidden states
    hidden_answer: str = ""  # a label task's state after the prompt and its chosen label, when recorded
    hidden_answer_middle: str = ""  # the middle layer's state at the same position, when tapped
    hidden_middle: list[str] = field(default_factory=list)  # the middle layer's: the prompt's, then the tokens'

    def hidden(self, source: str, tokens: int | None = None):
        """The hidden state a probe of ``source`` reads, or None when it was not recorded: "prompt", the
        prompt's last; "tokens", the mean of it and the generated tokens' fed back by the time ``tokens`` were
        chosen (token i is fed, and its state read, to choose token i + 1); "last", the latest of those (for a
        short answer, the state its end was chosen from); "answer", a label task's state after its label;
        "middle", the middle layer's state where "answer" (a label task) or "last" (a generated answer) read."""
        from fallback.probe import decode

        if source == "answer":
            return decode(self.hidden_answer) if self.hidden_answer else None
        if source == "middle" and self.hidden_answer_middle:
            return decode(self.hidden_answer_middle)
        states = self.hidden_middle if source == "middle" else (
            [self.hidden_prompt, *self.hidden_tokens] if self.hidden_prompt else [])
        if not states:
            return None
        fed = len(states) - 1 if tokens is None else max(tokens - 1, 0)
        known = states[:1] if source == "prompt" else states[:fed + 1]  # the prompt's, and those fed by then
        if source in ("last", "middle"):
            return decode(known[-1])
        vectors = [decode(state) for state in known]
        return sum(vectors) / len(vectors)

    def signals_after(self, tokens: int | None = None, probes=()) -> dict[str, float]:
        """The answer's signals as they stood after its first ``tokens`` tokens (all of them by default), with
        the logits of ``probes`` (``fallback.probe.Probe``) on the hidden states known by then."""
        from fallback.probe import probe_signals

        if not self.logprobs:
            signals = dict(self.signals)
        else:
            count = len(self.logprobs) if tokens is None else tokens
            signals = answer_signals(self.logprobs[:count], self.margins[:count], self.fields[:count], self.keys)
        return signals | probe_signals(probes, lambda source: self.hidden(source, tokens))


def answer_invalidity(item: TaskItem, text: str) -> str:
    """Why ``text`` cannot be used as the item's answer ("" when it can): empty, or not the schema's JSON."""
    from fallback.validity import check_output

    validity = check_output(text, item.response_format)
    return "" if validity.ok else validity.reason


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
