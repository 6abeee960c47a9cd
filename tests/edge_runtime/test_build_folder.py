"""The build-folder contract on the runtime's side: a manifest is read and chosen from without the converters,
a build folder is checked for what its format needs, and the one sha256 hasher."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from edge_runtime.build_folder import COREML_LAYOUT, choose_build, onnx_layout, resolve_build
from edge_runtime.checksums import file_sha256, sha256_of
from edge_runtime.errors import ManifestError, ModelFileError, NoBuildFitsError
from edge_runtime.manifest import read_manifest
from edge_runtime.models import resolve_model
from tests.converters.test_manifest import make_build, make_manifest


@pytest.fixture
def manifest_path(tmp_path):
    builds = [make_build("gguf", "Q4_K_M", size=150), make_build("onnx", "int8", size=120),
              make_build("coreml", "int4", size=60, status="rejected")]
    return make_manifest(builds).write(tmp_path)


def test_choose_build_picks_by_format_budget_and_status(manifest_path):
    folder = manifest_path.parent
    assert choose_build(manifest_path, {"gguf", "onnx"}, 10_000) == ("gguf", folder / "gguf-Q4_K_M/model.gguf")
    assert choose_build(manifest_path, {"gguf", "onnx"}, 170) == ("onnx", folder / "onnx-int8")
    with pytest.raises(NoBuildFitsError, match="onnx int8, needs about 144") as none_fit:
        choose_build(manifest_path, {"gguf", "onnx", "coreml"}, 100)  # the Core ML build fits but was rejected
    assert isinstance(none_fit.value, ModelFileError) and none_fit.value.path == str(manifest_path)


def test_a_manifest_that_fits_nothing_is_a_model_file_error_for_the_runtime(manifest_path):
    from edge_runtime.caps import Caps

    with pytest.raises(NoBuildFitsError, match="formats available here: coreml"):
        resolve_model(manifest_path, formats=["coreml"])
    with pytest.raises(NoBuildFitsError, match="memory budget of 100 bytes"):
        resolve_model(manifest_path, caps=Caps(memory_budget_bytes=100))


def test_unreadable_and_invalid_manifests(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path / "missing.json")
    broken = tmp_path / "manifest.json"
    broken.write_text(json.dumps({"schema_version": 1, "surprise": True}))
    with pytest.raises(ManifestError, match="not a valid manifest") as invalid:
        read_manifest(tmp_path)
    assert isinstance(invalid.value, ModelFileError) and invalid.value.path == str(broken)


def test_converter_errors_are_translated_at_their_boundary(tmp_path, manifest_path):
    from converters.choose import choose_build as converters_choose
    from converters.errors import ConversionError
    from converters.manifest import read_manifest as converters_read

    with pytest.raises(ConversionError, match="cannot read manifest"):
        converters_read(tmp_path / "missing.json")
    with pytest.raises(ConversionError, match="needs about"):
        converters_choose(manifest_path, {"onnx"}, 10)


def _onnx_folder(folder, *, genai: bool = False, beside=("tokenizer.json", "edge_model.json")):
    folder.mkdir()
    name = "decoder.onnx" if genai else "model.onnx"
    (folder / name).write_bytes(b"onnx")
    if genai:
        (folder / "genai_config.json").write_text(json.dumps({"model": {"decoder": {"filename": name}}}))
    for file in beside:
        (folder / file).write_text("{}")
    return folder


def test_onnx_layouts_name_the_entry_and_what_is_missing(tmp_path):
    explicit = _onnx_folder(tmp_path / "explicit")
    assert resolve_build(explicit, onnx_layout(explicit)) == (explicit, explicit / "model.onnx")
    assert resolve_build(explicit / "model.onnx", onnx_layout(explicit)) == (explicit, explicit / "model.onnx")
    genai = _onnx_folder(tmp_path / "genai", genai=True, beside=("tokenizer.json",))
    assert resolve_build(genai, onnx_layout(genai)) == (genai, genai / "decoder.onnx")
    lacking = _onnx_folder(tmp_path / "lacking", beside=("tokenizer.json",))
    with pytest.raises(ModelFileError, match="edge_model.json: missing from the ONNX build folder"):
        resolve_build(lacking, onnx_layout(lacking))
    (explicit / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="file is empty"):
        resolve_build(explicit, onnx_layout(explicit))
    with pytest.raises(ModelFileError, match="no such file or folder"):
        resolve_build(tmp_path / "nowhere", onnx_layout(tmp_path / "nowhere"))


def test_core_ml_layout_needs_a_package_with_its_manifest(tmp_path):
    folder = tmp_path / "coreml"
    (folder / "model.mlpackage").mkdir(parents=True)
    with pytest.raises(ModelFileError, match="not a Core ML package"):
        resolve_build(folder, COREML_LAYOUT)
    (folder / "model.mlpackage" / "Manifest.json").write_text("{}")
    with pytest.raises(ModelFileError, match="tokenizer.json: missing from the Core ML build folder"):
        resolve_build(folder, COREML_LAYOUT)
    for name in ("tokenizer.json", "edge_model.json"):
        (folder / name).write_text("{}")
    assert resolve_build(folder / "model.mlpackage", COREML_LAYOUT) == (folder, folder / "model.mlpackage")


def test_one_hasher_for_files_and_folders(tmp_path):
    data = b"x" * (3 << 20) + b"tail"
    (tmp_path / "a.bin").write_bytes(data)
    assert file_sha256(tmp_path / "a.bin") == sha256_of(tmp_path / "a.bin") == hashlib.sha256(data).hexdigest()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"b")
    expected = hashlib.sha256()
    for name, content in (("a.bin", data), ("sub/b.txt", b"b")):
        expected.update(f"{name}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    assert sha256_of(tmp_path) == expected.hexdigest()


def test_reading_a_manifest_does_not_import_the_converters():
    code = ("import sys, edge_runtime.models, edge_runtime.build_folder; "
            "print(any(name.split('.')[0] == 'converters' for name in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
