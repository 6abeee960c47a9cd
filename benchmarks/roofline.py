"""How close decoding comes to the memory-bandwidth limit of this machine.

Decoding one token reads every weight once (batch size 1 is memory-bound) plus the KV cache of every earlier
position, so ``bandwidth / bytes_per_token`` is an upper bound on decode tokens/s. The bandwidth is measured
here with a large numpy copy on as many threads as the decode uses (bytes read + bytes written per
second; the best of a few repeats). Bytes per
token come from the GGUF header: all tensor bytes, minus the token-embedding table when the model has a
separate output matrix (then only one embedding row is read per token), plus f16 K and V for every layer at
the average context position of the measured decode. ONNX builds use their files' size and the shapes in
``edge_model.json`` (fp32 cache). The share reported is ``measured / limit``: near 1 means decode is
bandwidth-bound and fast as it can be; far below means compute, threads or overhead hold it back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

COPY_BYTES = 256 * 1024 * 1024
TOKEN_EMBEDDING = "token_embd.weight"
OUTPUT_MATRIX = "output.weight"


def measure_copy_bandwidth(size_bytes: int = COPY_BYTES, repeats: int = 5, threads: int = 1) -> float:
    """Bytes moved per second (read + write) by the fastest of ``repeats`` copies of ``size_bytes``, split
    over ``threads`` threads (numpy releases the GIL while copying; one core rarely saturates memory)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    source = np.ones(size_bytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    chunks = list(zip(np.array_split(target, threads), np.array_split(source, threads)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        def copy_all() -> float:
            started = time.perf_counter()
            list(pool.map(lambda pair: np.copyto(*pair), chunks))
            return time.perf_counter() - started

        copy_all()  # fault the pages in before timing
        best = min(copy_all() for _ in range(repeats))
    return 2 * source.nbytes / best


@dataclass
class DecodeTraffic:
    """Bytes one decoded token reads: weights once, plus K and V per earlier position."""

    weights_bytes: int
    kv_bytes_per_position: int
    context_tokens: int

    @property
    def bytes_per_token(self) -> int:
        return self.weights_bytes + self.kv_bytes_per_position * self.context_tokens


def roofline(traffic: DecodeTraffic, bandwidth_bytes_per_s: float, measured_tokens_per_s: float):
    """The bandwidth limit on decode tokens/s and the measured speed's share of it, as the report records it."""
    from benchmarks.bench_report import RooflineResult

    limit = bandwidth_bytes_per_s / traffic.bytes_per_token if traffic.bytes_per_token else 0.0
    return RooflineResult(
        bandwidth_bytes_per_s=bandwidth_bytes_per_s, weights_bytes_per_token=traffic.weights_bytes,
        kv_bytes_per_token=traffic.kv_bytes_per_position * traffic.context_tokens,
        bytes_per_token=traffic.bytes_per_token, context_tokens=traffic.context_tokens, limit_tokens_per_s=limit,
        measured_tokens_per_s=measured_tokens_per_s, share_of_limit=measured_tokens_per_s / limit if limit else 0.0)


def gguf_weights_read_per_token(tensor_bytes: dict[str, int]) -> int:
    """All tensors, except that a token-embedding table next to a separate output matrix is read one row at a
    time (negligible); with tied embeddings the table is the output matrix and is read in full."""
    total = sum(tensor_bytes.values())
    if OUTPUT_MATRIX in tensor_bytes and TOKEN_EMBEDDING in tensor_bytes:
        total -= tensor_bytes[TOKEN_EMBEDDING]
    return total


def gguf_traffic(path: Path, context_tokens: int) -> DecodeTraffic:
    from edge_runtime.gguf_file import read_header
    from edge_runtime.plan import kv_cache_bytes

    header = read_header(path)
    weights = gguf_weights_read_per_token({tensor.name: tensor.nbytes for tensor in header.tensors})
    return DecodeTraffic(weights, kv_cache_bytes(header, 1), context_tokens)


def onnx_kv_bytes_per_position(config: dict, bytes_per_value: int = 4) -> int:
    """K and V for every layer from an ONNX build's ``edge_model.json`` config (fp32 cache by default)."""
    layers, kv_heads = int(config.get("num_layers", 0)), int(config.get("num_kv_heads", 0))
    head_dim = int(config.get("head_dim", 0))
    return 2 * layers * kv_heads * head_dim * bytes_per_value


def onnx_traffic(folder: Path, model_bytes: int, context_tokens: int) -> DecodeTraffic:
    try:
        config = json.loads((Path(folder) / "edge_model.json").read_text(encoding="utf-8")).get("config", {})
    except (OSError, ValueError):
        config = {}
    return DecodeTraffic(model_bytes, onnx_kv_bytes_per_position(config), context_tokens)


def decode_traffic(model_format: str, path: Path, model_bytes: int, context_tokens: int) -> DecodeTraffic | None:
    """Bytes per decoded token for a build, or None for formats without an estimate."""
    if model_format == "gguf":
        return gguf_traffic(path, context_tokens)
    if model_format == "onnx":
        return onnx_traffic(path if Path(path).is_dir() else Path(path).parent, model_bytes, context_tokens)
    return None
