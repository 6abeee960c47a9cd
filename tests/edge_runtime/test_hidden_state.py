"""Hidden states beside the logits (opt-in, llama.cpp backend): the prompt's last one is the model's own (as a
context that outputs embeddings for the whole prompt computes it), the first generated tokens' are recorded, and
recording changes neither the tokens nor, beyond the numerical noise of decoding the prompt's last token on its own
(a one-row batch takes other kernels than a prefill chunk), their log-probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.caps import LoadSettings
from edge_runtime.runtime import Runtime

PROMPT = "Q: What is the capital of France?\nA: Paris\n\nQ: Which language did Goethe write in?\nA:"


@pytest.fixture(scope="module")
def runtime(bundled_path):
    settings = LoadSettings(flash_attn=False, speculative=False, prefix_cache=False, n_threads=1)
    with Runtime.load(bundled_path, settings=settings) as loaded:
        yield loaded


def generate(runtime, **options):
    result = runtime.generate(PROMPT, max_tokens=6, top_logprobs=2, **options)
    return [(t.token_id, round(t.logprob, 4)) for t in result.tokens]


def reference_prompt_state(backend, prompt_ids) -> np.ndarray:
    """The last prompt position's hidden state from a separate context with embeddings on for every token."""
    import llama_cpp

    from edge_runtime.backends.hidden_state import embedding_size, last_hidden
    from edge_runtime.backends.llamacpp_native import NativeBatch, NativeContext

    context = NativeContext(backend.model, n_ctx=256, n_batch=128, n_threads=1, flash_attn=False,
                            n_outputs_max=128)
    batch = NativeBatch(128)
    try:
        llama_cpp.llama_set_embeddings(context.pointer, True)
        batch.fill(list(prompt_ids), 0)
        context.decode(batch)
        return last_hidden(context, embedding_size(backend.model))
    finally:
        batch.close()
        context.close()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_recording_keeps_the_tokens_and_logprobs_and_records_the_models_hidden_states(runtime):
    backend = runtime.backend
    assert backend.capabilities.hidden_states  # the evaluation records probes only where this is declared
    backend.record_hidden(None)
    plain = generate(runtime)
    backend.record_hidden(3)
    recorded = generate(runtime)
    hidden = backend.hidden
    backend.record_hidden(None)
    assert [token for token, _ in recorded] == [token for token, _ in plain]
    assert np.allclose([lp for _, lp in recorded], [lp for _, lp in plain], atol=0.1)
    assert hidden.prompt.shape == (640,) and len(hidden.generated) == 3
    reference = reference_prompt_state(backend, backend.tokenize(PROMPT))
    other = reference_prompt_state(backend, backend.tokenize(PROMPT.replace("Goethe", "Dante")))
    assert cosine(hidden.prompt, reference) > 0.99 > cosine(hidden.prompt, other)
    assert cosine(hidden.generated[0], hidden.prompt) < 0.99


def test_label_scoring_records_the_prompts_state_and_nothing_is_recorded_unless_asked(runtime):
    backend = runtime.backend
    backend.record_hidden(0)
    runtime.score_choices(PROMPT, ["German", "French"])
    assert backend.hidden.prompt is not None and backend.hidden.generated == []
    backend.record_hidden(None)
    runtime.generate(PROMPT, max_tokens=2)
    assert backend.hidden is None
