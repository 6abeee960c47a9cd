"""Is the local answer usable at all? Parse and schema checks that escalate an answer regardless of confidence.

An empty answer, text that does not parse as the JSON the caller asked for, or JSON that fails the caller's
schema is invalid; the policy sends such answers to the cloud with the reason given here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Validity:
    ok: bool
    reason: str = ""


VALID = Validity(True)


def _schema_of(response_format: dict) -> dict | None:
    spec = response_format.get("json_schema") or {}
    return spec.get("schema") if isinstance(spec, dict) else None


def check_json(text: str, schema: dict | None) -> Validity:
    try:
        document = json.loads(text)
    except ValueError as exc:
        return Validity(False, f"not valid JSON: {exc.msg} at character {exc.pos}")
    if schema is None:
        return VALID if isinstance(document, dict) else Validity(False, "JSON is not an object")
    import jsonschema

    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        return Validity(False, f"fails the JSON schema at {where}: {exc.message}")
    except jsonschema.SchemaError as exc:
        return Validity(False, f"the given JSON schema is itself invalid: {exc.message}")
    return VALID


def check_output(text: str, response_format: dict | None = None) -> Validity:
    """Empty text is invalid; with ``response_format`` ``json_object``/``json_schema`` the text must comply."""
    if not text.strip():
        return Validity(False, "empty answer")
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return check_json(text, None)
    if kind == "json_schema":
        return check_json(text, _schema_of(response_format))
    return VALID
