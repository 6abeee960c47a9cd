"""Grammars for structured output: JSON for ``json_object``, a JSON-schema-derived grammar for ``json_schema``.

llama.cpp constrains decoding with GBNF grammars; llama-cpp-python ships the JSON grammar and the converter
from JSON schema to GBNF, so the runtime uses those rather than writing its own.
"""

from __future__ import annotations

import json
import re

from edge_runtime.errors import InvalidRequestError


def grammar_for_response_format(response_format: dict, *, leading_space: bool = False) -> str | None:
    """GBNF for an OpenAI ``response_format``; None for plain text.

    ``leading_space`` lets the document start with one space: after a completion cue such as ``JSON:`` a
    model's likeliest first token is `` {"``, and a grammar that forbids it forces an unlikely token that
    both lowers the answer's confidence and pulls the rest of the answer off the model's path."""
    grammar = _grammar(response_format)
    return with_leading_space(grammar) if grammar is not None and leading_space else grammar


def with_leading_space(grammar: str) -> str:
    """The same grammar with an optional space before its root."""
    body = re.sub(r"^root(\s*)::=", r"spaced-document\1::=", grammar, count=1, flags=re.MULTILINE)
    return f'{body.rstrip()}\nroot ::= " "? spaced-document\n'


def _grammar(response_format: dict) -> str | None:
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    kind = response_format.get("type", "text")
    if kind == "json_object":
        return JSON_GBNF
    if kind != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequestError("response_format.json_schema.schema must be a JSON schema object")
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises bare exceptions on schemas it cannot express
        raise InvalidRequestError(f"cannot build a grammar from the JSON schema: {exc}") from exc
