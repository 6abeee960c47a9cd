"""What one ``EdgeServer`` needs to know at request time (the rest of ``ServerSettings`` is spent building it)."""

from __future__ import annotations

from dataclasses import dataclass

from fallback.policy import Route

ROUTES = tuple(route.value for route in Route)  # what a client may ask for in X-Edge-Route
DEFAULT_MAX_TOKENS = 256


@dataclass
class ServerConfig:
    model_name: str = "edge-runtime-local"
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_in_flight: int = 16
    retry_after_s: int = 1
    log_prompts: bool = False
