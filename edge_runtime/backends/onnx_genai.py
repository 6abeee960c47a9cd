"""ONNX Runtime GenAI model folders (``genai_config.json`` + ``model.onnx``) through ``onnxruntime-genai``.

GenAI owns the graph's inputs (attention mask, positions), its KV cache (a shared past/present buffer, a
bounded one for sliding-window layers) and the execution provider; we keep what the ``Backend`` protocol
promises on top: our tokenizer and sampler, per-token log-probabilities computed from GenAI's logits,
prefix reuse, abort checks between prefill chunks and tokens, and continuation scoring.

Two tiers, as in ``backends/onnx.py``: ``GenaiSession`` owns the ``og.Model`` and makes generators;
``OnnxGenaiBackend`` holds one generator as its single-sequence cache and runs the shared decode loop
(``CachedDecoderBackend``). ``OnnxBackend.load`` picks this class for a GenAI folder when the library is
installed. Rewinding a sliding-window cache past what it still holds fails in GenAI; the backend then starts a
fresh generator and prefills again (same results, more work).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_runtime.backends.base import Capabilities
from edge_runtime.backends.cached_decoder import CachedDecoderBackend
from edge_runtime.backends.json_tokenizer import JsonTokenizer
from edge_runtime.backends.onnx_providers import choose_genai_provider
from edge_runtime.build_folder import GENAI_CONFIG, read_genai_config  # noqa: F401  (GENAI_CONFIG: re-exported)
from edge_runtime.caps import LoadSettings
from edge_runtime.errors import BackendError, BackendUnavailableError, ModelFileError

PREFILL_CHUNK_TOKENS = 256


def import_genai():
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime-genai is not installed (pip install 'edge-runtime[onnx]')") from exc
    return onnxruntime_genai


def genai_available() -> bool:
    try:
        import_genai()
    except BackendUnavailableError:
        return False
    return True


def generator_length(genai_config: dict, wanted: int) -> int:
    """A generator's ``max_length``: ``wanted``, at least the sliding window (GenAI's windowed cache refuses a
    smaller buffer), at most the model's context."""
    model = genai_config["model"]
    window = int(model["decoder"].get("sliding_window", {}).get("window_size", 0))
    return min(int(model["context_length"]), max(wanted, window))


class GenaiSession:
    """Owns one ``og.Model`` on the chosen execution provider; generators share it."""

    def __init__(self, folder: Path, max_length: int, n_threads: int | None = None) -> None:
        og = import_genai()
        self.og, self.folder = og, Path(folder)
        self.max_length = generator_length(read_genai_config(folder), max_length)
        self.execution_provider = choose_genai_provider(og)
        try:
            config = og.Config(str(folder))
            config.clear_providers()
            if self.execution_provider != "cpu":
                config.append_provider(self.execution_provider)
            if n_threads:
                config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                    "intra_op_num_threads": n_threads, "inter_op_num_threads": 1}}}}))
            self.model = og.Model(config)
        except RuntimeError as exc:  # onnxruntime-genai raises RuntimeError (OgaResult) for every failure
            raise ModelFileError(folder, f"onnxruntime-genai cannot load it ({str(exc).splitlines()[0]})") from exc

    def new_generator(self):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.max_length, do_sample=False)
        return self.og.Generator(self.model, params)

    def append(self, generator, token_ids: Sequence[int]) -> np.ndarray:
        """Appends ``token_ids``; logits of the last one as a (1, vocab) float32 array."""
        try:
            generator.append_tokens(np.asarray(token_ids, dtype=np.int32))
            logits = generator.get_logits()
        except RuntimeError as exc:
            raise BackendError(f"onnxruntime-genai failed on {len(token_ids)} tokens: {exc}") from exc
        return logits.reshape(-1, logits.shape[-1])[-1:].astype(np.float32, copy=False)

    def native_greedy(self, prompt_ids: list[int], count: int) -> list[int]:
        """``count`` tokens from onnxruntime-genai's own greedy loop (``generate_next_token``)."""
        generator = self.new_generator()
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        out: list[int] = []
        while len(out) < count and not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return out

    def close(self) -> None:
        self.model = None


def _metadata_from_genai_config(folder: Path) -> dict:
    """``edge_model.json``'s fields for a GenAI folder someone else built (no ``edge_model.json``)."""
    model = read_genai_config(folder)["model"]
    decoder = model.get("decoder", {})
    eos = model.get("eos_token_id")
    tokenizer_config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text(encoding="utf-8")) \
        if tokenizer_config_path.is_file() else {}
    bos = model.get("bos_token_id")
    return {"config": {"vocab_size": model["vocab_size"], "context_length": model["context_length"],
                       "head_dim": decoder.get("head_size")},
            "bos_token_id": bos, "eos_token_ids": eos if isinstance(eos, list) else [eos],
            "add_bos": bool(tokenizer_config.get("add_bos_token", bos is not None)),
            "chat_template": tokenizer_config.get("chat_template")}


def read_metadata(folder: Path) -> dict:
    from edge_runtime.backends.json_tokenizer import read_edge_metadata

    if (folder / "edge_model.json").is_file():
        return read_edge_metadata(folder)
    return _metadata_from_genai_config(folder)


class OnnxGenaiBackend(CachedDecoderBackend):
    """One GenAI folder; the cache is one ``og.Generator``."""

    format = "onnx"
    prefill_chunk_tokens = PREFILL_CHUNK_TOKENS
    capabilities = Capabilities()  # no grammar, no prefix store, no speculation, one request at a time

    def __init__(self, session: GenaiSession, tokenizer: JsonTokenizer, metadata: dict, n_ctx: int,
                 settings: LoadSettings) -> None:
        super().__init__(tokenizer, metadata, n_ctx, settings.seed)
        self.session, self.settings = session, settings
        self.generator = session.new_generator()

    @property
    def execution_provider(self) -> str:
        return self.session.execution_provider

    @classmethod
    def load(cls, folder: Path, settings: LoadSettings) -> OnnxGenaiBackend:
        folder = Path(folder)
        metadata = read_metadata(folder)
        n_ctx = min(settings.n_ctx, int(metadata["config"]["context_length"]))
        tokenizer = JsonTokenizer(folder / "tokenizer.json", metadata)
        session = GenaiSession(folder, n_ctx, settings.n_threads or os.cpu_count())
        return cls(session, tokenizer, metadata, n_ctx, settings)

    def _forward(self, tokens: list[int]) -> np.ndarray:
        return self.session.append(self.generator, tokens)

    def _rewind_to(self, keep: int) -> None:
        if keep >= len(self.cached_tokens):
            return
        try:
            if keep == 0:
                raise RuntimeError("start afresh")
            self.generator.rewind_to(keep)
        except RuntimeError:  # a sliding-window cache no longer holds position ``keep``
            self.generator = self.session.new_generator()
            keep = 0
        del self.cached_tokens[keep:]

    def _continuation_rows(self, tokens: list[int]) -> np.ndarray:
        """One token at a time: the graph (``prune_lm_head``) returns logits for the last position only."""
        return np.concatenate([self._decode([token]) for token in tokens])

    def close(self) -> None:
        self.generator = None
        self.session.close()
        self.cached_tokens = []
