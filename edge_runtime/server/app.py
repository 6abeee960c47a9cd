"""Where the server's application has always been imported from; the parts live in modules of their own.

``routes`` (the FastAPI app), ``edge_server`` (a request's way through), ``config``, ``errors`` (OpenAI error
objects, translation by type), ``admission``, ``streams`` (server-sent events), ``guards`` (key and body
limit), ``metrics`` and ``state_metrics`` (``/metrics``, ``/health``). ``build.build_server`` wires them.
"""

from __future__ import annotations

from edge_runtime.server.admission import Admission
from edge_runtime.server.config import DEFAULT_MAX_TOKENS, ROUTES, ServerConfig
from edge_runtime.server.edge_server import EdgeServer
from edge_runtime.server.errors import ApiError, translate_error
from edge_runtime.server.routes import create_app
from edge_runtime.server.streams import ChatStream, CompletionStream

__all__ = ["DEFAULT_MAX_TOKENS", "ROUTES", "Admission", "ApiError", "ChatStream", "CompletionStream", "EdgeServer",
           "ServerConfig", "create_app", "translate_error"]
