"""The batched scheduler's step plan (``plan_batch``), simulated step by step without a model.

Fairness rules it must keep: every decoding request gets its token in every step (prefills never stall it); a
request admitted between steps joins the next step; prefill budget goes to the oldest request first; with more
prompt than the batch holds, no admitted request waits more than the steps the older prompts need."""

from __future__ import annotations

import math

import numpy as np

from edge_runtime.backends.base import SamplingParams
from edge_runtime.backends.llamacpp_batched import _Job, _Slot, plan_batch, split_for_hidden

GREEDY = SamplingParams(0.0, 1.0, 0, None, 0, 1000, None)


def job(prompt_length: int) -> _Job:
    return _Job(list(range(1, prompt_length + 1)), GREEDY, lambda: False, np.random.default_rng(0))


def admit(slot: _Slot, new: _Job) -> None:
    slot.job, slot.pending, slot.next_token, slot.produced = new, list(new.prompt_ids), None, 0


def run_step(slots: list[_Slot], capacity: int) -> tuple[list, list]:
    """One planned step, committed as the scheduler does; each slot that got logits decodes on (token 7)."""
    entries, sampled, consumed = plan_batch(slots, capacity)
    assert len(entries) <= capacity
    for slot, prompt_tokens, carried_next in consumed:
        if carried_next:
            slot.cached.append(slot.next_token)
        else:
            slot.cached.extend(slot.pending[:prompt_tokens])
            del slot.pending[:prompt_tokens]
    for slot, _ in sampled:
        slot.next_token = 7
    return entries, sampled


def test_every_decoding_request_gets_a_token_in_every_step_while_long_prompts_prefill():
    slots = [_Slot(sequence) for sequence in range(8)]
    for slot in slots[:6]:
        admit(slot, job(3))
    run_step(slots, capacity=18)  # the six short prompts prefill together and start decoding
    assert all(slot.decoding for slot in slots[:6])
    admit(slots[6], job(100))
    admit(slots[7], job(100))
    for _ in range(25):
        entries, sampled = run_step(slots, capacity=16)
        decoded = {entry[2] for entry in entries if entry[3] and entry[2] < 6}
        assert decoded == set(range(6)), "a decoding request was left out of a step"


def test_a_request_admitted_between_steps_joins_the_next_step():
    slots = [_Slot(sequence) for sequence in range(8)]
    for slot in slots[:7]:
        admit(slot, job(4))
    run_step(slots, capacity=256)
    admit(slots[7], job(5))  # arrives while seven others decode
    entries, sampled = run_step(slots, capacity=256)
    assert [entry[0] for entry in entries if entry[2] == 7] == [1, 2, 3, 4, 5]
    assert slots[7] in [slot for slot, _ in sampled]  # its first token is sampled in that same step


def test_prefill_goes_oldest_request_first_whatever_the_slot_order():
    slots = [_Slot(sequence) for sequence in range(4)]
    older, newer = job(30), job(30)
    admit(slots[3], older)  # the older request sits in a later slot
    admit(slots[0], newer)
    entries, _ = run_step(slots, capacity=20)
    assert {entry[2] for entry in entries} == {3}
    entries, _ = run_step(slots, capacity=20)
    assert [entry[2] for entry in entries] == [3] * 10 + [0] * 10


def test_no_admitted_request_waits_longer_than_the_older_prompts_need():
    capacity, prompts = 32, [50, 10, 70, 5, 40, 20, 60, 15]
    slots = [_Slot(sequence) for sequence in range(8)]
    for slot, length in zip(slots, prompts):
        admit(slot, job(length))
    first_token_step = {}
    for step in range(1, 40):
        _, sampled = run_step(slots, capacity)
        for slot, _ in sampled:
            first_token_step.setdefault(slot.sequence, step)
        if len(first_token_step) == len(slots):
            break
    for sequence, length in enumerate(prompts):
        # decoding slots take at most one entry each per step; the rest of the batch serves older prompts first
        older_work = sum(prompts[: sequence + 1])
        bound = math.ceil(older_work / (capacity - sequence))
        assert first_token_step[sequence] <= bound, (sequence, first_token_step[sequence], bound)


def test_a_recorded_row_is_decoded_apart_from_prompt_chunks_and_with_single_rows_in_one_decode():
    """With llama.cpp's embeddings output on every row of a batch is an output: a step whose recorded rows
    (hidden states asked for) share it with a prompt chunk becomes two decodes, the chunk's with embeddings off;
    a step of single-token rows stays one decode. Sampled rows keep pointing at their own tokens."""
    recording = SamplingParams(0.0, 1.0, 0, None, 0, 1000, None, record_hidden=2)
    slots = [_Slot(sequence) for sequence in range(3)]
    admit(slots[0], job(3))
    slots[0].job.sampling = recording
    slots[0].next_token = slots[0].pending.pop()  # as ``_start`` leaves a recording job: its last prompt token apart
    admit(slots[1], job(2))
    first = plan_batch(slots, 64)
    assert slots[0] not in [slot for slot, _ in first[1]]  # its prefill ends without sampling
    run_step(slots, 64)
    admit(slots[2], job(40))
    parts = split_for_hidden(*plan_batch(slots, 64))
    assert [hidden for *_, hidden in parts] == [False, True]
    rest, recorded = parts
    assert [entry[2] for entry in recorded[0]] == [0] and recorded[1] == [(slots[0], 0)]
    assert {entry[2] for entry in rest[0]} == {1, 2} and len(rest[0]) == 41
    assert all(rest[0][index][2] == slot.sequence for slot, index in rest[1])
    assert [item[0].sequence for item in recorded[2]] == [0]
    run_step(slots, 64)
    only_rows = split_for_hidden(*plan_batch(slots, 64))
    assert len(only_rows) == 1 and only_rows[0][3] is True and len(only_rows[0][0]) == 3
