"""The runtime behind the cascade's local-leg protocol: answers pass through, errors become the fallback's.

A real ``Runtime`` over a scripted backend (bytes are tokens; no native code), so argument checks, caps and
the stream's bookkeeping are the runtime's own.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge_runtime.caps import Caps
from edge_runtime.errors import (BackendError, EngineCrashedError, EngineStartingError, InvalidRequestError,
                                 PromptTooLongError, UnsupportedCapabilityError)
from edge_runtime.models import ResolvedModel
from edge_runtime.runtime import Runtime
from edge_runtime.server.local_leg import RuntimeLocalLeg, translate
from fallback.errors import (LocalCrashedError, LocalInputTooLongError, LocalLegError, LocalStartingError,
                             RequestRejectedError)
from fallback.local_leg import LocalLeg, LocalRequest
from tests.fallback.test_cascade_streams import ScriptedBackend


def leg_for(text: bytes = b" Paris.", caps: Caps | None = None, backend=None) -> RuntimeLocalLeg:
    backend = backend or ScriptedBackend(text, math.log(0.9))
    return RuntimeLocalLeg(Runtime(backend, ResolvedModel("gguf", Path("scripted.gguf")), caps or Caps(), 0.0))


def test_an_answer_streams_through_with_its_tokens():
    leg: LocalLeg = leg_for()
    stream = leg.stream(LocalRequest(prompt="Q?", max_tokens=16))
    pieces = list(stream)
    assert "".join(piece.text for piece in pieces) == " Paris." == stream.result.text
    assert [round(math.exp(token.logprob), 6) for token in stream.result.tokens] == [0.9] * 7
    assert stream.result.finish_reason == "stop" and stream.result.usage.completion_tokens == 7
    assert leg.ready is True


def test_closing_the_stream_stops_the_runtime():
    stream = leg_for(b"x" * 50).stream(LocalRequest(prompt="Q?", max_tokens=50))
    for count, _ in enumerate(stream, 1):
        if count == 3:
            stream.close()
            break
    assert stream.result.finish_reason == "cancelled" and stream.result.usage.completion_tokens == 3


def test_the_request_options_reach_the_runtime():
    leg = leg_for(b"abcdefgh")
    stream = leg.stream(LocalRequest(prompt="Q?", max_tokens=3, stop=["c"]))
    list(stream)
    assert stream.result.text == "ab" and stream.result.finish_reason == "stop"


@pytest.mark.parametrize(("runtime_error", "fallback_type", "message"), [
    (PromptTooLongError(9412, 4096), LocalInputTooLongError, "prompt is 9,412 tokens; cap is 4,096"),
    (InvalidRequestError("max_tokens must be at least 1"), RequestRejectedError, "max_tokens must be at least 1"),
    (EngineCrashedError("the engine died (signal 9)"), LocalCrashedError,
     "EngineCrashedError: the engine died (signal 9)"),
    (EngineStartingError("the engine is restarting"), LocalStartingError,
     "EngineStartingError: the engine is restarting"),
    (BackendError("decode failed"), LocalLegError, "BackendError: decode failed"),
])
def test_runtime_errors_become_the_fallbacks_by_type(runtime_error, fallback_type, message):
    translated = translate(runtime_error)
    assert type(translated) is fallback_type and str(translated) == message


def test_an_unsupported_capability_is_a_rejected_request_that_says_so():
    translated = translate(UnsupportedCapabilityError("onnx", "grammar"))
    assert isinstance(translated, RequestRejectedError) and translated.code == "unsupported_capability"


def test_errors_at_the_start_are_translated_with_their_cause():
    leg = leg_for(caps=Caps(max_input_tokens=3))
    with pytest.raises(LocalInputTooLongError, match="cap is 3") as too_long:
        leg.stream(LocalRequest(prompt="a longer prompt", max_tokens=4))
    assert isinstance(too_long.value.__cause__, PromptTooLongError)
    with pytest.raises(RequestRejectedError):
        leg.stream(LocalRequest(prompt="Q?", max_tokens=0))


def test_errors_while_streaming_are_translated():
    backend = ScriptedBackend(b" Paris.", math.log(0.9))
    original = backend.generate_tokens

    def crashes(prompt_ids, sampling, should_abort):
        steps = original(prompt_ids, sampling, should_abort)
        yield next(steps)
        raise EngineCrashedError("the engine died (signal 9)")

    backend.generate_tokens = crashes
    stream = leg_for(backend=backend).stream(LocalRequest(prompt="Q?", max_tokens=8))
    with pytest.raises(LocalCrashedError, match="EngineCrashedError: the engine died") as crashed:
        list(stream)
    assert isinstance(crashed.value.__cause__, EngineCrashedError)
