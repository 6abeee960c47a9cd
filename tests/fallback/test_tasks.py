"""Task items: loading and its errors, correctness, and the content-free prompt on each data format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fallback.errors import ConfigError
from fallback.tasks import (CONTENT_FREE_TEXT, TaskItem, content_free_prompt, is_correct, load_items, query_signals,
                            query_text)

TINY = Path(__file__).parents[1] / "data" / "tiny_tasks.jsonl"

# The last block of each format in shared/data, as the prompts end.
FORMATS = {
    "sst2": ("Review: great film .\nSentiment: positive\n\nReview: one long string of cliches .\nSentiment:",
             "Review: great film .\nSentiment: positive\n\nReview: N/A\nSentiment:"),
    "trec": ("Question: What does IBM stand for ?\nAnswer type: abbreviation\n\n"
             "Question: Who was Ezra Taft Benson ?\nAnswer type:",
             "Question: What does IBM stand for ?\nAnswer type: abbreviation\n\nQuestion: N/A\nAnswer type:"),
    "agnews": ("Article: Pakistan hunts leader.\nTopic: world\n\nArticle: Microsoft Takes on Google. Early ...\n"
               "Topic:", "Article: Pakistan hunts leader.\nTopic: world\n\nArticle: N/A\nTopic:"),
    "capitals": ("Q: What is the capital of Guinea?\nA: Conakry\n\nQ: What is the capital of Mayotte?\nA:",
                 "Q: What is the capital of Guinea?\nA: Conakry\n\nQ: N/A\nA:"),
}


@pytest.mark.parametrize("task", sorted(FORMATS))
def test_content_free_prompt_replaces_only_the_final_query(task):
    prompt, expected = FORMATS[task]
    assert content_free_prompt(prompt) == expected


def test_content_free_prompt_on_the_bundled_items_keeps_the_few_shot_block():
    for item in load_items(TINY):
        free = content_free_prompt(item.prompt)
        head, _, last = free.rpartition("\n\n")
        assert item.prompt.startswith(head + "\n\n")
        assert last.splitlines()[0].endswith(": " + CONTENT_FREE_TEXT)
        assert last.splitlines()[-1] == item.prompt.splitlines()[-1]  # the answer cue is kept


def test_a_prompt_without_a_labelled_last_line_is_left_alone():
    assert content_free_prompt("just some text") == "just some text"


def test_load_items_reads_both_kinds_and_skips_blank_lines(tmp_path):
    path = tmp_path / "items.jsonl"
    label = {"id": "a", "task": "t", "prompt": "P:", "choices": ["x", "y"], "answer": "x"}
    generation = {"id": "b", "task": "g", "prompt": "Q:", "answer": "Paris", "stop": ["\n"], "extra": 1}
    path.write_text(json.dumps(label) + "\n\n" + json.dumps(generation) + "\n")
    items = load_items(path)
    assert [item.id for item in items] == ["a", "b"]
    assert items[0].is_label_task and not items[1].is_label_task


@pytest.mark.parametrize("line", ['{"id": "a", "task": "t", "answer": "x"}',  # no prompt
                                  '{"id": "a", "task": "t", "prompt": "", "answer": "x"}',  # empty prompt
                                  "not json at all"])
def test_load_items_names_the_file_and_line_of_a_bad_item(tmp_path, line):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "task": "t", "prompt": "P", "answer": "x"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: not a task item"):
        load_items(path)


def test_is_correct_ignores_case_and_surrounding_space():
    item = TaskItem(id="c", task="capitals", prompt="Q:", answer="Saint-Denis")
    assert is_correct(item, "  saint-denis ")
    assert not is_correct(item, "Saint Denis")


def test_query_signals_flag_the_question_word_of_the_final_query():
    prompt = "Question: Where is Rome ?\nAnswer type: location\n\nQuestion: Who was Ezra Taft Benson ?\nAnswer type:"
    assert query_text(prompt) == "Who was Ezra Taft Benson ?"
    signals = query_signals(prompt)
    assert signals["qword_who"] == 1.0 and sum(signals.values()) == 1.0
    assert sum(query_signals("Review: great film .\nSentiment:").values()) == 0.0
