"""A broken chat template in a model file falls back to the plain layout, and says so once in the log."""

from __future__ import annotations

import logging

from edge_runtime.chat import render_chat, render_plain


def test_a_broken_template_falls_back_and_is_logged_once(caplog):
    broken = "{% for message in messages %}{{ message['content'] | no_such_filter }}{% endfor %}"
    messages = [{"role": "user", "content": "Hi"}]
    with caplog.at_level(logging.WARNING, logger="edge_runtime.chat"):
        first = render_chat(messages, broken)
        second = render_chat(messages, broken)
    assert first == second == render_plain([{"role": "user", "content": "Hi"}])
    warnings = [record for record in caplog.records if "chat template" in record.getMessage()]
    assert len(warnings) == 1 and "plain chat layout" in warnings[0].getMessage()
