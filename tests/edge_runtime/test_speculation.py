"""Prompt-lookup speculative decoding: drafts come from the context, greedy output is unchanged."""

from __future__ import annotations

import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime
from edge_runtime.speculation import DecodeCosts, DraftPolicy, PromptLookup

DOCUMENT = ("Invoice INV-2024-0042. Customer: Margaret Holloway, 14 Elm Street, Springfield. Total due: $107.48.\n"
            "Contact: billing@acme-supplies.example, phone 555-0142.\n\nCustomer: Margaret Holloway\nAddress:")


def test_draft_is_what_followed_the_last_occurrence_of_the_ngram():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2, 3], max_draft=3)
    assert lookup.draft(10) == [4, 5, 9]
    assert lookup.draft(1) == [4]
    lookup.append(7)
    assert lookup.draft(10) == [], "the n-gram (2, 3, 7) never appeared before"


def _policy(step=0.02, extra=None, acceptance=0.5, margin=1.05):
    costs = DecodeCosts(step_s=step, extra_position_s=extra)
    policy = DraftPolicy(costs, margin=margin, prior_acceptance=acceptance)
    return policy


def test_no_drafting_before_a_plain_step_was_timed_or_without_a_draft():
    assert DraftPolicy(DecodeCosts()).length(6) == 0
    assert _policy().length(0) == 0


def test_cheap_verification_and_good_guesses_draft_long():
    assert _policy(extra=0.001, acceptance=0.95).length(6) == 6
    assert _policy(extra=0.001, acceptance=0.95).length(3) == 3, "never longer than the draft"


def test_costly_verification_drafts_only_near_certain_guesses():
    """Measured here: one step 17.4 ms, each extra verified position 13 ms."""
    assert _policy(step=0.0174, extra=0.013, acceptance=0.5).length(6) == 0
    assert _policy(step=0.0174, extra=0.013, acceptance=0.8).length(6) == 0
    assert _policy(step=0.0174, extra=0.013, acceptance=0.995).length(6) == 6


def test_an_unmeasured_verification_cost_is_probed_optimistically():
    assert _policy(extra=None, acceptance=0.5).length(6) > 0


def test_shadow_drafts_teach_acceptance_without_verifying():
    policy = _policy(acceptance=0.5)
    for _ in range(4):
        policy.shadow([1, 2, 3, 4])
        for token in (1, 2, 3, 4):
            policy.decoded(token)
    assert policy.acceptance > 0.9 and policy.stats.shadow_hits == 16
    for _ in range(6):
        policy.shadow([7, 8])
        policy.decoded(9)
    assert policy.acceptance < 0.3 and policy.stats.shadow_guesses == 10


def test_a_stale_verification_cost_is_forgotten():
    costs = DecodeCosts(step_s=0.02, extra_position_s=0.02, stale_after=3)
    for _ in range(4):
        costs.observe_step(0.02)
    assert costs.extra_position_s is None
    costs.observe_verify(3, 0.03)
    assert costs.extra_position_s == pytest.approx(0.005)


@pytest.mark.parametrize("prompt", [DOCUMENT, "The quick brown fox jumps over the lazy dog. The quick brown",
                                    "Once upon a time"])
def test_greedy_output_is_identical_with_and_without_speculation(bundled_path, prompt):
    """Drafts verified whenever there is one (margin 0), so the batched verification really runs."""
    outputs = []
    for speculative in (False, True):
        with Runtime.load(bundled_path, settings=LoadSettings(speculative=True, prefix_cache=False)) as runtime:
            runtime.backend.speculative = speculative
            runtime.backend.draft_margin = 0.0
            result = runtime.generate(prompt, max_tokens=40)
            outputs.append(([t.token_id for t in result.tokens], [round(t.logprob, 4) for t in result.tokens]))
            if speculative:
                assert runtime.backend.last_draft_stats.verifications > 0
    assert outputs[0][0] == outputs[1][0]
    assert outputs[0][1] == pytest.approx(outputs[1][1], abs=2e-3)


def test_the_policy_stops_verifying_where_it_costs_more_than_it_saves(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(prefix_cache=False)) as runtime:
        backend = runtime.backend
        backend.decode_costs.extra_position_s = 10.0  # as if each verified position took ten seconds
        runtime.generate(DOCUMENT, max_tokens=30)
        assert backend.last_draft_stats.verifications == 0 and backend.last_draft_stats.shadow_guesses > 0
        backend.decode_costs.extra_position_s = 0.0  # free verification: every draft pays
        runtime.generate(DOCUMENT, max_tokens=30)
        assert backend.last_draft_stats.verifications > 0


def test_a_verification_drops_an_open_shadow_draft():
    """Tokens accepted by a verification never pass through ``decoded``: the shadow must not outlive it."""
    policy = _policy(acceptance=0.6)
    policy.shadow([1, 2, 3])
    policy.decoded(1)
    policy.verified(proposed=2, accepted=2)
    before = policy.acceptance
    policy.decoded(9)  # a later token, compared with nothing
    assert policy.acceptance == before and policy.stats.shadow_guesses == 0
