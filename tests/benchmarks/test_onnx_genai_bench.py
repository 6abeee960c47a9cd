"""benchmarks.onnx_genai: the ratios the issue's targets are read from, and the table, from fixed numbers."""

from __future__ import annotations

import pytest

from benchmarks.onnx_genai import ratios, table

ROWS = {
    "onnx int4": {"decode_tokens_per_s": 30.0, "prefill_tokens_per_s": 300.0, "load_s": 1.0, "peak_rss_bytes": 7e8,
                  "native_genai_decode_tokens_per_s": 31.0},
    "onnx int8": {"decode_tokens_per_s": 20.0, "prefill_tokens_per_s": 250.0, "load_s": 1.0, "peak_rss_bytes": 8e8},
    "onnx fp32": {"decode_tokens_per_s": 10.0, "prefill_tokens_per_s": 200.0, "load_s": 2.0, "peak_rss_bytes": 2e9},
    "llama.cpp Q4_K_M": {"decode_tokens_per_s": 40.0, "prefill_tokens_per_s": 400.0, "load_s": 0.5,
                         "peak_rss_bytes": 4e8},
}


def test_ratios_compare_each_quantized_build_with_fp32_and_llama_cpp():
    assert ratios(ROWS) == pytest.approx({"int4_vs_fp32": 3.0, "int4_vs_llama_cpp_q4_k_m": 0.75,
                                          "int8_vs_fp32": 2.0, "int8_vs_llama_cpp_q4_k_m": 0.5})
    assert ratios({"onnx int8": ROWS["onnx int8"]}) == {}


def test_table_has_one_row_per_build():
    lines = table(ROWS).splitlines()
    assert len(lines) == 2 + len(ROWS)
    assert lines[2] == "| onnx int4 | 30.0 | 300.0 | 1.00 | 700 | 31.0 |"
    assert lines[-1].endswith("| - |")
