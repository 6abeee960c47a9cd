"""Tiny seeded models for the converter tests, built once per session, and a cache of their builds.

Every converter test works on models it makes itself (``tests/converters/tiny_models.py``): a 2-layer
llama and a 2-layer gemma3 with trained toy tokenizers. Builds are cached per (arch, target, preset) so each
export runs once however many tests look at it; the ``tiny`` fixture lives in ``tests/conftest.py`` because the
ONNX and Core ML backend tests (``tests/edge_runtime/backends/``) share the builds. torch runs on one thread: on
a shared 2-core machine the tiny models are dominated by thread hand-off otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.converters.tiny_models import make_hf_folder

ARCHS = ("llama", "gemma3")


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class TinyModels:
    """Lazily built HF folders, sources, gate sets and builds of the tiny models."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sources, self._gate_sets, self._builds = {}, {}, {}

    def hf_folder(self, arch: str) -> Path:
        folder = self.root / f"hf-{arch}"
        return folder if (folder / "config.json").is_file() else make_hf_folder(arch, folder)

    def source(self, arch: str):
        from converters.source import load_source

        if arch not in self._sources:
            self._sources[arch] = load_source(self.hf_folder(arch), self.root / f"work-{arch}")
        return self._sources[arch]

    def tokenizer(self, arch: str):
        from edge_runtime.backends.json_tokenizer import JsonTokenizer

        source = self.source(arch)
        return JsonTokenizer(source.tokenizer_json, source.edge_metadata())

    def gate_set(self, arch: str):
        from converters.gate import TorchScorer, prepare_gate_set

        if arch not in self._gate_sets:
            reference = TorchScorer(self.source(arch).reference_model())
            self._gate_sets[arch] = prepare_gate_set(reference, self.tokenizer(arch).tokenize)
        return self._gate_sets[arch]

    def build(self, arch: str, target: str, preset: str) -> Path:
        from converters.pipeline import target_module

        key = (arch, target, preset)
        if key not in self._builds:
            out_dir = self.root / "builds" / f"{arch}-{target}-{preset}"
            entry, _ = target_module(target).build(self.source(arch), preset, out_dir, self.root / f"work-{arch}")
            self._builds[key] = entry
        return self._builds[key]

