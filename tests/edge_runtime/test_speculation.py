"""Prompt-lookup speculative decoding: drafts come from the context, greedy output is unchanged."""

from __future__ import annotations

import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime
from edge_runtime.speculation import PromptLookup

DOCUMENT = ("Invoice INV-2024-0042. Customer: Margaret Holloway, 14 Elm Street, Springfield. Total due: $107.48.\n"
            "Contact: billing@acme-supplies.example, phone 555-0142.\n\nCustomer: Margaret Holloway\nAddress:")


def test_draft_is_what_followed_the_last_occurrence_of_the_ngram():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2, 3], max_draft=3)
    assert lookup.draft(10) == [4, 5, 9]
    assert lookup.draft(1) == [4]
    lookup.append(7)
    assert lookup.draft(10) == [], "the n-gram (2, 3, 7) never appeared before"


def test_drafting_pauses_after_repeated_misses():
    lookup = PromptLookup([5, 6, 7, 8, 5, 6, 7])
    for _ in range(3):
        lookup.record(proposed=4, accepted=0)
    assert lookup.draft(8) == []
    assert lookup.acceptance_rate == 0.0


@pytest.mark.parametrize("prompt", [DOCUMENT, "The quick brown fox jumps over the lazy dog. The quick brown",
                                    "Once upon a time"])
def test_greedy_output_is_identical_with_and_without_speculation(bundled_path, prompt):
    outputs = []
    for speculative in (False, True):
        with Runtime.load(bundled_path, settings=LoadSettings(speculative=True)) as runtime:
            runtime.backend.speculative = speculative
            runtime.backend.prefix_reuse = False
            result = runtime.generate(prompt, max_tokens=40)
            outputs.append(([t.token_id for t in result.tokens], [round(t.logprob, 4) for t in result.tokens]))
    assert outputs[0][0] == outputs[1][0]
    assert outputs[0][1] == pytest.approx(outputs[1][1], abs=2e-3)
