"""A disk cache of the local model's answers, so re-running an evaluation does not re-run the model.

The local pass dominates an evaluation's run time (seconds per item on a busy laptop CPU), while everything
after it (calibration, routing, the cloud calls, the report) takes seconds. Answers are appended to a JSONL
file, one record per item, keyed by the model file (name, size and a SHA-256 of its bytes) plus the answerer's
version, and by the item (id plus a hash of its prompt, choices and stop), so a changed item, another model or
changed signals are answered afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from fallback.tasks import LocalAnswer, TaskItem

HASH_CHUNK_BYTES = 1 << 20


def model_key(path: str | Path) -> str:
    """``name:size:sha256[:16]`` of a model file; the whole file is hashed (about a second for 250 MB)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return f"{path.name}:{path.stat().st_size}:{digest.hexdigest()[:16]}"


def item_key(item: TaskItem) -> str:
    text = json.dumps([item.prompt, item.choices, item.stop], ensure_ascii=False)
    return f"{item.id}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class LocalAnswerCache:
    """Answers of one model, loaded from and appended to ``path``."""

    def __init__(self, path: str | Path, model: str) -> None:
        self.path = Path(path)
        self.model = model
        self._answers = dict(self._read())

    def _read(self) -> Iterator[tuple[str, LocalAnswer]]:
        if not self.path.exists():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by an interrupted run
            if record.get("model") == self.model:
                yield record["item"], LocalAnswer(**record["answer"])

    def get(self, item: TaskItem) -> LocalAnswer | None:
        return self._answers.get(item_key(item))

    def put(self, item: TaskItem, answer: LocalAnswer) -> None:
        key = item_key(item)
        self._answers[key] = answer
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"model": self.model, "item": key, "answer": asdict(answer)}) + "\n")


def answer_all(items: Iterable[TaskItem], answer: Callable[[TaskItem], LocalAnswer], cache: LocalAnswerCache,
               progress: Callable[[int, int], None] | None = None) -> dict[str, LocalAnswer]:
    """Every item's local answer by id, from the cache where present; new answers are cached as they come."""
    items = list(items)
    answers: dict[str, LocalAnswer] = {}
    for done, item in enumerate(items, start=1):
        cached = cache.get(item)
        if cached is None:
            cached = answer(item)
            cache.put(item, cached)
        answers[item.id] = cached
        if progress is not None:
            progress(done, len(items))
    return answers
