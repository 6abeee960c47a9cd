"""The text inside OpenAI chat message content, found one way for every part of the fallback.

A message's ``content`` is a string or a list of parts, of which ``{"type": "text", "text": "..."}`` carry
text (images and other parts carry none). The gateway estimates tokens from it, the redactor rewrites it,
the loopback test cloud answers from it. The runtime core reads content with its own, stricter check
(``edge_runtime.chat.message_text`` refuses anything but text with the runtime's typed error); it cannot
import the fallback, which sits beside it.
"""

from __future__ import annotations

from typing import Any


def is_text_part(part: Any) -> bool:
    """True for a ``{"type": "text", "text": str}`` part of a message's content."""
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def text_parts(content: Any) -> list[str]:
    """The texts in a message's ``content``: the string itself, or each text part's text in order; [] for
    anything else (None, images only, a malformed value)."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if is_text_part(part)]
    return []
