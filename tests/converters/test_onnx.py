"""ONNX target: the portable graph's interface, quantized operator types and sizes, and the gate on each preset.

GenAI-folder specifics (genai_config.json, onnxruntime-genai interop) are in ``test_onnx_genai.py``.
"""

from __future__ import annotations

import pytest

from converters import onnx as onnx_target
from converters.gate import evaluate
from converters.manifest import GateThresholds


def _graph(build_dir):
    import onnx

    return onnx.load(str(build_dir / "model.onnx"), load_external_data=False)


def _op_types(build_dir) -> set[str]:
    return {node.op_type for node in _graph(build_dir).graph.node}


def test_graph_has_explicit_kv_cache_inputs_and_outputs(tiny):
    graph = _graph(tiny.build("llama", "onnx", "portable-fp32")).graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    outputs = [o.name for o in graph.output]
    assert inputs["input_ids"] == [1, "sequence"]
    assert inputs["past_key_values.1.value"] == [1, 2, "past_sequence", 16]
    assert outputs == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]


def test_build_folder_ships_weights_tokenizer_and_metadata(tiny):
    build_dir = tiny.build("gemma3", "onnx", "portable-fp32")
    names = {p.name for p in build_dir.iterdir()}
    assert names == {"model.onnx", "model.onnx.data", "tokenizer.json", "edge_model.json"}
    assert (build_dir / "model.onnx.data").stat().st_size > 4 * (build_dir / "model.onnx").stat().st_size


def _weight_bytes(build_dir) -> int:
    return (build_dir / "model.onnx.data").stat().st_size


def test_int8_and_int4_use_block_quantized_matmuls_and_shrink(tiny):
    fp32, int8, int4 = (tiny.build("llama", "onnx", p) for p in ("fp32", "int8", "int4"))
    assert "MatMulNBits" in _op_types(int8) and "MatMulNBits" in _op_types(int4)
    assert "MatMulNBits" not in _op_types(fp32)
    assert all("GroupQueryAttention" in _op_types(build) for build in (fp32, int8, int4))
    assert _weight_bytes(int4) < _weight_bytes(int8) < 0.5 * _weight_bytes(fp32)


def test_portable_builds_use_standard_onnx_operators_only(tiny):
    fp32, dynamic = tiny.build("llama", "onnx", "portable-fp32"), tiny.build("llama", "onnx", "int8-dynamic")
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _op_types(dynamic)
    assert _weight_bytes(dynamic) * 3.5 < _weight_bytes(fp32)
    for build in (fp32, dynamic):
        assert {node.domain for node in _graph(build).graph.node} <= {"", "ai.onnx"}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_fp32_build_is_exact_and_int8_close(tiny, arch):
    source, gate_set = tiny.source(arch), tiny.gate_set(arch)
    fp32 = evaluate(onnx_target.scorer(tiny.build(arch, "onnx", "fp32"), source), gate_set, GateThresholds())
    int8 = evaluate(onnx_target.scorer(tiny.build(arch, "onnx", "int8"), source), gate_set, GateThresholds())
    assert fp32.failures == [] and fp32.top1_agreement == 1.0 and fp32.greedy_agreement == 1.0
    assert fp32.mean_kl < 1e-6
    assert 1e-7 < int8.mean_kl < 0.01 and int8.failures == []


def test_unknown_preset_is_refused(tiny, tmp_path):
    from converters.errors import UnknownPresetError

    with pytest.raises(UnknownPresetError, match="int4, int8, fp32, portable-fp32, int8-dynamic"):
        onnx_target.build(tiny.source("llama"), "fp8", tmp_path, tmp_path)
