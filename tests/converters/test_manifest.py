"""manifest.json: the pydantic schema round-trips and rejects what does not fit."""

from __future__ import annotations

import json

import pytest

from converters.errors import ManifestError
from converters.manifest import Build, GateResult, GateThresholds, Manifest, SourceInfo, read_manifest


def make_build(target="gguf", preset="Q4_K_M", status="accepted", size=100, kl=0.01, top1=0.99) -> Build:
    gate = GateResult(top1_agreement=top1, mean_kl=kl, greedy_agreement=1.0, perplexity=10.0,
                      reference_perplexity=10.0, perplexity_ratio=1.0, method="runtime", prompts=8,
                      greedy_tokens=16, thresholds=GateThresholds())
    entry = f"{target}-{preset}/model.gguf" if target == "gguf" else f"{target}-{preset}"
    return Build(target=target, preset=preset, entry=entry, files=[entry], bytes=size, sha256={entry: "ab" * 32},
                 status=status, gate=gate, conversion_s=1.5)


def make_manifest(builds) -> Manifest:
    return Manifest(created_at="2026-01-01T00:00:00+00:00", tool_versions={"torch": "2.13.0"}, builds=builds,
                    source=SourceInfo(path="m.gguf", kind="gguf", arch="gemma3", sha256="cd" * 32))


def test_round_trip_through_disk(tmp_path):
    manifest = make_manifest([make_build(), make_build("onnx", "int8", "rejected")])
    path = manifest.write(tmp_path)
    assert path.name == "manifest.json"
    assert read_manifest(path) == manifest and read_manifest(tmp_path) == manifest


def test_unknown_fields_and_bad_status_are_refused(tmp_path):
    record = json.loads(make_manifest([make_build()]).model_dump_json())
    record["builds"][0]["status"] = "maybe"
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ManifestError, match="status"):
        read_manifest(tmp_path)
    record["builds"][0]["status"] = "accepted"
    record["surprise"] = 1
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ManifestError, match="surprise"):
        read_manifest(tmp_path)


def test_missing_manifest_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "nope.json")
