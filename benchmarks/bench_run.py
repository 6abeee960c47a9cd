"""Measures one build in a fresh process, so its peak RSS and its cold first token belong to it alone.

The parent calls ``measure_in_subprocess(spec, on_progress)``; it starts ``python -m benchmarks.bench_run``,
sends the ``RunSpec`` as JSON on stdin, and reads ``@@bench {json}`` lines back: progress events, then one
result (raw samples; ``bench_report`` turns them into medians and spreads) or one error.

In the child (mode ``full``): load (``load_s``); one generation right after the load (the cold time to first
token); then ``runs`` warm rounds, each a prefill at every prompt length (``max_tokens=1``: tokens/s =
prompt tokens / time to first token) and one decode of ``decode_tokens`` on the shortest prompt (decode
tokens/s, warm TTFT, and the gaps between tokens for the latency percentiles). KV reuse between requests is
off and every prompt starts with a different word, so no run is helped by the one before. Mode ``cold`` only
loads and times the first token: the parent runs it in more fresh processes to give load and cold TTFT a
spread. Prompts are plain prose; a base model rarely ends it early, and the tokens decoded are recorded.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError

MARKER = "@@bench "
EXIT_ERROR = 2
FILLER = ("The river ran past the old mill and under the stone bridge, where children watched the boats carry "
          "grain, wool and timber down to the market town. Every season brought its own work to the valley: "
          "ploughing in spring, shearing in early summer, harvest in the long evenings of August, and in "
          "winter the slow mending of tools, fences and roofs before the snow. ")
OPENERS = ("Long", "Each", "Far", "Once", "Near", "Some", "Most", "Still", "Then", "Later", "Often", "Here")


class BenchError(EdgeRuntimeError):
    """A build could not be measured; the message says which and why (one line for the CLI)."""


@dataclass
class RunSpec:
    """What one child measures."""

    model_format: str
    path: str
    mode: str = "full"  # "full" or "cold"
    prompt_lengths: list[int] = field(default_factory=lambda: [64, 256, 1024])
    decode_tokens: int = 64
    runs: int = 5
    n_threads: int | None = None
    n_gpu_layers: int = 0
    onnx_providers: list[str] = field(default_factory=list)

    @property
    def n_ctx(self) -> int:
        needed = max(self.prompt_lengths) + self.decode_tokens + 64
        return max(512, -(-needed // 256) * 256)


def peak_rss_bytes() -> int:
    """This process's peak resident set (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# -- the child ---------------------------------------------------------------------------------------------
def emit(event: str, **payload) -> None:
    print(MARKER + json.dumps({"event": event, **payload}), flush=True)


def make_prompt(count_tokens: Callable[[str], int], n_tokens: int, variant: int) -> str:
    """Prose whose token count is the closest to ``n_tokens`` that whole words allow (bisection on the word
    count), opening with a word that differs by ``variant``."""
    opener, words = OPENERS[variant % len(OPENERS)], FILLER.split()

    def text(n_words: int) -> str:
        return " ".join([opener, *itertools.islice(itertools.cycle(words), n_words)])

    low, high = 0, max(1, n_tokens)
    while count_tokens(text(high)) < n_tokens:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count_tokens(text(middle)) < n_tokens else (low, middle)
    below, above = count_tokens(text(low)), count_tokens(text(high))
    return text(low if n_tokens - below < above - n_tokens else high)


@dataclass
class Generation:
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    token_gaps_s: list[float]


def generate(runtime, prompt: str, max_tokens: int) -> Generation:
    """One timed generation through ``Runtime.stream``; gaps are between consecutive token events."""
    stamps = []
    stream = runtime.stream(prompt, max_tokens=max_tokens)
    for event in stream:
        if event.token is not None:
            stamps.append(time.perf_counter())
    result = stream.result
    timings = result.timings
    if timings.time_to_first_token_s is None:
        raise BenchError(f"{runtime.model.path}: the model produced no token")
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    return Generation(result.usage.prompt_tokens, result.usage.completion_tokens,
                      timings.time_to_first_token_s, timings.decode_tokens_per_s, gaps)


def load_runtime(spec: RunSpec):
    from edge_runtime.caps import Caps, LoadSettings
    from edge_runtime.runtime import Runtime

    # plain decoding: a device's numbers must not depend on whether this prompt happens to suit speculation
    settings = LoadSettings(n_ctx=spec.n_ctx, n_threads=spec.n_threads, n_gpu_layers=spec.n_gpu_layers,
                            speculative=False)
    caps = Caps(max_output_tokens=max(1024, spec.decode_tokens), max_input_tokens=None)
    runtime = Runtime.load(spec.path, caps=caps, settings=settings)
    if hasattr(runtime.backend, "prefix_reuse"):
        runtime.backend.prefix_reuse = False
    return runtime


