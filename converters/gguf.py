"""GGUF target: export (HF folder -> f16 GGUF with the ``gguf`` package), quantize (llama.cpp), validate.

Export writes llama / gemma3 metadata, the tokenizer (from tokenizer.json: SentencePiece-style BPE with byte
fallback becomes ``tokenizer.ggml.model = "llama"`` with merge-rank scores; byte-level BPE becomes "gpt2"
with merges) and every weight through the ``converters.gguf_layout`` table. A GGUF source skips export and
is re-quantized directly (``allow_requantize``: quality cannot exceed the source's quantization).

Validation runs the build in llama.cpp (``LlamaCppScorer``) on the gate's token ids.
"""

from __future__ import annotations

import ctypes
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from converters.errors import ExportError, MissingDependencyError, UnknownPresetError, UnsupportedModelError
from converters.gguf_layout import gguf_name, to_gguf_values
from converters.source import SourceModel

TARGET = "gguf"
PRESETS = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
DEFAULT_PRESETS = ("Q8_0", "Q4_K_M")
GATE_METHOD = "runtime"
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_BYTE = 1, 2, 3, 4, 6


def build(source: SourceModel, preset: str, out_dir: Path, work_dir: Path) -> tuple[Path, list[str]]:
    """Writes ``out_dir/model.gguf`` for ``preset``; returns it and notes for the manifest."""
    if preset not in PRESETS:
        raise UnknownPresetError(f"unknown gguf preset {preset!r}; known: {', '.join(PRESETS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    entry = out_dir / "model.gguf"
    if source.kind == "gguf":
        quantize(source.path, entry, preset, allow_requantize=True)
        return entry, [f"re-quantized from {source.path.name}: quality is bounded by the source's"]
    f16 = work_dir / "source-f16.gguf"
    if not f16.is_file():
        export(source, f16)
    if preset == "F16":
        shutil.copyfile(f16, entry)
    else:
        quantize(f16, entry, preset)
    return entry, []


# --- export -----------------------------------------------------------------------------------------------

def export(source: SourceModel, path: Path) -> Path:
    """An f16 GGUF (1-D tensors stay f32) of a HF source."""
    gguf = _import_gguf()
    config = source.config
    check_llama_cpp_compatible(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=config.arch)
    _write_hparams(writer, config, gguf)
    write_tokenizer(writer, source)
    for name, tensor in source.weights().items():
        values = to_gguf_values(config, name, tensor.numpy())
        writer.add_tensor(gguf_name(config, name), values.astype(np.float16 if values.ndim > 1 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def check_llama_cpp_compatible(config) -> None:
    """llama.cpp hard-codes Gemma 3's sliding pattern (5 local : 1 global) and local rope theta (10,000)."""
    if not config.is_gemma:
        return
    pattern = tuple("full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(config.num_layers))
    if config.sliding_window and (config.layer_types != pattern or config.rope_local_theta != 10_000.0):
        raise UnsupportedModelError("llama.cpp assumes gemma3 layers follow '5 sliding, 1 global' with local "
                                    f"rope theta 10000; this model has {config.layer_types}, "
                                    f"theta {config.rope_local_theta}")
    if config.attention_scale != config.head_dim ** -0.5:
        raise UnsupportedModelError("llama.cpp scales gemma3 attention by 1/sqrt(head_dim); "
                                    f"query_pre_attn_scalar={config.query_pre_attn_scalar} differs")


def _write_hparams(writer, config, gguf) -> None:
    writer.add_name(f"edge-runtime {config.arch}")
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if config.arch == "llama":
        writer.add_rope_dimension_count(config.head_dim)
    if config.sliding_window:
        writer.add_sliding_window(config.sliding_window)


def write_tokenizer(writer, source: SourceModel) -> None:
    data = json.loads(source.tokenizer_json.read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise UnsupportedModelError(f"tokenizer model {model.get('type')!r}: only BPE tokenizers are exported")
    tokens, types = _token_table(data)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if model.get("byte_fallback"):
        writer.add_tokenizer_model("llama")
        writer.add_token_scores(_merge_rank_scores(tokens, model.get("merges", [])))
        writer.add_add_space_prefix(_adds_space_prefix(data))
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer_name(data))
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    _write_special_tokens(writer, source.tokenizer_info)


def _token_table(data: dict) -> tuple[list[str], list[int]]:
    vocab = dict(data["model"]["vocab"])
    added = {token["content"]: token for token in data.get("added_tokens", [])}
    vocab.update({content: token["id"] for content, token in added.items()})
    tokens = [""] * (max(vocab.values()) + 1)
    for text, index in vocab.items():
        tokens[index] = text
    unk = data["model"].get("unk_token")
    return tokens, [_token_type(text, added, unk) for text in tokens]


def _token_type(text: str, added: dict, unk: str | None) -> int:
    if text == unk:
        return TOKEN_UNKNOWN
    if text in added:
        return TOKEN_CONTROL if added[text].get("special") else TOKEN_USER_DEFINED
    if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
        return TOKEN_BYTE
    return TOKEN_NORMAL


def _merge_rank_scores(tokens: list[str], merges: list) -> list[float]:
    """SentencePiece-style scores: a token made by merge number r scores -r, so llama.cpp merges in order."""
    rank = {}
    for index, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, index)
    return [-float(rank.get(token, 0)) for token in tokens]


def _adds_space_prefix(data: dict) -> bool:
    text = _json_text(data.get("normalizer")) + _json_text(data.get("pre_tokenizer"))
    return '"Prepend"' in text or '"prepend_scheme": "always"' in text or '"prepend_scheme": "first"' in text


def _pre_tokenizer_name(data: dict) -> str:
    text = _json_text(data.get("pre_tokenizer"))
    if "\\\\p{N}{1,3}" in text or "\\p{N}{1,3}" in text:
        return "llama-bpe"
    return "gpt-2" if '"ByteLevel"' in text else "default"


def _json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False) if value is not None else ""


def _write_special_tokens(writer, info) -> None:
    if info.bos_token_id is not None:
        writer.add_bos_token_id(info.bos_token_id)
    if info.eos_token_ids:
        writer.add_eos_token_id(info.eos_token_ids[0])
    writer.add_add_bos_token(info.add_bos)
    writer.add_add_eos_token(False)
    if info.chat_template:
        writer.add_chat_template(info.chat_template)


# --- quantize ---------------------------------------------------------------------------------------------

def quantize(src: Path, dst: Path, preset: str, allow_requantize: bool = False) -> Path:
    llama_cpp = _import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{preset}")
    params.allow_requantize = allow_requantize
    params.nthread = 0
    code = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if code != 0 or not dst.is_file():
        raise ExportError(f"llama.cpp could not quantize {src.name} to {preset} (code {code})")
    return dst


# --- validate ---------------------------------------------------------------------------------------------

class LlamaCppScorer:
    """A GGUF build run by llama.cpp, with every position's logits kept for the gate."""

    def __init__(self, path: Path, n_ctx: int = 512) -> None:
        _import_llama_cpp()
        from edge_runtime.backends.llamacpp_native import safe_high_level_llama

        self.llm = safe_high_level_llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                                         n_threads=2, seed=0)

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(token_ids))
        return np.array(self.llm.scores[: len(token_ids)], dtype=np.float32)

    def greedy(self, token_ids: Sequence[int], count: int) -> list[int]:
        self.llm.reset()
        self.llm.eval(list(token_ids))
        out = []
        out = [int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))]
        while len(out) < count:
            self.llm.eval([out[-1]])
            out.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
        return out

    def close(self) -> None:
        self.llm.close()


def scorer(entry: Path, source: SourceModel) -> LlamaCppScorer:
    return LlamaCppScorer(entry, n_ctx=min(512, source.config.context_length))


def _import_gguf():
    try:
        import gguf
    except ImportError as exc:
        raise MissingDependencyError("gguf") from exc
    return gguf


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError("llama-cpp-python") from exc
    return llama_cpp
