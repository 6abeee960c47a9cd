"""Plain records that generation hands back: tokens with log-probabilities, usage, timings, results.

They are dataclasses (not pydantic) because they are built on the hot path, once per token; ``to_dict``
gives the JSON shape the CLI and the server print.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "deadline", "cancelled"]


@dataclass(frozen=True)
class TopLogprob:
    """One alternative the model considered at a step."""

    token_id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token and the log-probability the model gave it."""

    token_id: int
    text: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()
    hidden: Any = field(default=None, repr=False, compare=False)  # see ``TokenStep.hidden``; never serialised


@dataclass(frozen=True)
class TokenStep:
    """What a backend yields per decoded token: id, raw bytes and log-probabilities.

    ``hidden``: on request (``SamplingParams.record_hidden``), the model's final hidden state the token was
    chosen from, a float32 numpy vector (the prompt's last position for the first token, the previous token's
    for the others); None otherwise."""

    token_id: int
    piece: bytes
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    is_end_of_generation: bool = False
    hidden: Any = field(default=None, repr=False, compare=False)


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Wall-clock timings of one generation, in seconds and tokens per second."""

    load_s: float = 0.0
    time_to_first_token_s: float | None = None
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0


@dataclass
class GenerationResult:
    """A finished generation: text, why it stopped, per-token log-probabilities, usage and timings."""

    text: str
    finish_reason: FinishReason
    tokens: list[TokenLogprob]
    usage: Usage
    timings: Timings
    prompt_tokens_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float | None:
        if not self.tokens:
            return None
        return sum(token.logprob for token in self.tokens) / len(self.tokens)

    @property
    def confidence(self) -> float | None:
        """Geometric mean of the chosen tokens' probabilities (uncalibrated), or None without tokens."""
        mean = self.mean_logprob
        return None if mean is None else math.exp(mean)

    def to_dict(self) -> dict:
        record = asdict(self)
        for token in record["tokens"]:
            del token["hidden"]
        record["usage"]["total_tokens"] = self.usage.total_tokens
        record["confidence"] = self.confidence
        record["mean_logprob"] = self.mean_logprob
        return record


@dataclass
class StreamEvent:
    """One streamed piece of text and the token it came with: every generated token gets one (``text`` is ""
    while the token's text is held back, part of a possible stop string or of a UTF-8 character); ``token`` is
    None for text released at the end after a held-back stop prefix."""

    text: str
    token: TokenLogprob | None


@dataclass
class ChoiceScores:
    """A normalised distribution over whole label strings, with each label's summed log-probability."""

    choices: list[str]
    probabilities: list[float]
    logprobs: list[float]
    token_counts: list[int]

    @property
    def best(self) -> str:
        return self.choices[self.probabilities.index(max(self.probabilities))]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.choices, self.probabilities))
