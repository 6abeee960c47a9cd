"""Reads a GGUF file into a ``SourceModel``: config from metadata, weights dequantized with the ``gguf`` package.

Weights map back to ``converters.model`` names through ``converters.gguf_layout`` (the same table the writer
uses; it lists the permuted and shifted weights). Every shape is asserted against the config before the
torch model sees it. The tokenizer.json the ONNX and Core ML builds ship is produced by transformers 5.x's
GGUF tokenizer converter (4.x tokenized GGUF Gemma 3 wrongly, which is also why optimum-onnx, pinned to
transformers<4.58, is not used anywhere here).

llama.cpp hard-codes two Gemma 3 facts that GGUF does not store: sliding-window layers follow the pattern
"5 sliding, 1 global" and the sliding layers' rope theta is 10,000. The config built here says the same.
"""

from __future__ import annotations

from pathlib import Path

from converters.errors import MissingDependencyError, SourceError, UnsupportedModelError
from converters.gguf_layout import from_gguf_values, gguf_name
from converters.model_config import ModelConfig
from converters.source import SourceModel, TokenizerInfo, sha256_of

GEMMA3_SWA_PATTERN = 6
GEMMA3_LOCAL_ROPE_THETA = 10_000.0


def _reader(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise MissingDependencyError("gguf") from exc
    try:
        return GGUFReader(str(path))
    except Exception as exc:  # the gguf package raises ValueError, struct.error, ...
        raise SourceError(f"{path}: not a readable GGUF file ({exc})") from exc


def read_metadata(reader) -> dict:
    """Every metadata field as a plain Python value (token lists included)."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def load_gguf_file(path: Path, work_dir: Path) -> SourceModel:
    reader = _reader(path)
    meta = read_metadata(reader)
    config = config_from_gguf(meta, tied="output.weight" not in {tensor.name for tensor in reader.tensors})
    tokenizer_json = export_tokenizer(path, Path(work_dir) / "source-tokenizer")
    return SourceModel(kind="gguf", path=path, config=config, tokenizer_json=tokenizer_json,
                       tokenizer_info=tokenizer_info_from_gguf(meta), sha256=sha256_of(path),
                       load_weights=lambda: dequantized_weights(_reader(path), config))


def config_from_gguf(meta: dict, tied: bool = True) -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch not in ("llama", "gemma3"):
        raise UnsupportedModelError(f"GGUF architecture {arch!r} is not supported; supported: gemma3, llama")
    key = lambda name, default=None: meta.get(f"{arch}.{name}", default)  # noqa: E731
    heads, hidden, layers = key("attention.head_count"), key("embedding_length"), key("block_count")
    head_dim = key("attention.key_length") or hidden // heads
    window = key("attention.sliding_window") if arch == "gemma3" else None
    return ModelConfig(
        arch=arch, vocab_size=len(meta["tokenizer.ggml.tokens"]), hidden_size=hidden,
        intermediate_size=key("feed_forward_length"), num_layers=layers, num_heads=heads,
        num_kv_heads=key("attention.head_count_kv") or heads, head_dim=head_dim,
        rms_norm_eps=key("attention.layer_norm_rms_epsilon", 1e-6), rope_theta=key("rope.freq_base", 10_000.0),
        rope_local_theta=GEMMA3_LOCAL_ROPE_THETA if arch == "gemma3" else key("rope.freq_base", 10_000.0),
        sliding_window=window, layer_types=_gemma3_layer_types(layers) if window else (),
        context_length=key("context_length", 2048), tie_embeddings=tied, query_pre_attn_scalar=None)


def _gemma3_layer_types(layers: int) -> tuple[str, ...]:
    return tuple("full_attention" if (layer + 1) % GEMMA3_SWA_PATTERN == 0 else "sliding_attention"
                 for layer in range(layers))


def tokenizer_info_from_gguf(meta: dict) -> TokenizerInfo:
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos_ids = [meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta]
    return TokenizerInfo(bos_token_id=bos, eos_token_ids=tuple(dict.fromkeys(eos_ids)),
                         add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", bos is not None)),
                         chat_template=meta.get("tokenizer.chat_template"))


def dequantized_weights(reader, config: ModelConfig) -> dict:
    """float32 torch tensors by model name, shapes asserted; ``output.weight`` unties the embedding."""
    import torch
    from gguf.quants import dequantize

    by_gguf_name = {tensor.name: tensor for tensor in reader.tensors}
    weights = {}
    for name, shape in expected_shapes(config).items():
        tensor = by_gguf_name.get(gguf_name(config, name))
        if tensor is None:
            raise SourceError(f"GGUF has no tensor {gguf_name(config, name)!r} (for {name})")
        values = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        weights[name] = torch.from_numpy(from_gguf_values(config, name, values.astype("float32")).copy())
    return weights


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of ``converters.model.Decoder`` and its (out, in) shape."""
    import torch

    from converters.model import Decoder

    with torch.device("meta"):
        model = Decoder(config)
    return {name: tuple(param.shape) for name, param in model.state_dict().items()}


def export_tokenizer(gguf_path: Path, out_dir: Path) -> Path:
    """tokenizer.json built from the GGUF vocabulary by transformers 5.x; returns its path."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("transformers") from exc
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    path = out_dir / "tokenizer.json"
    if not path.is_file():
        raise SourceError(f"{gguf_path}: transformers wrote no tokenizer.json for this vocabulary")
    return path