def usable_lengths(spec: RunSpec, n_ctx: int) -> tuple[list[int], list[str]]:
    """Prompt lengths that fit the backend's context with the decode; notes for the ones dropped."""
    limit = n_ctx - spec.decode_tokens - 8
    kept = [length for length in spec.prompt_lengths if length <= limit]
    dropped = [length for length in spec.prompt_lengths if length > limit]
    notes = [f"prompt lengths {dropped} skipped: the build's context is {n_ctx} tokens"] if dropped else []
    return kept or [max(8, limit // 2)], notes


def execution_details(runtime) -> dict:
    """What really ran: GPU layers for llama.cpp, the session's providers for onnxruntime, the execution
    provider an ONNX Runtime GenAI model was configured with."""
    session = getattr(getattr(runtime.backend, "session", None), "session", None)
    providers = list(session.get_providers()) if hasattr(session, "get_providers") else []
    genai_provider = getattr(runtime.backend, "execution_provider", None)
    if not providers and genai_provider:
        providers = [genai_provider]
    settings = getattr(runtime.backend, "settings", None)
    return {"n_gpu_layers": getattr(settings, "n_gpu_layers", 0), "execution_providers": providers,
            "n_threads": getattr(settings, "n_threads", None)}


def measure(spec: RunSpec) -> dict:
    """Raw samples of one build in this process: load, cold first token, then the warm rounds (mode full)."""
    rss_before = current_rss_bytes()
    runtime = load_runtime(spec)
    try:
        lengths, notes = usable_lengths(spec, runtime.backend.n_ctx)
        emit("progress", step="load")
        cold_tokens = spec.decode_tokens if spec.mode == "full" else 1
        first = generate(runtime, make_prompt(runtime.count_tokens, lengths[0], 0), cold_tokens)
        emit("progress", step="cold")
        result = {"load_s": runtime.load_s, "cold_ttft_s": first.ttft_s, "rss_before_load_bytes": rss_before,
                  "n_ctx": runtime.backend.n_ctx, "notes": notes, **execution_details(runtime)}
        if spec.mode == "full":
            result.update(prompt_lengths=lengths, prefill={}, prefill_tokens={}, warm_ttft_s=[],
                          decode_tokens_per_s=[], decoded_tokens=[], token_gaps_s=[])
            warm_rounds(runtime, spec, result)
    finally:
        runtime.close()
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def warm_rounds(runtime, spec: RunSpec, result: dict) -> None:
    lengths = result["prompt_lengths"]
    for round_index in range(spec.runs):
        variant = 1 + round_index * (len(lengths) + 1)
        for offset, length in enumerate(lengths):
            prefill = generate(runtime, make_prompt(runtime.count_tokens, length, variant + offset), 1)
            result["prefill"].setdefault(str(length), []).append(prefill.prompt_tokens / prefill.ttft_s)
            result["prefill_tokens"][str(length)] = prefill.prompt_tokens
            emit("progress", step=f"prefill {length}")
        prompt = make_prompt(runtime.count_tokens, lengths[0], variant + len(lengths))
        decode = generate(runtime, prompt, spec.decode_tokens)
        result["warm_ttft_s"].append(decode.ttft_s)
        result["decode_tokens_per_s"].append(decode.decode_tokens_per_s)
        result["decoded_tokens"].append(decode.completion_tokens)
        result["token_gaps_s"].extend(decode.token_gaps_s)
        emit("progress", step="decode")


def main() -> int:
    try:
        spec = RunSpec(**json.loads(sys.stdin.read()))
        emit("result", **measure(spec))
        return 0
    except (EdgeRuntimeError, ValueError, OSError) as exc:
        emit("error", message=" ".join(str(exc).split()), kind=type(exc).__name__)
        return EXIT_ERROR


# -- the parent --------------------------------------------------------------------------------------------
def measure_in_subprocess(spec: RunSpec, on_progress: Callable[[str], None] = lambda step: None,
                          timeout_s: float = 1800) -> dict:
    """Runs ``spec`` in a fresh Python process; ``BenchError`` with the child's message if it fails."""
    from edge_runtime.child_process import python_module_argv

    command = python_module_argv("benchmarks.bench_run")  # ``__run-module`` in a frozen build
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                   text=True, env=_child_env())
        timed_out = threading.Event()
        watchdog = threading.Timer(timeout_s, lambda: (timed_out.set(), process.kill()))
        watchdog.start()
        try:
            outcome = _read_messages(process, spec, on_progress)
        finally:
            watchdog.cancel()
        process.wait()
        if timed_out.is_set():
            raise BenchError(f"{spec.path}: measurement took longer than {timeout_s:.0f} s and was stopped")
        stderr.seek(0)
        return _outcome(spec, outcome, stderr.read(), process.returncode)


def _read_messages(process: subprocess.Popen, spec: RunSpec, on_progress: Callable[[str], None]) -> dict | None:
    process.stdin.write(json.dumps(asdict(spec)))
    process.stdin.close()
    outcome = None
    for line in process.stdout:
        if not line.startswith(MARKER):
            continue
        message = json.loads(line[len(MARKER):])
        if message["event"] == "progress":
            on_progress(message["step"])
        else:
            outcome = message
    return outcome


def measure_target(target, options, accelerator: dict, bandwidth: float | None, progress):
    """The ``BuildResult`` of one build: a full process, then ``runs - 1`` cold-only processes."""
    from benchmarks.bench_report import summarise

    spec = spec_for(target, options, accelerator)
    label = f"{target.backend} {target.build}"
    full = measure_in_subprocess(spec, lambda step: progress.advance(f"{label}: {step}"))
    cold_spec = replace(spec, mode="cold")
    colds = [measure_in_subprocess(cold_spec, lambda step: progress.advance(f"{label}: fresh process {step}"))
             for _ in range(options.runs - 1)]
    result = summarise(target.backend, target.build, str(target.path), target.model_bytes, full, colds,
                       roofline_for(target, full, bandwidth))
    result.notes.extend(provider_notes(target.backend, spec, full))
    return result


def spec_for(target, options, accelerator: dict) -> RunSpec:
    """GPU layers only for GGUF builds and only when the accelerator choice says so and --no-gpu is absent."""
    layers = accelerator.get("n_gpu_layers", 0) if options.use_gpu and target.backend == "gguf" else 0
    providers = list(accelerator.get("onnx_providers", [])) if target.backend == "onnx" and options.use_gpu else []
    return RunSpec(target.backend, str(Path(target.path).resolve()), "full", list(options.prompt_lengths),
                   options.decode_tokens, options.runs, options.threads, layers, providers)


def roofline_for(target, full: dict, bandwidth: float | None):
    """The decode roofline at the decode runs' average context (shortest prompt + half the decoded tokens)."""
    from benchmarks import roofline
    from benchmarks.bench_report import Spread

    if not bandwidth or not full["decode_tokens_per_s"]:
        return None
    shortest = str(min(full["prompt_lengths"]))
    decoded = statistics.median(full["decoded_tokens"])
    context = int(full["prefill_tokens"].get(shortest, int(shortest)) + decoded / 2)
    traffic = roofline.decode_traffic(target.backend, Path(target.path), target.model_bytes, context)
    if traffic is None:
        return None
    measured = Spread.of(full["decode_tokens_per_s"]).median
    return roofline.roofline(traffic, bandwidth, measured)


def provider_notes(backend: str, spec: RunSpec, full: dict) -> list[str]:
    """Says when onnxruntime was offered GPU providers the ONNX backend did not use."""
    wanted = [name for name in spec.onnx_providers if name != "CPUExecutionProvider"]
    used = full.get("execution_providers") or []
    if backend != "onnx" or not wanted or set(wanted) <= set(used):
        return []
    return [f"onnxruntime offers {', '.join(wanted)}, but the ONNX backend ran on {', '.join(used) or 'CPU'}"]


def _outcome(spec: RunSpec, outcome: dict | None, stderr: str, returncode: int | None = None) -> dict:
    """The child's result message, or a ``BenchError`` that says how the child ended ("was killed by
    SIGSEGV") and the last line it wrote to stderr."""
    from edge_runtime.child_process import describe_exit

    if outcome is None:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
        said = f": {last.strip()}" if last else " (it wrote nothing to stderr)"
        raise BenchError(f"{spec.path}: the measuring process {describe_exit(returncode)}{said}")
    if outcome["event"] == "error":
        raise BenchError(outcome["message"])
    outcome.pop("event")
    return outcome


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_project_root(), env.get("PYTHONPATH")]))
    return env


if __name__ == "__main__":
    sys.exit(main())
