"""The local-answer cache: keyed by model and item content, appended as it goes, tolerant of a cut line."""

from __future__ import annotations

from edge_runtime.evaluation.local_cache import LocalAnswerCache, answer_all, item_key, model_key
from fallback.tasks import LocalAnswer, TaskItem

ITEM = TaskItem(id="x", task="t", prompt="P:", answer="a", choices=["a", "b"])


def _answer(item: TaskItem) -> LocalAnswer:
    return LocalAnswer("a", {"max_prob": 0.8}, 3, 1, 0.01, [0.8, 0.2])


def test_answers_are_cached_and_reloaded(tmp_path):
    path = tmp_path / "cache.jsonl"
    calls = []
    answer = lambda item: calls.append(item.id) or _answer(item)  # noqa: E731
    assert answer_all([ITEM], answer, LocalAnswerCache(path, "m1"))["x"] == _answer(ITEM)
    assert answer_all([ITEM], answer, LocalAnswerCache(path, "m1"))["x"] == _answer(ITEM)
    assert calls == ["x"]
    assert LocalAnswerCache(path, "m2").get(ITEM) is None  # another model answers afresh


def test_a_changed_prompt_is_a_new_key_and_a_cut_line_is_skipped(tmp_path):
    changed = ITEM.model_copy(update={"prompt": "Other:"})
    assert item_key(changed) != item_key(ITEM)
    path = tmp_path / "cache.jsonl"
    LocalAnswerCache(path, "m").put(ITEM, _answer(ITEM))
    with open(path, "a") as handle:
        handle.write('{"model": "m", "item": ')  # an interrupted write
    assert LocalAnswerCache(path, "m").get(ITEM) == _answer(ITEM)


def test_model_key_names_size_and_content(tmp_path):
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(b"weights")
    second.write_bytes(b"weightz")
    assert model_key(first).startswith("a.gguf:7:")
    assert model_key(first).split(":")[2] != model_key(second).split(":")[2]
