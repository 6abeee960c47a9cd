"""``edge-runtime serve``: flags into ``ServerSettings`` (over the environment and the settings file), then
``build_server`` and uvicorn on loopback.

A flag left out does not override anything: its setting comes from the environment, the TOML file named by
``--config``, or the default (``edge_runtime.server.settings`` says the order). This module stays light: the
top-level CLI imports it to list ``serve``; the server's own imports wait until it runs.
"""

from __future__ import annotations

import argparse
import sys

UNSET = argparse.SUPPRESS  # a flag not given leaves no attribute, so lower sources can speak


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server with cloud escalation",
                                   argument_default=UNSET)
    parser.add_argument("--config", dest="config_file", metavar="PATH",
                        help="TOML settings file: any setting below by name, and a [cloud] table (also "
                             "EDGE_CONFIG_FILE; flags > EDGE_* environment > this file > defaults)")
    _add_model_flags(parser)
    _add_http_flags(parser)
    _add_cascade_flags(parser)
    parser.set_defaults(handler=serve_command)


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="GGUF file or manifest.json (default: bundled)")
    parser.add_argument("--backend", choices=["gguf", "onnx", "coreml"],
                        help="with a manifest: use only builds of this format")
    parser.add_argument("--parallel", type=int, help="requests decoded together (default 8)")
    parser.add_argument("--queue", type=int, help="requests waiting beyond those (default 16)")
    parser.add_argument("--ctx", type=int, help="context per request in tokens (default 2048)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--prefix-cache-mb", type=float,
                        help="memory for saved prompt prefixes beyond the live KV cache (default 64; 0: live only)")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="never reuse KV state between requests")
    parser.add_argument("--in-process", action="store_true",
                        help="run the llama.cpp engine inside the server process (default: a supervised child "
                             "process that is restarted if it crashes)")
    parser.add_argument("--no-native-probe", dest="native_probe", action="store_false",
                        help="skip the first-load crash probe of the native configuration (self-managed builds)")


def _add_http_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default 127.0.0.1: this device only)")
    parser.add_argument("--port", type=int, help="(default 8080)")
    parser.add_argument("--api-key-env", help="environment variable holding the bearer API key")
    parser.add_argument("--max-body-bytes", type=int, help="(default 1000000)")
    parser.add_argument("--model-name", help="model id reported by /v1/models (default edge-runtime-local)")
    parser.add_argument("--log-prompts", action="store_true", help="write prompts to the log (off by default)")


def _add_cascade_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cloud-config", help="TOML file with [[providers]] (else EDGE_CLOUD_*)")
    parser.add_argument("--ledger", dest="ledger_path", metavar="PATH",
                        help="SQLite ledger path (default: user cache folder)")
    parser.add_argument("--no-ledger", dest="ledger", action="store_false", help="do not record requests")
    parser.add_argument("--calibration", help="calibration JSON for free-generation confidence")


def settings_from_flags(args: argparse.Namespace):
    """``ServerSettings`` from the flags given, over the environment, the settings file and the defaults."""
    from edge_runtime.server.settings import ServerSettings

    given = {name: value for name, value in vars(args).items() if name in ServerSettings.model_fields}
    return ServerSettings.load(**given)


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from edge_runtime.server.build import build_server

    settings = settings_from_flags(args)
    app, server = build_server(settings)
    print(f"edge-runtime: serving {server.config.model_name} on http://{settings.host}:{settings.port}/v1 "
          f"(cloud: {'on' if server.cascade.gateway else 'off'})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    return 0
