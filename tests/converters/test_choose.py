"""choose_build: accepted only, usable formats only, fits the budget, gguf > onnx > coreml, then quality."""

from __future__ import annotations

import pytest

from converters.choose import choose_build
from converters.errors import NoBuildFitsError
from tests.converters.test_manifest import make_build, make_manifest

ALL = {"gguf", "onnx", "coreml"}


@pytest.fixture
def manifest_path(tmp_path):
    builds = [make_build("gguf", "Q8_0", size=300, kl=0.001, top1=1.0),
              make_build("gguf", "Q4_K_M", size=150, kl=0.02, top1=0.97),
              make_build("gguf", "Q5_K_M", size=200, kl=0.005, top1=0.99, status="rejected"),
              make_build("onnx", "int8", size=120, kl=0.01, top1=0.98),
              make_build("onnx", "fp32", size=1000, kl=0.0, top1=1.0),
              make_build("coreml", "int4", size=60, kl=0.05, top1=0.95)]
    return make_manifest(builds).write(tmp_path)


def test_prefers_gguf_and_the_best_quality_that_fits(manifest_path):
    assert choose_build(manifest_path, ALL, 10_000) == ("gguf", manifest_path.parent / "gguf-Q8_0/model.gguf")
    assert choose_build(manifest_path, ALL, 200) == ("gguf", manifest_path.parent / "gguf-Q4_K_M/model.gguf")


def test_rejected_builds_are_never_chosen(manifest_path):
    fmt, path = choose_build(manifest_path, ALL, 250)  # Q5_K_M (200 B, better than Q4_K_M) was rejected
    assert path.parent.name == "gguf-Q4_K_M"


def test_falls_back_to_other_formats_by_budget_and_availability(manifest_path):
    assert choose_build(manifest_path, ALL, 150)[1].name == "onnx-int8"
    assert choose_build(manifest_path, {"onnx"}, 10_000)[1].name == "onnx-fp32"
    assert choose_build(manifest_path, ALL, 100) == ("coreml", manifest_path.parent / "coreml-int4")


def test_nothing_fits_says_what_would(manifest_path):
    with pytest.raises(NoBuildFitsError, match="coreml int4, needs about 72"):
        choose_build(manifest_path, ALL, 10)
    with pytest.raises(NoBuildFitsError, match="formats available here: none"):
        choose_build(manifest_path, set(), 10_000)
