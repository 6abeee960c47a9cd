"""Turns chat messages into one prompt: the model's own Jinja template when the file carries one, else a plain one.

The plain template (used for base models such as the bundled Gemma 3 270M, and when a template fails to
render) is documented in README.md::

    System: {system}\n\nUser: {user}\n\nAssistant: {assistant}\n\n ... Assistant:

Templates run in Jinja's immutable sandbox: a template comes from a model file, which is input, not code.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence

from edge_runtime.errors import InvalidRequestError

log = logging.getLogger("edge_runtime.chat")

ROLES = ("system", "user", "assistant", "tool", "developer")
PLAIN_ROLE_NAMES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant",
                    "tool": "Tool"}


def message_text(content: object) -> str:
    """The text of a message's content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if all(isinstance(text, str) for text in texts):
            return "".join(texts)
    raise InvalidRequestError("message content must be a string or a list of text parts")


def normalise_messages(messages: object) -> list[dict[str, str]]:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {role, content} objects")
    normalised = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequestError(f"messages[{index}] needs a role, one of {', '.join(ROLES)}")
        normalised.append({"role": message["role"], "content": message_text(message.get("content") or "")})
    return normalised


def render_plain(messages: list[dict[str, str]]) -> str:
    turns = [f"{PLAIN_ROLE_NAMES[message['role']]}: {message['content']}" for message in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


@functools.lru_cache(maxsize=32)
def _warn_broken_template(template_id: str, error: str) -> None:
    """Says once per template that the model's chat template is broken and the plain layout is used."""
    log.warning("the model's chat template %s failed (%s); using the plain chat layout instead", template_id, error)


def render_template(template: str, messages: list[dict[str, str]], bos_token: str, eos_token: str) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InvalidRequestError(f"chat template refused the messages: {message}")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    rendered = environment.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token)
    return rendered[len(bos_token):] if bos_token and rendered.startswith(bos_token) else rendered


def render_chat(messages: object, template: str | None, bos_token: str = "", eos_token: str = "") -> str:
    """The prompt for ``messages``; the beginning-of-sequence token is left to the tokenizer."""
    normalised = normalise_messages(messages)
    if not template:
        return render_plain(normalised)
    try:
        return render_template(template, normalised, bos_token, eos_token)
    except InvalidRequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken template in a model file falls back to the plain one
        _warn_broken_template(hashlib.sha256(template.encode()).hexdigest()[:12], f"{type(exc).__name__}: {exc}")
        return render_plain(normalised)
