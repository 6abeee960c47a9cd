"""Comparing greedy outputs produced with and without cached KV state.

llama.cpp's logits depend slightly on how a prompt was split into decode batches (measured on the bundled
model: up to ~0.8 in a logit when the last few prompt tokens are decoded apart from the rest, with or without
flash attention or weight repacking), so reusing a cached prefix can flip a near-tie. A greedy path counts as
the same when the tokens are identical, or when they first differ where the reference's choice and the other
run's choice were within ``NEAR_TIE`` nats of each other. On an Intel Xeon VM (AVX-512 kernels, weights out of
the extra buffer types) a restored prefix flipped a choice 0.34 nats apart; a broken restore (the wrong KV
state) moves the choices by whole nats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

NEAR_TIE = 0.5


def assert_same_greedy_path(reference: Sequence[str], other: Sequence[str],
                            reference_top: Sequence[Mapping[str, float]]) -> None:
    for index, (expected, got) in enumerate(zip(reference, other, strict=True)):
        if expected != got:
            gap = reference_top[index][expected] - reference_top[index].get(got, float("-inf"))
            assert gap < NEAR_TIE, f"token {index}: {got!r} instead of {expected!r}, a gap of {gap:.2f} nats"
            return


def greedy_path(result) -> tuple[list[str], list[dict[str, float]]]:
    """Token texts and their top alternatives from a ``GenerationResult`` made with ``top_logprobs``."""
    return [token.text for token in result.tokens], [{alt.text: alt.logprob for alt in token.top}
                                                     for token in result.tokens]
