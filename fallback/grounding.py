"""Whether a JSON answer's string values come from the request: a value the query never mentions was made up.

An extraction answer copies its values out of the user's words ("from boston to denver"). A small model that
is unsure copies one from its few-shot examples or invents one, often with high token probabilities. On the
atis dev set 102 of 387 answers had a value the query does not contain, and none of them was right. The signal
reads text only (no model). Eval computes it from a cached answer cut at a token count, the server from the
tokens so far. In both, a value counts once its closing quote is there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

# "key": "value" with both strings closed (escapes allowed); the value is group 2
_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def string_values(text: str) -> dict[str, str]:
    """The string values of the ``"key": "value"`` pairs complete in ``text`` (a whole or partial JSON answer)."""
    return {_unescape(key): _unescape(value) for key, value in _PAIR.findall(text)}


def _unescape(raw: str) -> str:
    try:
        return json.loads(f'"{raw}"')
    except ValueError:
        return raw


def _folded(text: str) -> str:
    return " ".join(text.casefold().split())


def grounding_signals(values: Iterable[str], query: str) -> dict[str, float]:
    """``ungrounded_values``: how many of ``values`` (non-empty strings) do not occur in ``query``, ignoring case
    and spacing."""
    folded_values = [folded for folded in map(_folded, values) if folded]
    if not folded_values:  # a free answer, or no value closed yet: the query is not even read
        return {"ungrounded_values": 0.0}
    folded_query = _folded(query)
    return {"ungrounded_values": float(sum(1 for value in folded_values if value not in folded_query))}


def complete_by(fields: Sequence[str | None], count: int | None) -> set[str] | None:
    """The keys whose value tokens all lie before a later token within the first ``count`` tokens (their closing
    quote seen); None for the whole answer."""
    if count is None or count >= len(fields):
        return None
    last: dict[str, int] = {}
    for index, field in enumerate(fields):
        if field:
            last[field] = index
    return {key for key, index in last.items() if index + 1 < count}


def answer_grounding(answer_text: str, fields: Sequence[str | None], count: int | None, query: str) -> dict[str, float]:
    """``grounding_signals`` of a cached whole answer as it stood after its first ``count`` tokens."""
    values = string_values(answer_text)
    done = complete_by(fields, count)
    return grounding_signals((value for key, value in values.items() if done is None or key in done), query)
