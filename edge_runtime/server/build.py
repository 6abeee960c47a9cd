"""The one place that builds the server from ``ServerSettings``: runtime, cloud gateway, ledger, cascade, app.

``edge-runtime serve``, the tests' fixtures and the benchmarks that drive a real server all call
``build_server``, so what they test is what ships. A caller may hand in a runtime it loaded itself (a shared
test model, a fake backend in a ``Runtime``); otherwise the model is loaded as the settings say. Keys named by
``api_key_env`` or a provider's ``api_key_env`` are read from the environment here, once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from fastapi import FastAPI

from edge_runtime.server.settings import ServerSettings, ServerSettingsError


def build_server(settings: ServerSettings, *, runtime=None, breaker_clock: Callable[[], float] = time.monotonic,
                 environ: Mapping[str, str] | None = None):
    """(app, ``EdgeServer``) ready to serve. ``runtime``: serve this loaded runtime instead of loading one (the
    caller keeps it and closes it). ``breaker_clock`` drives the cloud's circuit breakers; ``environ`` is where
    keys are read from (default ``os.environ``)."""
    from edge_runtime.server.app import EdgeServer, ServerConfig, create_app

    environ = os.environ if environ is None else environ
    config = ServerConfig(model_name=settings.model_name, api_key=_api_key(settings, environ),
                          max_body_bytes=settings.max_body_bytes, max_in_flight=settings.admission_limit(),
                          log_prompts=settings.log_prompts)
    runtime = runtime if runtime is not None else load_runtime(settings)
    server = EdgeServer(build_cascade(settings, runtime, breaker_clock, environ), config, runtime=runtime)
    app: FastAPI = create_app(server)
    server.ready = True
    return app, server


def load_runtime(settings: ServerSettings):
    """The model the settings name, loaded under the server's caps (engine in a supervised child by default)."""
    from edge_runtime.caps import Caps, LoadSettings, physical_memory_bytes
    from edge_runtime.runtime import Runtime

    budget = settings.memory_budget_bytes
    caps = Caps(memory_budget_bytes=budget if budget is not None else physical_memory_bytes() // 2)
    load = LoadSettings(n_ctx=settings.ctx, n_threads=settings.threads, n_parallel=settings.parallel,
                        prefix_cache=settings.prefix_cache, prefix_cache_bytes=int(settings.prefix_cache_mb * 2**20),
                        native_probe=settings.native_probe, middle_layer=_reads_middle_layer(settings))
    isolation = "none" if settings.in_process else "process-background"
    return Runtime.load(settings.model, caps=caps, settings=load, isolation=isolation, backend=settings.backend)


def _reads_middle_layer(settings: ServerSettings) -> bool:
    """Whether the calibration reads the middle layer's hidden state (the engine then taps it)."""
    if not settings.calibration:
        return False
    from fallback.calibration import Calibrator
    from fallback.early_request import needs_middle_layer

    return needs_middle_layer(Calibrator.load(settings.calibration))


def build_cascade(settings: ServerSettings, runtime, breaker_clock: Callable[[], float],
                  environ: Mapping[str, str]):
    """The cascade over ``runtime``: policy, calibration, cloud gateway, ledger and tracer from the settings."""
    from edge_runtime.server.local_leg import RuntimeLocalLeg
    from fallback.calibration import Calibrator
    from fallback.cascade import Cascade
    from fallback.tracing import RequestTracer

    calibrator = Calibrator.load(settings.calibration) if settings.calibration else None
    tracer = RequestTracer.configured(settings.otel_exporter, settings.otel_record_text)
    return Cascade(RuntimeLocalLeg(runtime), _gateway(settings, breaker_clock, environ),
                   _policy(settings, calibrator), _ledger(settings), calibrator, tracer=tracer,
                   early=settings.confidence_threshold is None)  # a fixed threshold: the final decision only


def _api_key(settings: ServerSettings, environ: Mapping[str, str]) -> str | None:
    if settings.api_key is not None and settings.api_key_env:
        raise ServerSettingsError("give the API key one way: api_key or api_key_env, not both")
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if not settings.api_key_env:
        return None
    key = environ.get(settings.api_key_env)
    if not key:
        raise ServerSettingsError(f"environment variable {settings.api_key_env} is empty or unset")
    return key


def _gateway(settings: ServerSettings, breaker_clock: Callable[[], float], environ: Mapping[str, str]):
    from fallback.gateway import CloudGateway

    config = settings.gateway_config()
    if config is None:
        return None
    return CloudGateway(config, environ=settings.key_environment(dict(environ)), breaker_clock=breaker_clock)


def _policy(settings: ServerSettings, calibrator):
    from fallback.policy import PolicyConfig

    threshold = settings.confidence_threshold
    if threshold is None:
        threshold = calibrator.threshold if calibrator is not None else PolicyConfig().threshold
    return PolicyConfig(threshold=threshold, early_floor=settings.early_floor)


def _ledger(settings: ServerSettings):
    from fallback.ledger import Ledger, default_ledger_path

    if not settings.ledger:
        return None
    return Ledger(settings.ledger_path or default_ledger_path())
