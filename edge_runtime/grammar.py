"""Grammars for structured output: JSON for ``json_object``, a JSON-schema-derived grammar for ``json_schema``.

llama.cpp constrains decoding with GBNF grammars; llama-cpp-python ships the JSON grammar and the converter
from JSON schema to GBNF, so the runtime uses those rather than writing its own.
"""

from __future__ import annotations

import json

from edge_runtime.errors import InvalidRequestError


def grammar_for_response_format(response_format: dict) -> str | None:
    """GBNF for an OpenAI ``response_format``; None for plain text."""
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
