"""What crosses the pipe between the engine worker and its client, besides plain values.

Errors travel as (module, class name, message, simple attributes) and are rebuilt as the same type on the
other side, so a ``PromptTooLongError`` raised in the worker is a ``PromptTooLongError`` for the caller. Only
classes under ``edge_runtime`` are rebuilt; anything else arrives as a ``BackendError`` naming the original.
"""

from __future__ import annotations

import importlib

from edge_runtime.errors import BackendError

_SIMPLE = (str, int, float, bool, type(None))


def encode_error(exc: BaseException) -> tuple[str, str, str, dict]:
    attributes = {name: value for name, value in vars(exc).items() if isinstance(value, _SIMPLE)}
    return type(exc).__module__, type(exc).__qualname__, str(exc), attributes


def decode_error(encoded: tuple[str, str, str, dict]) -> Exception:
    module_name, class_name, message, attributes = encoded
    cls = _edge_class(module_name, class_name)
    if cls is None:
        return BackendError(f"the engine failed: {class_name}: {message}")
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    for name, value in attributes.items():
        setattr(error, name, value)
    return error


def _edge_class(module_name: str, class_name: str) -> type | None:
    if not module_name.startswith("edge_runtime."):
        return None
    try:
        cls = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else None
