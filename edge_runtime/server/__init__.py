"""The OpenAI-compatible HTTP server: ``edge-runtime serve`` (needs the ``[server]`` extra: FastAPI, uvicorn)."""
