"""The bundled Gemma 3 270M Q4_K_M through every target (slow: several minutes on 2 cores)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundled_source(bundled_path, tmp_path_factory):
    from converters.source import load_source

    return load_source(bundled_path, tmp_path_factory.mktemp("bundled-work"))


def test_torch_definition_matches_llama_cpp_greedy(bundled_source, bundled_path):
    from converters.gate import TorchScorer
    from converters.gguf import LlamaCppScorer
    from edge_runtime.backends.json_tokenizer import JsonTokenizer

    tokenizer = JsonTokenizer(bundled_source.tokenizer_json, bundled_source.edge_metadata())
    llama = LlamaCppScorer(bundled_path)
    ids = tokenizer.tokenize("The capital of France is")
    assert ids == llama.llm.tokenize(b"The capital of France is", add_bos=True, special=False)
    assert TorchScorer(bundled_source.reference_model()).greedy(ids, 8) == llama.greedy(ids, 8)
    llama.close()


def test_bundled_model_through_every_target(bundled_path, tmp_path):
    from converters import ConvertOptions, choose_build, convert

    presets = {"gguf": ["Q4_K_M"], "onnx": ["int8"], "coreml": ["int8"]}
    manifest = convert(bundled_path, tmp_path, ConvertOptions(targets=list(presets), presets=presets, progress=False))
    by_target = {b.target: b for b in manifest.builds}
    assert {t: b.status for t, b in by_target.items()} == {"gguf": "accepted", "onnx": "accepted",
                                                           "coreml": "accepted"}
    assert by_target["coreml"].gate.method == "weight-simulation"
    assert by_target["onnx"].bytes < 1.2e9 and by_target["coreml"].bytes < 500e6  # fp32: 1.78 GB
    assert by_target["gguf"].gate.top1_agreement > 0.9
    assert choose_build(tmp_path / "manifest.json", {"gguf", "onnx", "coreml"}, 4 << 30) == \
        ("gguf", tmp_path / by_target["gguf"].entry)
