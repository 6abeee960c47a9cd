"""ONNX target: export, quantize, validate, in two layouts.

``int4``, ``int8``, ``fp32`` (the default presets): ONNX Runtime GenAI model folders made by onnxruntime-genai's
model builder (``converters.onnx_genai``): fused ``GroupQueryAttention``, weight-only ``MatMulNBits`` (symmetric
blocks of 32, accuracy level 4), ``genai_config.json``. ``onnxruntime_genai.Model(folder)`` loads them, so the
GenAI SDKs and apps built on them run our builds; ``fp32`` is the reference the quantized presets are read
against. The builder handles every architecture this project converts (llama, gemma3).

``portable-fp32``, ``int8-dynamic``: our own exporter (torch definition -> TorchScript export), kept for what
the builder cannot make: a graph of standard ONNX operators only (no ``com.microsoft`` contrib ops, so any
ONNX runtime can run it, not only onnxruntime), with explicit KV-cache I/O that ``edge_runtime.backends.onnx``
drives without onnxruntime-genai. ``int8-dynamic`` is onnxruntime's dynamic quantization (``MatMulInteger``,
per-tensor activation scales): on Gemma 3 270M its mean KL was 0.27 and the gate rejects it.

The explicit-KV graph: ``input_ids`` (1, T), ``past_key_values.{i}.key|value`` (1, kv_heads, P, head_dim) ->
``logits`` (1, T, vocab), ``present.{i}.key|value``; ``dynamo=False`` keeps sizes read from shapes dynamic,
so one graph serves prefill (P = 0) and decode (T = 1). Weights go to ``model.onnx.data``.
optimum-onnx is deliberately not used: it pins transformers<4.58, which tokenizes GGUF Gemma 3 wrongly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from converters.errors import ExportError, MissingDependencyError, UnknownPresetError
from converters.source import SourceModel

TARGET = "onnx"
GENAI_PRESETS = ("int4", "int8", "fp32")
PORTABLE_PRESETS = ("portable-fp32", "int8-dynamic")
PRESETS = (*GENAI_PRESETS, *PORTABLE_PRESETS)
DEFAULT_PRESETS = GENAI_PRESETS
GATE_METHOD = "runtime"
OPSET = 18  # the block quantizer upgrades graphs to opset 21; 18 keeps ReduceMean valid there
MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"


def build(source: SourceModel, preset: str, out_dir: Path, work_dir: Path) -> tuple[Path, list[str]]:
    """Writes the build folder for ``preset`` (model, tokenizer, metadata); returns it and notes."""
    if preset not in PRESETS:
        raise UnknownPresetError(f"unknown onnx preset {preset!r}; known: {', '.join(PRESETS)}")
    if preset in GENAI_PRESETS:
        from converters import onnx_genai

        return onnx_genai.build(source, preset, out_dir, work_dir)
    fp32 = work_dir / "onnx-fp32" / MODEL_FILE
    if not fp32.is_file():
        export(source, fp32)
    out_dir.mkdir(parents=True, exist_ok=True)
    quantize(fp32, out_dir / MODEL_FILE, preset)
    write_sidecar_files(source, out_dir)
    return out_dir, ["portable layout: standard ONNX operators, explicit KV-cache I/O (not a GenAI folder)"]


def write_sidecar_files(source: SourceModel, out_dir: Path) -> None:
    shutil.copyfile(source.tokenizer_json, out_dir / "tokenizer.json")
    metadata = {"format": TARGET, **source.edge_metadata()}
    (out_dir / "edge_model.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")


# --- export -----------------------------------------------------------------------------------------------

def export(source: SourceModel, path: Path) -> Path:
    import torch

    config = source.config
    wrapper = kv_wrapper(source.reference_model())
    names = io_names(config.num_layers)
    past = torch.zeros(1, config.num_kv_heads, 2, config.head_dim)
    sample = (torch.tensor([[1, 2, 3]], dtype=torch.long), *([past] * (2 * config.num_layers)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        try:
            torch.onnx.export(wrapper, sample, str(path), input_names=names["inputs"],
                              output_names=names["outputs"], dynamic_axes=names["dynamic_axes"],
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)
        except Exception as exc:  # torch.onnx raises many unrelated types
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    return _move_weights_to_data_file(path)


def io_names(num_layers: int) -> dict:
    pasts = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    presents = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    axes = {"input_ids": {1: "sequence"}, "logits": {1: "sequence"}}
    axes.update({name: {2: "past_sequence"} for name in pasts})
    axes.update({name: {2: "total_sequence"} for name in presents})
    return {"inputs": ["input_ids", *pasts], "outputs": ["logits", *presents], "dynamic_axes": axes}


def kv_wrapper(decoder):
    """The decoder with flat tensor arguments for the exporter: (input_ids, k0, v0, k1, v1, ...)."""
    import torch

    from converters.model import ConcatCache

    class KVWrapper(torch.nn.Module):
        def __init__(self, decoder) -> None:
            super().__init__()
            self.decoder = decoder

        def forward(self, input_ids, *past):
            cache = ConcatCache(list(past[0::2]), list(past[1::2]))
            logits = self.decoder(input_ids, cache, cache.past_length())
            presents = [t for pair in zip(cache.present_keys, cache.present_values) for t in pair]
            return (logits, *presents)

    return KVWrapper(decoder)


def _move_weights_to_data_file(path: Path) -> Path:
    onnx = _import("onnx")
    model = onnx.load(str(path))
    for stale in (path, path.with_name(DATA_FILE)):
        stale.unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)
    return path


# --- quantize ---------------------------------------------------------------------------------------------

def quantize(fp32_path: Path, out_path: Path, preset: str) -> Path:
    for stale in (out_path, out_path.with_name(DATA_FILE)):
        stale.unlink(missing_ok=True)
    if preset == "portable-fp32":
        shutil.copyfile(fp32_path, out_path)
        shutil.copyfile(fp32_path.with_name(DATA_FILE), out_path.with_name(DATA_FILE))
    else:
        _quantize_dynamic_int8(fp32_path, out_path)
    return out_path


def _quantize_dynamic_int8(fp32_path: Path, out_path: Path) -> None:
    _import("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"], use_external_data_format=True,
                         extra_options={"MatMulConstBOnly": True})
    except Exception as exc:  # onnxruntime.quantization raises plain exceptions
        raise ExportError(f"onnxruntime int8 quantization failed: {exc}") from exc
    _normalise_data_file(out_path)


def _normalise_data_file(path: Path) -> None:
    """Re-saves with weights in ``model.onnx.data`` whatever name the quantizer chose.

    Runs before the sidecar files are written: every other file in the folder is the quantizer's output.
    """
    onnx = _import("onnx")
    model = onnx.load(str(path))
    for leftover in path.parent.iterdir():
        if leftover.is_file():
            leftover.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)


# --- validate ---------------------------------------------------------------------------------------------

class OnnxScorer:
    """A portable ONNX build run by onnxruntime through the runtime's own session class."""

    def __init__(self, build_dir: Path) -> None:
        import numpy as np

        from edge_runtime.backends.onnx import OnnxDecoderSession

        self.np = np
        self.session = OnnxDecoderSession(Path(build_dir) / MODEL_FILE, n_threads=2)

    def logits(self, token_ids):
        logits, _ = self.session.forward(list(token_ids), self.session.empty_past())
        return logits

    def greedy(self, token_ids, count: int) -> list[int]:
        logits, past = self.session.forward(list(token_ids), self.session.empty_past())
        out = [int(self.np.argmax(logits[-1]))]
        while len(out) < count:
            logits, past = self.session.forward([out[-1]], past)
            out.append(int(self.np.argmax(logits[-1])))
        return out

    def close(self) -> None:
        self.session.close()


def scorer(entry: Path, source: SourceModel):
    """onnxruntime-genai for a GenAI folder, onnxruntime for the portable layout."""
    if (Path(entry) / "genai_config.json").is_file():
        from converters.onnx_genai import GenaiScorer

        return GenaiScorer(entry)
    return OnnxScorer(entry)


def _import(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(name) from exc
