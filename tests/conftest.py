"""Shared fixtures: the bundled model (assembled once per cache) and one runtime loaded on it per session."""

from __future__ import annotations

import pytest

from edge_runtime.caps import Caps, LoadSettings


@pytest.fixture(scope="session", autouse=True)
def native_verdicts(tmp_path_factory):
    """Crash verdicts of this session's native configurations in a file of their own: the tests kill engines
    with SIGSEGV on purpose, and those verdicts must not reach the user's cache (later loads would step down)."""
    import os

    path = tmp_path_factory.mktemp("verdicts") / "native-verdicts.json"
    previous = os.environ.get("EDGE_NATIVE_VERDICTS")
    os.environ["EDGE_NATIVE_VERDICTS"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("EDGE_NATIVE_VERDICTS", None)
    else:
        os.environ["EDGE_NATIVE_VERDICTS"] = previous


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny seeded models and their builds (``tests/converters/conftest.py``), made once per session for the
    converter tests and the ONNX and Core ML backend tests alike; torch runs on one thread meanwhile."""
    import torch

    from tests.converters.conftest import TinyModels

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TinyModels(tmp_path_factory.mktemp("converters"))
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def bundled_path():
    from edge_runtime.models import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def runtime(bundled_path):
    from edge_runtime.runtime import Runtime

    with Runtime.load(bundled_path, caps=Caps(), settings=LoadSettings(n_ctx=2048)) as loaded:
        yield loaded
