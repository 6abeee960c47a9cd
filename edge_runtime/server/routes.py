"""The FastAPI application: the OpenAI-compatible routes, ``/health`` and ``/metrics`` over one ``EdgeServer``.

Every failure is an OpenAI-style error object with a 4xx/5xx status, and the server keeps serving: bad JSON,
wrong types, unknown fields, oversized bodies, invalid UTF-8, bad ``max_tokens`` (400/413), a missing or
wrong API key (401), a full queue (spilled to the cloud when one is configured, else 429 with Retry-After).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from edge_runtime.server import openai_format as wire
from edge_runtime.server.edge_server import EdgeServer
from edge_runtime.server.errors import ApiError, install_error_handlers
from edge_runtime.server.guards import install_guards
from edge_runtime.server.metrics import CONTENT_TYPE
from edge_runtime.server.schemas import ChatCompletionRequest, CompletionRequest
from edge_runtime.server.streams import ChatStream, CompletionStream
from edge_runtime.server.threads import local_leg_threads


def create_app(server: EdgeServer) -> FastAPI:
    app = FastAPI(title="edge-runtime", version="0.1.0",
                  description="OpenAI-compatible local inference with cloud escalation",
                  lifespan=local_leg_threads(server.config.max_in_flight + 4))  # + room for metrics calls
    install_error_handlers(app)
    install_guards(app, server)
    _add_service_routes(app, server)
    _add_chat_route(app, server)
    _add_completion_route(app, server)
    return app


def _add_service_routes(app: FastAPI, server: EdgeServer) -> None:
    @app.get("/health")
    async def health():
        status_code, body = server.health()
        return JSONResponse(body, status_code=status_code)

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.config.model_name, "object": "model", "created": 0,
                                             "owned_by": "edge-runtime"}]}


def _add_chat_route(app: FastAPI, server: EdgeServer) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        route = server.route_of(request)
        messages = [message.model_dump(exclude_none=True) for message in body.messages]
        response_format = body.response_format.model_dump(exclude_none=True) if body.response_format else None
        cascade_request = server.cascade_request(
            body, request, route, messages=messages, max_tokens=body.max_completion_tokens or body.max_tokens,
            top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0, response_format=response_format,
            grammar=_schema_grammar(body.response_format), tools=body.tools, tool_choice=body.tool_choice)
        model = server.config.model_name
        top = cascade_request.top_logprobs
        builder = ChatStream(model, body.logprobs, body.include_usage_in_stream, top) if body.stream else None
        spilled = server.admit(route)  # last: nothing after it may fail before ``answer`` owns the admission
        return await server.answer(request, cascade_request,
                                   lambda result: wire.chat_completion(result, model, body.logprobs, top), builder,
                                   spilled)


def _add_completion_route(app: FastAPI, server: EdgeServer) -> None:
    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        route = server.route_of(request)
        prompt = body.prompt if isinstance(body.prompt, str) else _single_prompt(body.prompt)
        with_logprobs = body.logprobs is not None
        cascade_request = server.cascade_request(body, request, route, prompt=prompt, max_tokens=body.max_tokens,
                                                 top_logprobs=body.logprobs or 0)
        model = server.config.model_name
        top = cascade_request.top_logprobs
        builder = CompletionStream(model, with_logprobs, body.include_usage_in_stream, top) if body.stream else None
        spilled = server.admit(route)  # last: nothing after it may fail before ``answer`` owns the admission
        return await server.answer(request, cascade_request,
                                   lambda result: wire.completion(result, model, with_logprobs, top), builder,
                                   spilled)


def _single_prompt(prompts: list[str]) -> str:
    if len(prompts) != 1:
        raise ApiError(400, f"exactly one prompt is supported (n=1), got {len(prompts)}", param="prompt")
    return prompts[0]


def _schema_grammar(response_format) -> str | None:
    """A llama.cpp grammar for ``json_object`` / ``json_schema`` response formats."""
    if response_format is None or response_format.type == "text":
        return None
    from edge_runtime.grammar import grammar_for_response_format

    return grammar_for_response_format(response_format.model_dump())
