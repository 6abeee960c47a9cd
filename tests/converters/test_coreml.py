"""Core ML target on Linux: the spec (inputs, outputs, states, deployment target), compressed op and weight
types, sizes, and the weight-level simulation the gate runs."""

from __future__ import annotations

import numpy as np
import pytest

from converters import coreml as coreml_target
from converters.coreml_weights import compressed_op_types, load_program, read_program_weights
from converters.gate import evaluate
from converters.manifest import GateThresholds

MAX_CONTEXT = 64


@pytest.fixture(scope="module")
def packages(tiny):
    built = {}
    for preset in ("fp16", "int8", "int4"):
        entry, _ = coreml_target.build(tiny.source("gemma3"), preset, tiny.root / "builds" / f"coreml-{preset}",
                                       tiny.root / "work-gemma3", max_context=MAX_CONTEXT)
        built[preset] = entry / coreml_target.PACKAGE
    return built


def _size(package) -> int:
    return sum(p.stat().st_size for p in package.rglob("*") if p.is_file())


def test_spec_is_a_stateful_ios18_program(packages):
    import coremltools as ct

    spec = ct.utils.load_spec(str(packages["fp16"]))
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 9  # iOS 18 / macOS 15
    assert [i.name for i in spec.description.input] == ["inputIds", "causalMask"]
    assert [o.name for o in spec.description.output] == ["logits"]
    states = {s.name: list(s.type.stateType.arrayType.shape) for s in spec.description.state}
    assert states == {"keyCache": [2, 1, 1, MAX_CONTEXT, 16], "valueCache": [2, 1, 1, MAX_CONTEXT, 16]}


def test_program_reads_and_writes_the_state(packages):
    op_types = {op.op_type for op in load_program(packages["fp16"]).functions["main"].operations}
    assert {"read_state", "coreml_update_state"} <= op_types and "gather" in op_types


@pytest.mark.parametrize("preset,bits", [("int8", "int8"), ("int4", "int4")])
def test_compressed_weights_have_the_preset_dtype(packages, preset, bits):
    assert compressed_op_types(packages[preset]).get("constexpr_blockwise_shift_scale", 0) >= 9
    assert compressed_op_types(packages["fp16"]) == {}
    from coremltools.converters.mil.mil import types

    program = load_program(packages[preset])
    data_types = {types.builtin_to_string(op.inputs["data"].dtype) for op in program.functions["main"].operations
                  if op.op_type == "constexpr_blockwise_shift_scale"}
    assert data_types == {bits}


def test_compression_shrinks_the_package(packages):
    assert _size(packages["int8"]) < 0.75 * _size(packages["fp16"])
    assert _size(packages["int4"]) < _size(packages["int8"])


def test_decompressed_weights_are_quantized_copies_of_the_source(tiny, packages):
    source_up = tiny.source("gemma3").weights()["layers.0.mlp.up_proj.weight"].numpy()
    key = "decoder_layers_0_mlp_up_proj_weight_to_fp16"
    for preset, levels in (("int8", 256), ("int4", 16)):
        weight = read_program_weights(packages[preset])[key]
        assert weight.shape == source_up.shape
        assert 0 < np.abs(weight - source_up).max() < 0.2 * np.abs(source_up).max()
        first_block = weight[0, :32]
        assert len(np.unique(first_block)) <= levels


def test_gate_simulation_orders_presets_by_precision(tiny, packages):
    results = {}
    for preset, package in packages.items():
        results[preset] = evaluate(coreml_target.scorer(package.parent, tiny.source("gemma3")),
                                   tiny.gate_set("gemma3"), GateThresholds(), "weight-simulation")
    assert results["fp16"].mean_kl < results["int8"].mean_kl < results["int4"].mean_kl
    assert results["int8"].failures == [] and results["int8"].top1_agreement == 1.0


def test_build_folder_ships_tokenizer_and_metadata(packages):
    import json

    folder = packages["int8"].parent
    metadata = json.loads((folder / "edge_model.json").read_text())
    assert (folder / "tokenizer.json").is_file() and metadata["max_context"] == MAX_CONTEXT
    assert metadata["format"] == "coreml" and metadata["config"]["arch"] == "gemma3"
