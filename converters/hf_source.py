"""Reads a Hugging Face model folder (config.json, *.safetensors, tokenizer.json) into a ``SourceModel``.

Handles ``model_type`` llama, gemma3_text, and gemma3 (the text half of the multimodal checkpoint), with
config.json written by transformers 4.x (``rope_theta``, ``rope_local_base_freq``, ``sliding_window_pattern``)
or 5.x (``rope_parameters`` per layer type, ``layer_types``). Only plain rope is supported: a rope scaling
type other than "default" raises ``UnsupportedModelError`` rather than converting into a subtly wrong model.
"""

from __future__ import annotations

import json
from pathlib import Path

from converters.errors import SourceError, UnsupportedModelError
from converters.model_config import ModelConfig
from converters.source import SourceModel, TokenizerInfo, sha256_of

MODEL_TYPES = {"llama": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}
WEIGHT_PREFIXES = ("model.language_model.", "language_model.model.", "model.", "language_model.")


def load_hf_folder(folder: Path) -> SourceModel:
    raw = _read_json(folder / "config.json")
    config = config_from_hf(raw)
    tokenizer_json = folder / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise SourceError(f"{folder}: no tokenizer.json (a fast tokenizer file is required)")
    return SourceModel(kind="hf", path=folder, config=config, tokenizer_json=tokenizer_json,
                       tokenizer_info=tokenizer_info(folder, raw), sha256=sha256_of(folder),
                       load_weights=lambda: load_safetensors(folder, config))


def config_from_hf(raw: dict) -> ModelConfig:
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UnsupportedModelError(f"model_type {model_type!r} is not supported; supported: "
                                    f"{', '.join(sorted(MODEL_TYPES))}")
    text = raw.get("text_config", raw) if model_type == "gemma3" else raw
    arch = MODEL_TYPES[model_type]
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    global_theta, local_theta = _rope_thetas(text)
    return ModelConfig(
        arch=arch, vocab_size=text["vocab_size"], hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"], num_layers=text["num_hidden_layers"], num_heads=heads,
        num_kv_heads=text.get("num_key_value_heads") or heads, head_dim=head_dim,
        rms_norm_eps=text.get("rms_norm_eps", 1e-6), rope_theta=global_theta, rope_local_theta=local_theta,
        sliding_window=text.get("sliding_window") if arch == "gemma3" else None,
        layer_types=_layer_types(text, arch), context_length=text.get("max_position_embeddings", 2048),
        tie_embeddings=bool(raw.get("tie_word_embeddings", text.get("tie_word_embeddings", arch == "gemma3"))),
        query_pre_attn_scalar=text.get("query_pre_attn_scalar"))


def _rope_thetas(text: dict) -> tuple[float, float]:
    params = text.get("rope_parameters") or {}
    if "full_attention" in params:  # transformers 5.x, per layer type
        full, sliding = params["full_attention"], params.get("sliding_attention", params["full_attention"])
        _check_plain_rope(full), _check_plain_rope(sliding)
        return float(full["rope_theta"]), float(sliding["rope_theta"])
    _check_plain_rope(params or text.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", text.get("rope_theta", 10_000.0)))
    return theta, float(text.get("rope_local_base_freq", theta))


def _check_plain_rope(params: dict) -> None:
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise UnsupportedModelError(f"rope scaling {rope_type!r} is not supported; only plain rope")


def _layer_types(text: dict, arch: str) -> tuple[str, ...]:
    if arch != "gemma3":
        return ()
    if text.get("layer_types"):
        return tuple(text["layer_types"])
    pattern = text.get("sliding_window_pattern", 6)
    return tuple("full_attention" if (layer + 1) % pattern == 0 else "sliding_attention"
                 for layer in range(text["num_hidden_layers"]))


def tokenizer_info(folder: Path, raw_config: dict) -> TokenizerInfo:
    """Special ids from tokenizer_config.json / generation_config.json / config.json, in that order."""
    tok_config = _read_json(folder / "tokenizer_config.json", missing_ok=True)
    generation = _read_json(folder / "generation_config.json", missing_ok=True)
    vocab = _tokenizer_vocab(folder / "tokenizer.json")
    bos = _first_id(vocab, tok_config.get("bos_token"), generation.get("bos_token_id"),
                    raw_config.get("bos_token_id"))
    eos = generation.get("eos_token_id", raw_config.get("eos_token_id"))
    eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
    if not eos_ids and _first_id(vocab, tok_config.get("eos_token")) is not None:
        eos_ids = (_first_id(vocab, tok_config.get("eos_token")),)
    template = tok_config.get("chat_template") or _read_text(folder / "chat_template.jinja")
    add_bos = bool(tok_config.get("add_bos_token", bos is not None))
    return TokenizerInfo(bos, tuple(int(i) for i in eos_ids), add_bos, template)


def _tokenizer_vocab(path: Path) -> dict[str, int]:
    data = _read_json(path)
    vocab = dict(data.get("model", {}).get("vocab") or {})
    vocab.update({token["content"]: token["id"] for token in data.get("added_tokens", [])})
    return vocab


def _first_id(vocab: dict[str, int], *candidates) -> int | None:
    for candidate in candidates:
        if isinstance(candidate, dict):
            candidate = candidate.get("content")
        if isinstance(candidate, str) and candidate in vocab:
            return vocab[candidate]
        if isinstance(candidate, int):
            return candidate
    return None


def load_safetensors(folder: Path, config: ModelConfig) -> dict:
    """All weights as float32 tensors, prefixes stripped, a tied ``lm_head`` dropped."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SourceError(f"{folder}: no *.safetensors weights")
    weights = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            weights[_strip_prefix(name)] = tensor.float()
    if config.tie_embeddings:
        weights.pop("lm_head.weight", None)
    return {name: t for name, t in weights.items() if not name.startswith(("vision_tower", "multi_modal"))}


def _strip_prefix(name: str) -> str:
    for prefix in WEIGHT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _read_json(path: Path, missing_ok: bool = False) -> dict:
    if missing_ok and not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read JSON ({exc})") from exc


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None
