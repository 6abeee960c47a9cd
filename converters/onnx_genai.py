"""ONNX builds as ONNX Runtime GenAI model folders, made by onnxruntime-genai's own model builder.

A folder holds ``genai_config.json``, ``model.onnx`` (+ ``model.onnx.data``: fused ``GroupQueryAttention``,
``SkipSimplifiedLayerNormalization``, 4/8-bit ``MatMulNBits``), the tokenizer files and our
``edge_model.json``. ``onnxruntime_genai.Model(folder)`` loads it, so Foundry Local, Windows ML, the VS Code
AI Toolkit and any app on the GenAI SDKs (Python, C#, C/C++, Java) run the same files we gate.

The builder reads a Hugging Face folder. We always give it one written from the ``SourceModel``
(``write_hf_intermediate``): the same float32 weights, config and tokenizer the gate's torch reference uses,
whether the source was a HF folder or a (quantized) GGUF file the builder cannot read itself. It is called as
a library (``parse_extra_options`` + ``create_model``), with its chatter sent to ``builder.log``.

One patch, measured: with transformers 5.x the Gemma 3 config holds ``rope_parameters`` per layer type, which
onnxruntime-genai 0.18's Gemma 3 builder does not read (``KeyError: 'rope_type'``, and it would fall back to
theta 10,000 for the global layers). ``_flatten_gemma3_rope`` gives it the 4.x attributes it expects
(``rope_theta``, ``rope_local_base_freq``); the fp32 build then matches the torch reference to 1e-5.

Importing the builder appends its folder to ``sys.path`` (its modules import each other as ``builders``,
``quantization``, ``loaders``); nothing in this project uses those names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from converters.errors import ExportError, MissingDependencyError
from converters.source import SourceModel

GENAI_CONFIG = "genai_config.json"
EXECUTION_PROVIDER = "cpu"  # the builder's target; the folder also runs on CUDA/DirectML/WebGPU (see README)
# preset -> (builder precision, extra options). Weight-only MatMulNBits, symmetric blocks of 32,
# accuracy level 4 (int8 activations per block: the fast CPU kernels). prune_lm_head computes logits for the
# last prompt token only, which is all generation needs (262k-token vocabulary: most of a prefill's work).
BUILDER_PRESETS = {
    "int4": ("int4", {"block_size": "32", "accuracy_level": "4"}),
    "int8": ("int8", {"block_size": "32", "accuracy_level": "4"}),
    "fp32": ("fp32", {}),
}
COMMON_OPTIONS = {"hf_token": "false", "prune_lm_head": "true"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
QUIET_LOGGERS = ("onnxruntime.quantization", "neural_compressor")
HF_ARCHITECTURES = {"llama": ("LlamaForCausalLM", "llama"), "gemma3": ("Gemma3ForCausalLM", "gemma3_text")}


def build(source: SourceModel, preset: str, out_dir: Path, work_dir: Path) -> tuple[Path, list[str]]:
    """Writes the GenAI folder for ``preset`` into ``out_dir``; returns it and notes for the manifest."""
    hf_folder = work_dir / "hf-intermediate"
    if not (hf_folder / "config.json").is_file():
        write_hf_intermediate(source, hf_folder)
    precision, options = BUILDER_PRESETS[preset]
    log = work_dir / f"builder-{preset}.log"
    run_builder(hf_folder, out_dir, precision, {**COMMON_OPTIONS, **options}, work_dir / "builder-cache", log)
    write_edge_metadata(source, out_dir)
    note = f"onnxruntime-genai {_genai_version()} model builder: {precision}, " + \
        ", ".join(f"{k}={v}" for k, v in {**COMMON_OPTIONS, **options}.items() if k != "hf_token")
    return out_dir, [note]


def write_edge_metadata(source: SourceModel, out_dir: Path) -> None:
    metadata = {"format": "onnx", "layout": "genai", **source.edge_metadata()}
    (out_dir / "edge_model.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")


# --- the Hugging Face intermediate -------------------------------------------------------------------------

def write_hf_intermediate(source: SourceModel, folder: Path) -> Path:
    """config.json, model.safetensors (float32) and tokenizer files of ``source``, as transformers 5 saves them."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(source), indent=2), encoding="utf-8")
    tensors = {(name if name == "lm_head.weight" else f"model.{name}"): tensor.contiguous()
               for name, tensor in source.weights().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (source.tokenizer_json.parent / name).is_file():
            shutil.copyfile(source.tokenizer_json.parent / name, folder / name)
    if not (folder / "tokenizer_config.json").is_file():
        (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(source)), encoding="utf-8")
    generation = {"bos_token_id": source.tokenizer_info.bos_token_id,
                  "eos_token_id": list(source.tokenizer_info.eos_token_ids)}
    (folder / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    return folder


def hf_config(source: SourceModel) -> dict:
    """A transformers 5.x config.json for ``source.config`` (llama or gemma3 text)."""
    cfg, info = source.config, source.tokenizer_info
    architecture, model_type = HF_ARCHITECTURES[cfg.arch]
    raw = {"architectures": [architecture], "model_type": model_type, "vocab_size": cfg.vocab_size,
           "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
           "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
           "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "rms_norm_eps": cfg.rms_norm_eps,
           "max_position_embeddings": cfg.context_length, "tie_word_embeddings": cfg.tie_embeddings,
           "bos_token_id": info.bos_token_id, "eos_token_id": list(info.eos_token_ids), "dtype": "float32"}
    if cfg.arch == "llama":
        return {**raw, "hidden_act": "silu", "rope_theta": cfg.rope_theta,
                "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta}}
    return {**raw, "hidden_activation": "gelu_pytorch_tanh", "sliding_window": cfg.sliding_window,
            "layer_types": list(cfg.layer_types) or ["full_attention"] * cfg.num_layers,
            "query_pre_attn_scalar": cfg.query_pre_attn_scalar or cfg.head_dim,
            "final_logit_softcapping": None, "attn_logit_softcapping": None,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                                "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_theta}}}


def _tokenizer_config(source: SourceModel) -> dict:
    from tokenizers import Tokenizer

    tokenizer, info = Tokenizer.from_file(str(source.tokenizer_json)), source.tokenizer_info
    text = lambda token_id: tokenizer.id_to_token(token_id) if token_id is not None else None  # noqa: E731
    eos = info.eos_token_ids[0] if info.eos_token_ids else None
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": text(info.bos_token_id),
            "eos_token": text(eos), "add_bos_token": info.add_bos, "chat_template": info.chat_template}


# --- the builder --------------------------------------------------------------------------------------------

def run_builder(hf_folder: Path, out_dir: Path, precision: str, options: dict[str, str], cache_dir: Path,
                log_path: Path) -> Path:
    """onnxruntime-genai's ``create_model`` on ``hf_folder``; its output (prints, tqdm, logs) goes to ``log_path``."""
    builder = _builder_module()
    shutil.rmtree(out_dir, ignore_errors=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log, _quiet(log):
        try:
            extra = builder.parse_extra_options(None, str(hf_folder), str(out_dir), precision, EXECUTION_PROVIDER,
                                                str(cache_dir), [f"{k}={v}" for k, v in options.items()])
            _flatten_gemma3_rope(extra["hf_details"]["hf_config"])
            builder.create_model(None, str(hf_folder), str(out_dir), precision, EXECUTION_PROVIDER,
                                 str(cache_dir), **extra)
        except Exception as exc:  # the builder raises bare Exception, ValueError, NotImplementedError, ...
            raise ExportError(f"onnxruntime-genai model builder failed ({precision}): {exc}; "
                              f"its log: {log_path}") from exc
    if not (out_dir / GENAI_CONFIG).is_file():
        raise ExportError(f"onnxruntime-genai model builder wrote no {GENAI_CONFIG}; its log: {log_path}")
    return out_dir


def _flatten_gemma3_rope(config) -> None:
    """Gemma 3 rope in the transformers 4.x attributes the 0.18 builder reads (see the module docstring)."""
    params = getattr(config, "rope_parameters", None)
    if not (isinstance(params, dict) and "full_attention" in params):
        return
    full = params["full_attention"]
    local = params.get("sliding_attention", full)
    config.rope_theta = float(full["rope_theta"])
    config.rope_local_base_freq = float(local["rope_theta"])
    config.rope_parameters = {"rope_type": full.get("rope_type", "default"), "rope_theta": config.rope_theta}


@contextlib.contextmanager
def _quiet(log):
    """Prints and the quantizers' INFO logging (onnxruntime.quantization, neural_compressor) into ``log``."""
    handler = logging.StreamHandler(log)
    saved = {}
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers, logger.propagate = [handler], False
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate


def _builder_module():
    try:
        from onnxruntime_genai.models import builder
    except ImportError as exc:
        raise MissingDependencyError(getattr(exc, "name", None) or "onnxruntime-genai") from exc
    return builder


def _genai_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("onnxruntime-genai")
    except metadata.PackageNotFoundError:
        return "?"


# --- validate -----------------------------------------------------------------------------------------------

class GenaiScorer:
    """A GenAI folder run by onnxruntime-genai through the runtime's own session class (``GenaiSession``).

    With ``prune_lm_head`` the graph returns logits for the last position only, so ``logits`` feeds the
    tokens one at a time; ``greedy`` is onnxruntime-genai's own greedy loop (``generate_next_token``).
    """

    def __init__(self, build_dir: Path) -> None:
        from edge_runtime.backends.onnx_genai import GenaiSession

        self.session = GenaiSession(Path(build_dir), max_length=1024)

    def logits(self, token_ids):
        import numpy as np

        generator = self.session.new_generator()
        return np.stack([self.session.append(generator, [token])[-1] for token in token_ids])

    def greedy(self, token_ids, count: int) -> list[int]:
        return self.session.native_greedy(list(token_ids), count)

    def close(self) -> None:
        self.session.close()
