"""Reads the weights back out of a saved .mlpackage, decompressed, and matches them to torch parameters.

This is what makes the Core ML quality gate possible on Linux: the ML program cannot run here, but its
weight constants can be read. The saved program is loaded into coremltools' MIL representation; every
``const`` is taken as is and every ``constexpr_*`` op (block-wise shift/scale for int8/int4, LUT for
palettization) is materialised by coremltools itself, so the decompression is Core ML's, not a re-derivation.

The torch frontend names a parameter's constant after its module path (``decoder.layers.0.mlp.up_proj.weight``
becomes ``decoder_layers_0_mlp_up_proj_weight_to_fp16`` plus a compression suffix); ``match_to_parameters``
relies on that and checks every shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.errors import ExportError

WRAPPER_PREFIX = "decoder_"
FP16_SUFFIX = "_to_fp16"


def load_program(package: Path):
    """The MIL program of a saved .mlpackage (no Core ML runtime needed)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    spec = ct.utils.load_spec(str(package))
    weights_dir = Path(package) / "Data" / "com.apple.CoreML" / "weights"
    return load_milproto(model_spec=spec, specification_version=spec.specificationVersion,
                         file_weights_dir=str(weights_dir))


def read_program_weights(package: Path) -> dict[str, np.ndarray]:
    """Weight constants by base name (compression suffix removed), as float32 numpy arrays."""
    weights = {}
    for op in load_program(package).functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            value = op.materialized_val_inference()
        elif op.op_type == "const" and FP16_SUFFIX in op.name:
            value = op.val.val
        else:
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.ndim > 0:
            weights[base_name(op.name)] = value.astype(np.float32)
    return weights


def base_name(op_name: str) -> str:
    return op_name.split(FP16_SUFFIX)[0] + FP16_SUFFIX if FP16_SUFFIX in op_name else op_name


def compressed_op_types(package: Path) -> dict[str, int]:
    """How many ops of each ``constexpr_*`` type the program holds (spec checks in tests and reports)."""
    counts: dict[str, int] = {}
    for op in load_program(package).functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return counts


def match_to_parameters(program_weights: dict[str, np.ndarray], source_weights: dict) -> dict:
    """``source_weights`` with each parameter replaced by the build's value; shapes asserted."""
    import torch

    matched = {}
    for name, tensor in source_weights.items():
        key = WRAPPER_PREFIX + name.replace(".", "_") + FP16_SUFFIX
        value = program_weights.get(key)
        if value is None:  # folded into another op by the converter: simulate the fp16 cast only
            matched[name] = tensor.half().float()
            continue
        if tuple(value.shape) != tuple(tensor.shape):
            raise ExportError(f"Core ML weight {key} has shape {value.shape}, torch expects {tuple(tensor.shape)}")
        matched[name] = torch.from_numpy(value.copy())
    return matched
