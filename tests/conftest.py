"""Shared fixtures: the bundled model (assembled once per cache) and one runtime loaded on it per session."""

from __future__ import annotations

import pytest

from edge_runtime.caps import Caps, LoadSettings


@pytest.fixture(scope="session")
def bundled_path():
    from edge_runtime.models import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def runtime(bundled_path):
    from edge_runtime.runtime import Runtime

    with Runtime.load(bundled_path, caps=Caps(), settings=LoadSettings(n_ctx=2048)) as loaded:
        yield loaded
