"""Builds tiny, seeded, randomly initialised Hugging Face model folders for the converter tests.

Two architectures (llama with a byte-level BPE tokenizer, gemma3 with a SentencePiece-style BPE tokenizer
with byte fallback), 2 layers, hidden size 64, a vocabulary of a few hundred tokens trained on the corpus
below. Weights use a large init scale so next-token distributions are peaked, as in a trained model, and
quantization error shows up in the gate's metrics rather than drowning in near-uniform noise.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)",
    "Water boils at a temperature of one hundred degrees at sea level.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman.",
    "The three primary colors are red, yellow and blue.",
    "Q: What is 12 plus 7?\nA: 19. Q: What is 3 times 4?\nA: 12.",
    "To make a cup of tea, first boil the water, then pour it over the leaves.",
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "The sun rose slowly over the quiet hills, and the farmers walked out to their fields.",
    "Birds sang in the trees while a light wind moved the tall grass. By noon the air was warm.",
    "Children played near the river until their parents called them home for lunch.",
]
SEED = 1234
INIT_RANGE = 0.25


def byte_level_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer, {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}


def sentencepiece_style_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", *byte_tokens])
    tokenizer.train_from_iterator(CORPUS, trainer)
    data = json.loads(tokenizer.to_str())  # byte tokens are vocabulary entries, not added special tokens
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in set(byte_tokens)]
    return Tokenizer.from_str(json.dumps(data)), {"bos_token": "<bos>", "eos_token": "<eos>",
                                                  "add_bos_token": True}


def make_hf_folder(arch: str, folder: Path, layer_types: list[str] | None = None,
                   sliding_window: int = 8) -> Path:
    """A saved tiny model (config.json, model.safetensors, tokenizer files) of ``arch``."""
    import torch
    import transformers

    tokenizer, tok_config = byte_level_tokenizer() if arch == "llama" else sentencepiece_style_tokenizer()
    vocab = tokenizer.get_vocab()
    common = dict(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, head_dim=16, max_position_embeddings=256,
                  initializer_range=INIT_RANGE, bos_token_id=vocab[tok_config["bos_token"]],
                  eos_token_id=vocab[tok_config["eos_token"]], pad_token_id=None)
    if arch == "llama":
        config = transformers.LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
                                          **common)
        model_class = transformers.LlamaForCausalLM
    else:
        config = transformers.Gemma3TextConfig(num_key_value_heads=1, sliding_window=sliding_window,
                                               query_pre_attn_scalar=16, rms_norm_eps=1e-6,
                                               layer_types=layer_types or ["sliding_attention"] * 2, **common)
        model_class = transformers.Gemma3ForCausalLM
    torch.manual_seed(SEED)
    model = model_class(config).eval()
    _randomise_norms(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config), encoding="utf-8")
    return folder


def _randomise_norms(model) -> None:
    """Norm weights start at one (or zero for gemma); jitter them so a wrong norm mapping changes outputs."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
