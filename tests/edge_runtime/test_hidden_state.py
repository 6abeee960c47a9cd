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


def test_a_request_records_on_its_own_tokens_without_touching_other_requests(runtime):
    """``record_hidden`` per request (what the server asks): the state each of the first tokens was chosen
    from rides on it, the same states the backend's recorder keeps, and the tokens are unchanged."""
    backend = runtime.backend
    backend.record_hidden(2)
    runtime.generate(PROMPT, max_tokens=5)
    recorder = backend.hidden
    backend.record_hidden(None)
    tokens = runtime.generate(PROMPT, max_tokens=5, record_hidden=2).tokens
    assert [t.hidden is not None for t in tokens] == [True, True, True, False, False]
    assert np.allclose(tokens[0].hidden, recorder.prompt, atol=1e-4)
    assert all(np.allclose(t.hidden, g, atol=1e-4) for t, g in zip(tokens[1:3], recorder.generated))
    assert all(t.hidden is None for t in runtime.generate(PROMPT, max_tokens=3).tokens)
    assert "hidden" not in runtime.generate(PROMPT, max_tokens=2, record_hidden=1).to_dict()["tokens"][0]


def test_the_batched_backend_records_beside_prompt_chunks_of_other_requests(bundled_path):
    """In a continuous batch, recorded rows are decoded apart from other requests' prompt chunks (llama.cpp
    would make every chunk row an output): the recorded states match a request served alone, and a request
    that records nothing beside them gets none."""
    import threading

    from edge_runtime.backends.base import SamplingParams
    from edge_runtime.backends.llamacpp_batched import BatchedLlamaCppBackend

    settings = LoadSettings(n_ctx=2048, n_parallel=3, prefix_cache=False, flash_attn=False, n_threads=1)
    backend = BatchedLlamaCppBackend.load(bundled_path, settings)
    try:
        ids = backend.tokenize(PROMPT)
        alone = list(backend.generate_tokens(ids, SamplingParams(max_tokens=4, record_hidden=1), lambda: False))
        long_ids = backend.tokenize("Q: " + "what is the weather like in all these places " * 24 + "?\nA:")
        results = {}

        def run(name, prompt_ids, record):
            results[name] = list(backend.generate_tokens(prompt_ids, SamplingParams(max_tokens=4, record_hidden=record),
                                                         lambda: False))

        threads = [threading.Thread(target=run, args=args) for args in
                   (("long", long_ids, None), ("recorded", ids, 1), ("long2", long_ids[:-3], 0))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        recorded = results["recorded"]
        assert backend.capabilities.hidden_states
        assert [s.hidden is not None for s in alone] == [True, True, False, False]
        assert [s.hidden is not None for s in recorded] == [True, True, False, False]
        assert cosine(recorded[0].hidden, alone[0].hidden) > 0.99
        assert recorded[0].token_id == alone[0].token_id
        assert all(s.hidden is None for s in results["long"])
        assert [s.hidden is not None for s in results["long2"]] == [True, False, False, False]
    finally:
        backend.close()


def test_eval_and_the_server_read_the_same_hidden_states_of_an_answer(runtime):
    """``edge-runtime eval`` records a generated answer's hidden states from its tokens, the ones the server's
    cascade reads: the probes' logits are equal at every checkpoint and at the end (one calibration file means
    the same decision in both)."""
    from types import SimpleNamespace

    from edge_runtime.evaluation.answerer import LocalAnswerer
    from fallback.early_request import hidden_signals
    from fallback.probe import Probe
    from fallback.tasks import TaskItem

    item = TaskItem(id="1", task="languages", prompt=PROMPT, answer="German", stop=["\n"])
    answer = LocalAnswerer(runtime).answer(item)
    runtime.backend.record_hidden(None)
    tokens = runtime.generate(PROMPT, max_tokens=64, stop=["\n"], record_hidden=4).tokens
    rng = np.random.default_rng(1)
    probes = [Probe(source, list(rng.normal(size=640) / 25), 0.1) for source in ("prompt", "tokens", "last")]
    calibrator = SimpleNamespace(extra={"probes": [probe.to_dict() for probe in probes]})
    assert answer.hidden_prompt and len(answer.hidden_tokens) == min(len(tokens) - 1, 4)
    for count in (0, 1, 2, None):
        served = hidden_signals(calibrator, tokens, count)
        evaluated = {probe.signal: probe.logit(answer.hidden(probe.source, count)) for probe in probes}
        assert all(abs(served[name] - evaluated[name]) < 0.05 for name in evaluated), (count, served, evaluated)


def test_every_token_has_its_stream_event_even_while_its_text_is_held_back(runtime):
    """A token whose text may start a stop string is held back, yet its event comes at once (with the text
    that is safe to release, "" where none is), so a
    caller judging tokens as they come (the cascade's running decision, reading their hidden states) sees
    every token, in order."""
    first = runtime.generate(PROMPT, max_tokens=4).tokens[0].text
    stream = runtime.stream(PROMPT, max_tokens=4, stop=[first + "\u2603\u2603"], record_hidden=1)
    events = list(stream)
    tokens = stream.result.tokens
    assert [event.token for event in events if event.token is not None] == tokens and len(tokens) == 4
    assert events[0].text == "" and events[0].token.hidden is not None  # all of it held back, still its event
    assert stream.result.text == "".join(event.text for event in events) and stream.result.text.startswith(first)


def test_a_label_answer_records_the_state_after_its_chosen_label(runtime):
    """Eval's label answers carry the state once the prompt and the chosen label are read (the "answer"
    probe's input): the model's own state there, not the prompt's, and different for another label."""
    from edge_runtime.evaluation.answerer import LocalAnswerer
    from fallback.tasks import TaskItem

    item = TaskItem(id="2", task="lang", prompt=PROMPT, answer="German", choices=["German", "French"])
    answer = LocalAnswerer(runtime).answer(item)
    runtime.backend.record_hidden(None)
    said = runtime.backend.hidden_after(runtime.backend.tokenize(PROMPT + " " + answer.answer))
    other = runtime.backend.hidden_after(runtime.backend.tokenize(PROMPT + " " + ("French" if answer.answer ==
                                                                                  "German" else "German")))
    recorded = answer.hidden("answer")
    assert recorded is not None and cosine(recorded, said) > 0.99 > cosine(recorded, other)
    assert cosine(recorded, answer.hidden("prompt")) < 0.99
