"""The one reading of OpenAI message content the gateway, the redactor and the loopback cloud share."""

from __future__ import annotations

import pytest

from fallback.message_text import is_text_part, text_parts


@pytest.mark.parametrize(("content", "texts"), [
    ("plain", ["plain"]),
    ([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}],
     ["a", "b"]),
    ([{"type": "text", "text": 3}, "loose string", {"text": "no type"}], []),
    (None, []),
    ({"type": "text", "text": "a dict, not a list"}, []),
])
def test_text_parts(content, texts):
    assert text_parts(content) == texts


def test_only_text_parts_with_string_text_count():
    assert is_text_part({"type": "text", "text": ""}) and not is_text_part({"type": "text"})


def test_the_gateway_and_the_loopback_cloud_read_content_alike():
    from benchmarks.loopback_cloud import message_text
    from fallback.cloud_types import messages_text

    content = [{"type": "text", "text": "Capital"}, {"type": "image_url"}, {"type": "text", "text": "of France?"}]
    assert message_text(content) == "Capital of France?"
    assert messages_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]) == \
        "Be brief.\nCapital\nof France?"
