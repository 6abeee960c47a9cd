"""Core ML target: export (torch definition -> stateful ML program), compress weights, validate in torch.

The ML program (iOS 18 / macOS 15) takes ``inputIds`` (1, T) int32 and ``causalMask`` (1, 1, T, P+T)
float16 and returns ``logits`` (1, T, vocab); the KV cache is two Core ML states, ``keyCache`` and
``valueCache`` (layers, 1, kv_heads, max_context, head_dim) float16, written in place at positions P..P+T.
The past length P is read from the mask's shape, so one function serves prefill and decode.

Presets compress weights with ``coremltools.optimize.coreml``: ``fp16`` (none), ``int8`` (linear symmetric,
per channel), ``int4`` (linear symmetric, blocks of 32), ``palettize4`` (4-bit k-means LUT per group of 16
channels: needs scikit-learn, and is slow to build on large vocabularies).

Core ML predicts only on macOS, so validation here is a weight-level simulation: the compressed weights are
read back from the saved .mlpackage, decompressed, and run in the torch definition (float32 activations);
the manifest says so (``GATE_METHOD = "weight-simulation"``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from converters.errors import ExportError, MissingDependencyError, UnknownPresetError
from converters.source import SourceModel

TARGET = "coreml"
PRESETS = ("fp16", "int8", "int4", "palettize4")
DEFAULT_PRESETS = ("int8", "int4")
GATE_METHOD = "weight-simulation"
GATE_NOTE = ("Core ML predicts only on macOS: compressed weights were read back from the .mlpackage, "
             "decompressed and run in the torch definition with float32 activations")
PACKAGE = "model.mlpackage"
DEFAULT_MAX_CONTEXT = 512
WEIGHT_THRESHOLD = 2048  # weights with fewer elements stay float16


def build(source: SourceModel, preset: str, out_dir: Path, work_dir: Path,
          max_context: int = DEFAULT_MAX_CONTEXT) -> tuple[Path, list[str]]:
    if preset not in PRESETS:
        raise UnknownPresetError(f"unknown coreml preset {preset!r}; known: {', '.join(PRESETS)}")
    ct = _import_coremltools()
    base = work_dir / "coreml-fp16" / PACKAGE
    if not base.exists():
        export(source, base, min(max_context, source.config.context_length))
    out_dir.mkdir(parents=True, exist_ok=True)
    model = compress(ct.models.MLModel(str(base), skip_model_load=True), preset)
    model.save(str(out_dir / PACKAGE))
    shutil.copyfile(source.tokenizer_json, out_dir / "tokenizer.json")
    metadata = {"format": TARGET, "max_context": min(max_context, source.config.context_length),
                **source.edge_metadata()}
    (out_dir / "edge_model.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return out_dir, [GATE_NOTE]


# --- export -----------------------------------------------------------------------------------------------

def stateful_wrapper(decoder, max_context: int):
    """The decoder with its KV cache as fp16 buffers, which ct.convert turns into Core ML states."""
    import torch

    config = decoder.config

    class StaticCache:
        def __init__(self, keys, values, start, end) -> None:
            self.keys, self.values, self.start, self.end = keys, values, start, end

        def update(self, layer, k, v):
            self.keys[layer:layer + 1, :, :, self.start:self.end, :] = k.to(self.keys.dtype).unsqueeze(0)
            self.values[layer:layer + 1, :, :, self.start:self.end, :] = v.to(self.values.dtype).unsqueeze(0)
            return (self.keys[layer, :, :, :self.end, :].to(k.dtype),
                    self.values[layer, :, :, :self.end, :].to(v.dtype))

    class StatefulDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = decoder
            shape = (config.num_layers, 1, config.num_kv_heads, max_context, config.head_dim)
            self.register_buffer("keyCache", torch.zeros(shape, dtype=torch.float16))
            self.register_buffer("valueCache", torch.zeros(shape, dtype=torch.float16))

        def forward(self, input_ids, causal_mask):
            end = causal_mask.shape[-1]
            start = end - input_ids.shape[1]
            cache = StaticCache(self.keyCache, self.valueCache, start, end)
            return self.decoder(input_ids, cache, start, causal_mask.float())

    return StatefulDecoder().eval()


def export(source: SourceModel, path: Path, max_context: int) -> Path:
    """An fp16 ML program with a stateful KV cache, saved at ``path`` (a .mlpackage)."""
    import numpy as np
    import torch

    ct = _import_coremltools()
    config = source.config
    wrapper = stateful_wrapper(source.reference_model(), max_context)
    sample = (torch.zeros((1, 2), dtype=torch.int32), torch.zeros((1, 1, 2, 5), dtype=torch.float16))
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, sample, check_trace=False)
    query = ct.RangeDim(lower_bound=1, upper_bound=max_context, default=1)
    end = ct.RangeDim(lower_bound=1, upper_bound=max_context, default=1)
    cache_shape = (config.num_layers, 1, config.num_kv_heads, max_context, config.head_dim)
    try:
        model = ct.convert(
            traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
            inputs=[ct.TensorType(name="inputIds", shape=(1, query), dtype=np.int32),
                    ct.TensorType(name="causalMask", shape=(1, 1, query, end), dtype=np.float16)],
            outputs=[ct.TensorType(name="logits", dtype=np.float16)],
            states=[ct.StateType(wrapped_type=ct.TensorType(shape=cache_shape, dtype=np.float16), name=name)
                    for name in ("keyCache", "valueCache")],
            compute_precision=ct.precision.FLOAT16, skip_model_load=True)
    except Exception as exc:  # coremltools raises many unrelated types
        raise ExportError(f"coremltools could not convert the decoder: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


# --- quantize ---------------------------------------------------------------------------------------------

def compression_config(preset: str):
    """The coremltools OptimizationConfig of a preset, or None for ``fp16``."""
    from coremltools.optimize import coreml as cto

    if preset == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=WEIGHT_THRESHOLD)
    elif preset == "int4":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                         block_size=32, weight_threshold=WEIGHT_THRESHOLD)
    elif preset == "palettize4":
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=16,
                                    weight_threshold=WEIGHT_THRESHOLD)
    else:
        return None
    return cto.OptimizationConfig(global_config=op)


def compress(model, preset: str):
    from coremltools.optimize import coreml as cto

    config = compression_config(preset)
    if config is None:
        return model
    try:
        if preset == "palettize4":
            return cto.palettize_weights(model, config)
        return cto.linear_quantize_weights(model, config)
    except ModuleNotFoundError as exc:  # k-means palettization needs scikit-learn
        raise MissingDependencyError(exc.name or "scikit-learn") from exc
    except Exception as exc:  # coremltools raises many unrelated types
        raise ExportError(f"coremltools could not compress weights to {preset}: {exc}") from exc


# --- validate ---------------------------------------------------------------------------------------------

def saved_weights(package: Path) -> dict:
    """Every weight constant of a saved .mlpackage, decompressed to float32 numpy, by MIL op name."""
    from converters.coreml_weights import read_program_weights

    return read_program_weights(package)


def simulated_model(package: Path, source: SourceModel):
    """The torch definition with the build's (decompressed) weights in place of the source's."""
    from converters.coreml_weights import match_to_parameters

    from converters.model import Decoder

    weights = match_to_parameters(saved_weights(package), source.weights())
    return Decoder.from_weights(source.config, weights)


def scorer(entry: Path, source: SourceModel):
    from converters.gate import TorchScorer

    return TorchScorer(simulated_model(Path(entry) / PACKAGE, source))


def _import_coremltools():
    try:
        import coremltools
    except ImportError as exc:
        raise MissingDependencyError("coremltools") from exc
    return coremltools
