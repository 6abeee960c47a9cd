"""The one shape every finder returns (``Match``) and the helpers finders share to pick exact spans.

Finders propose spans generously (any separator, any case) and let a check rule decide; these helpers
trim a proposal to the longest prefix that passes, or find the value that follows a label such as
"passport no.", without the finder re-implementing either.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Match:
    """One span to replace; ``key`` is the normalised value that picks the placeholder."""

    start: int
    end: int
    key: str


_TOKEN = re.compile(r"[A-Za-z0-9]+")
_DIGIT = re.compile(r"\d")


def has_digit(text: str) -> bool:
    """Every kind but secrets, e-mails, MAC addresses and names holds a digit: texts without one skip them."""
    return _DIGIT.search(text) is not None
_SEPARATORS = re.compile(r"[\s.\-/]")


def compact(value: str) -> str:
    """``value`` without spaces, dots, dashes or slashes, upper-cased: the form check rules take."""
    return _SEPARATORS.sub("", value).upper()


def longest_valid_prefix(text: str, m: re.Match[str], is_valid: Callable[[str], bool]) -> int | None:
    """End of the longest token-aligned prefix of ``m`` that passes ``is_valid``, or None."""
    ends = [m.start() + t.end() for t in _TOKEN.finditer(m.group())]
    for end in reversed(ends):
        if is_valid(text[m.start():end]):
            return end
    return None


def checked(pattern: re.Pattern[str], is_valid: Callable[[str], bool], text: str,
            group: str | int = 0) -> Iterator[Match]:
    """Every match of ``pattern`` whose ``group``, compacted, passes ``is_valid``."""
    for m in pattern.finditer(text):
        value = compact(m.group(group))
        if is_valid(value):
            yield Match(m.start(group), m.end(group), value)


def trie_pattern(words: list[str]) -> str:
    """A regex matching any of ``words`` (the longest where several fit), with shared prefixes factored out."""
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _trie_node(trie)


def _trie_node(node: dict) -> str:
    branches = [re.escape(ch) + _trie_node(child) for ch, child in sorted(node.items()) if ch]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:  # a word may end here: the rest is optional (greedy, so longer words win)
        return f"(?:{body})?" if len(branches) == 1 else body + "?"
    return body


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


class Keywords:
    """Whole-word occurrences of literal phrases, case-insensitively, found fast.

    A regex alternation of hundreds of phrases under ``(?i)`` tries every phrase at every position; the
    phrases folded into a trie (``c(?:ustomer|lient)``) and run case-sensitively over the lower-cased text
    cost a few comparisons per position, which makes label-anchored finders many times faster. Phrases
    with spaces also match ``_``, ``-`` or nothing in their place (``steuer_id``, ``Steuer-ID``).
    """

    def __init__(self, phrases: list[str]) -> None:
        self.phrases = tuple(phrases)
        variants = {v for p in phrases for v in (p, p.replace(" ", "_"), p.replace(" ", "-"), p.replace(" ", ""))}
        self.pattern = re.compile(trie_pattern(sorted(variants)))
        self._slow = re.compile(self.pattern.pattern, re.IGNORECASE)

    def finditer(self, text: str) -> Iterator[tuple[int, int, str]]:
        """``(start, end, lower-cased phrase)`` for each occurrence with no letter or digit on either side."""
        lowered = text.lower()
        if len(lowered) != len(text):  # a few characters change length when lower-cased: take the slow path
            lowered, pattern = text, self._slow
        else:
            pattern = self.pattern
        for m in pattern.finditer(lowered):
            start, end = m.span()
            if (start and _is_word_char(lowered[start - 1]) and _is_word_char(lowered[start]))\
                    or (end < len(lowered) and _is_word_char(lowered[end]) and _is_word_char(lowered[end - 1])):
                continue
            yield start, end, m.group().lower()
