"""The ``edge-runtime`` command: run, plan, models, and the commands other packages add.

Library errors become one line on stderr and exit status 2 (no traceback); heavy modules are imported only by
the subcommand that needs them, so ``edge-runtime --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from edge_runtime.errors import EdgeRuntimeError

EXIT_USAGE_OR_MODEL_ERROR = 2


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="GGUF file, build folder or manifest.json (default: bundled)")
    parser.add_argument("--backend", choices=["gguf", "onnx", "coreml"], default=None,
                        help="with a manifest: use only builds of this format")
    parser.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--memory-budget", type=int, default=None, help="memory budget in bytes (default: half RAM)")
    parser.add_argument("--max-model-bytes", type=int, default=None, help="refuse model files larger than this")
    parser.add_argument("--max-input-tokens", type=int, default=None, help="input-token cap")
    parser.add_argument("--input-policy", choices=["reject", "truncate"], default="reject",
                        help="over the input cap: reject, or keep the end (default reject)")
    parser.add_argument("--max-output-tokens", type=int, default=1024, help="output-token cap (default 1024)")
    parser.add_argument("--ttft-deadline", type=float, default=None, help="time-to-first-token deadline, seconds")
    parser.add_argument("--deadline", type=float, default=None, help="total deadline, seconds")
    _add_memory_options(parser)


def _add_memory_options(parser: argparse.ArgumentParser) -> None:
    """Settings that change what the fit plan counts; ``run`` and ``plan`` take the same ones."""
    parser.add_argument("--batch", type=int, default=256, help="tokens per decode call (default 256)")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="keep no saved prompt prefixes (the plan then counts no prefix store)")
    parser.add_argument("--no-mmap", dest="use_mmap", action="store_false",
                        help="read the model file into memory instead of mapping it (slower to load; a file "
                             "overwritten in place while running cannot end the process)")


def _memory_settings(args: argparse.Namespace) -> dict:
    return {"n_ctx": args.ctx, "n_batch": args.batch, "prefix_cache": args.prefix_cache, "use_mmap": args.use_mmap}


def caps_and_settings(args: argparse.Namespace):
    from edge_runtime.caps import Caps, LoadSettings, default_memory_budget_bytes

    caps = Caps(max_model_bytes=args.max_model_bytes,
                memory_budget_bytes=args.memory_budget if args.memory_budget is not None
                else default_memory_budget_bytes(),
                max_input_tokens=args.max_input_tokens, input_policy=args.input_policy,
                max_output_tokens=args.max_output_tokens, ttft_deadline_s=args.ttft_deadline,
                total_deadline_s=args.deadline)
    return caps, LoadSettings(n_threads=args.threads, **_memory_settings(args))


def _add_run(subparsers) -> None:
    parser = subparsers.add_parser("run", help="generate from a prompt on the local model")
    parser.add_argument("prompt", help="the prompt text ('-' reads standard input)")
    _add_model_options(parser)
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens to generate (default 128)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=None, help="stop sequence (repeatable)")
    parser.add_argument("--top-logprobs", type=int, default=0, help="alternatives per token in --json output")
    parser.add_argument("--chat", action="store_true", help="send the prompt as one user chat message")
    parser.add_argument("--json", action="store_true", help="print one JSON record instead of streaming text")
    parser.set_defaults(handler=run_command)


def _generation_options(args: argparse.Namespace) -> dict:
    return {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p,
            "top_k": args.top_k, "seed": args.seed, "stop": args.stop, "top_logprobs": args.top_logprobs}


def _summary_line(result) -> str:
    timings = result.timings
    ttft = f"{timings.time_to_first_token_s:.3f} s" if timings.time_to_first_token_s is not None else "n/a"
    confidence = f"{result.confidence:.3f}" if result.confidence is not None else "n/a"
    return (f"[{result.usage.completion_tokens} tokens, {timings.decode_tokens_per_s:.1f} tokens/s, "
            f"TTFT {ttft}, mean confidence {confidence}, finish {result.finish_reason}]")


def run_command(args: argparse.Namespace) -> int:
    from edge_runtime.runtime import Runtime

    prompt = sys.stdin.buffer.read() if args.prompt == "-" else args.prompt
    caps, settings = caps_and_settings(args)
    with Runtime.load(args.model, caps=caps, settings=settings, backend=args.backend) as runtime:
        request = {"messages": [{"role": "user", "content": prompt}]} if args.chat else {"prompt": prompt}
        stream = runtime.stream(**request, **_generation_options(args))
        for event in stream:
            if not args.json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
        result = stream.result
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print()
        print(_summary_line(result), file=sys.stderr)
    return 0


def _add_plan(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="print the fit plan of a model as JSON, without loading it")
    parser.add_argument("model", nargs="?", default=None, help="GGUF file (default: bundled)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--memory-budget", type=int, default=None)
    parser.add_argument("--max-model-bytes", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1, help="sequences decoded together, as the server's "
                        "--parallel (default 1)")
    _add_memory_options(parser)
    parser.set_defaults(handler=plan_command)


def plan_command(args: argparse.Namespace) -> int:
    from edge_runtime.caps import Caps, LoadSettings, default_memory_budget_bytes
    from edge_runtime.models import resolve_model

    budget = args.memory_budget if args.memory_budget is not None else default_memory_budget_bytes()
    caps = Caps(memory_budget_bytes=budget, max_model_bytes=args.max_model_bytes)
    resolved = resolve_model(args.model)
    settings = LoadSettings(n_parallel=args.parallel, **_memory_settings(args))
    plan = resolved.plan(caps, settings).to_dict()
    if resolved.format == "gguf":
        plan["native"] = _native_choice(resolved.path, settings)
    print(json.dumps(plan, indent=2))
    return 0


def _native_choice(path, settings) -> dict:
    """The native configuration a load would run with on this CPU, from cached probe verdicts (no probe)."""
    from edge_runtime.engine.probe import cached_choice

    return cached_choice(path, settings)


def _add_models(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the models on this machine")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=models_command)


def models_command(args: argparse.Namespace) -> int:
    from edge_runtime.models import known_models

    from pathlib import Path

    from edge_runtime.caps import LoadSettings

    models = known_models()
    for model in models:
        if model["format"] == "gguf":
            model["native"] = _native_choice(Path(model["path"]), LoadSettings())
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for model in models:
        marker = " (default)" if model["default"] else ""
        native = model.get("native", {})
        print(f"{model['name']}{marker}\t{model['format']}\t{model['bytes']:,} bytes\t{model['path']}"
              + (f"\tnative: {native['configuration']} ({native['status']})" if native else ""))
        for note in native.get("notes", []):
            print(f"  note: {note}")
    return 0


# Commands owned by other packages, by name: each module has one ``add_parsers(subparsers)``. A command's own
# module is imported only when that command runs (``serve`` does not import the converters); ``--help`` and an
# unknown command import them all. A module missing from a partial install drops its commands.
PACKAGE_COMMANDS = {"ledger": "fallback.cli", "eval": "edge_runtime.evaluation.cli",
                    "calibrate": "edge_runtime.evaluation.cli", "serve": "edge_runtime.server.cli",
                    "convert": "converters.cli", "bench": "benchmarks.cli"}


def _package_parsers(modules: list[str]) -> list[Callable]:
    """The ``add_parsers`` of each module that this install has."""
    import importlib

    adders = []
    for module_name in dict.fromkeys(modules):
        try:
            adders.append(importlib.import_module(module_name).add_parsers)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
    return adders


CORE_COMMANDS = {"run": _add_run, "plan": _add_plan, "models": _add_models}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; for a known ``command``, only what that command needs (the other packages'
    subcommands import pydantic models, FastAPI and friends: ``edge-runtime run`` need not wait for them)."""
    parser = argparse.ArgumentParser(prog="edge-runtime", description="Run LLMs on this device under hard caps, "
                                     "escalating to a cloud model when the local answer is not good enough.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    if command in CORE_COMMANDS:
        adders = [CORE_COMMANDS[command]]
    elif command in PACKAGE_COMMANDS:
        adders = _package_parsers([PACKAGE_COMMANDS[command]])
    else:
        adders = [*CORE_COMMANDS.values(), *_package_parsers(list(PACKAGE_COMMANDS.values()))]
    for add in adders:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from edge_runtime.child_process import RUN_MODULE_COMMAND, run_module_main

    if argv[:1] == [RUN_MODULE_COMMAND]:  # a frozen build's ``python -m`` (see edge_runtime.child_process)
        return run_module_main(argv[1:])
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return args.handler(args)
    except EdgeRuntimeError as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return EXIT_USAGE_OR_MODEL_ERROR
    except ValueError as exc:  # pydantic's ValidationError of a cap or setting given on the command line
        print(f"edge-runtime: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE_OR_MODEL_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
