"""``edge-runtime serve``: load the model, wire the cascade (cloud from the environment), serve on loopback."""

from __future__ import annotations

import argparse
import os
import sys


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server with cloud escalation")
    parser.add_argument("--model", default=None, help="GGUF file or manifest.json (default: bundled)")
    parser.add_argument("--backend", choices=["gguf", "onnx", "coreml"], default=None,
                        help="with a manifest: use only builds of this format")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this device only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the bearer API key")
    parser.add_argument("--parallel", type=int, default=8, help="requests decoded together (default 8)")
    parser.add_argument("--queue", type=int, default=16, help="requests waiting beyond those (default 16)")
    parser.add_argument("--ctx", type=int, default=2048, help="context per request in tokens (default 2048)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prefix-cache-mb", type=float, default=64.0,
                        help="memory for saved prompt prefixes beyond the live KV cache (default 64; 0: live only)")
    parser.add_argument("--no-prefix-cache", action="store_true", help="never reuse KV state between requests")
    parser.add_argument("--max-body-bytes", type=int, default=1_000_000)
    parser.add_argument("--cloud-config", default=None, help="TOML file with [[providers]] (else EDGE_CLOUD_*)")
    parser.add_argument("--ledger", default=None, help="SQLite ledger path (default: user cache folder)")
    parser.add_argument("--no-ledger", action="store_true", help="do not record requests")
    parser.add_argument("--calibration", default=None, help="calibration JSON for free-generation confidence")
    parser.add_argument("--log-prompts", action="store_true", help="write prompts to the log (off by default)")
    parser.add_argument("--model-name", default="edge-runtime-local", help="model id reported by /v1/models")
    parser.add_argument("--in-process", action="store_true",
                        help="run the llama.cpp engine inside the server process (default: a supervised child "
                             "process that is restarted if it crashes)")
    parser.add_argument("--no-native-probe", action="store_true",
                        help="skip the first-load crash probe of the native configuration (self-managed builds)")
    parser.set_defaults(handler=serve_command)


def _gateway(args: argparse.Namespace):
    from fallback.gateway import CloudGateway
    from fallback.providers import GatewayConfig

    config = GatewayConfig.from_toml(args.cloud_config) if args.cloud_config else GatewayConfig.from_env()
    return CloudGateway(config) if config is not None else None


def _policy(calibrator):
    from fallback.policy import PolicyConfig

    configured = os.environ.get("EDGE_CONFIDENCE_THRESHOLD")
    if configured is not None:
        return PolicyConfig(threshold=float(configured))
    return PolicyConfig(threshold=calibrator.threshold) if calibrator is not None else PolicyConfig()


def build_server(args: argparse.Namespace):
    from edge_runtime.caps import Caps, LoadSettings
    from edge_runtime.runtime import Runtime
    from edge_runtime.server.app import EdgeServer, ServerConfig
    from fallback.calibration import Calibrator
    from fallback.cascade import Cascade
    from fallback.ledger import Ledger

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"edge-runtime: error: environment variable {args.api_key_env} is empty or unset")
    settings = LoadSettings(n_ctx=args.ctx, n_threads=args.threads, n_parallel=args.parallel,
                            prefix_cache=not args.no_prefix_cache,
                            prefix_cache_bytes=_megabytes(args.prefix_cache_mb),
                            native_probe=not args.no_native_probe)
    isolation = "none" if args.in_process else "process-background"
    runtime = Runtime.load(args.model, caps=Caps(), settings=settings, isolation=isolation, backend=args.backend)
    calibrator = Calibrator.load(args.calibration) if args.calibration else None
    ledger = None if args.no_ledger else Ledger(args.ledger)
    cascade = Cascade(runtime, _gateway(args), _policy(calibrator), ledger, calibrator)
    config = ServerConfig(model_name=args.model_name, api_key=api_key, max_body_bytes=args.max_body_bytes,
                          max_in_flight=args.parallel + args.queue, log_prompts=args.log_prompts)
    return EdgeServer(cascade, config)


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from edge_runtime.server.app import create_app

    server = build_server(args)
    app = create_app(server)
    server.ready = True
    print(f"edge-runtime: serving {server.config.model_name} on http://{args.host}:{args.port}/v1 "
          f"(cloud: {'on' if server.cascade.gateway else 'off'})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _megabytes(value: float) -> int:
    if value < 0:
        raise SystemExit("--prefix-cache-mb must be >= 0")
    return int(value * 2**20)
