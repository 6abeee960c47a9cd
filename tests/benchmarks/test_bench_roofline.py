"""Roofline arithmetic: bytes read per decoded token, the bandwidth limit, and the measured share of it."""

from __future__ import annotations

import json

import pytest

from benchmarks import roofline


def test_tied_embeddings_are_read_in_full_untied_ones_are_not():
    tied = {"token_embd.weight": 100, "blk.0.attn_q.weight": 10}
    untied = {**tied, "output.weight": 50}
    assert roofline.gguf_weights_read_per_token(tied) == 110
    assert roofline.gguf_weights_read_per_token(untied) == 60


def test_bytes_per_token_adds_kv_for_every_earlier_position():
    traffic = roofline.DecodeTraffic(weights_bytes=1_000, kv_bytes_per_position=10, context_tokens=30)
    assert traffic.bytes_per_token == 1_300


def test_limit_and_share():
    result = roofline.roofline(roofline.DecodeTraffic(250_000_000, 0, 0), 20e9, 40.0)
    assert result.limit_tokens_per_s == pytest.approx(80.0)
    assert result.share_of_limit == pytest.approx(0.5)
    assert roofline.roofline(roofline.DecodeTraffic(0, 0, 0), 20e9, 40.0).share_of_limit == 0.0


def test_onnx_kv_from_build_metadata(tmp_path):
    config = {"num_layers": 2, "num_kv_heads": 1, "head_dim": 16}
    (tmp_path / "edge_model.json").write_text(json.dumps({"config": config}))
    assert roofline.onnx_kv_bytes_per_position(config) == 2 * 2 * 1 * 16 * 4
    traffic = roofline.decode_traffic("onnx", tmp_path, 5_000, 10)
    assert traffic.bytes_per_token == 5_000 + 256 * 10
    assert roofline.decode_traffic("coreml", tmp_path, 5_000, 10) is None


def test_bundled_gguf_reads_about_its_whole_file_per_token(bundled_path):
    traffic = roofline.gguf_traffic(bundled_path, context_tokens=100)
    size = bundled_path.stat().st_size
    assert 0.9 * size < traffic.weights_bytes <= size  # Gemma ties embeddings: the table is the output matrix
    assert 0 < traffic.kv_bytes_per_position < 100_000


def test_copy_bandwidth_is_plausible():
    bandwidth = roofline.measure_copy_bandwidth(8 * 1024 * 1024, repeats=2, threads=2)
    assert 1e8 < bandwidth < 1e13
