"""Enough threads for the local legs: a non-streamed request decoding locally holds one thread of the event
loop's default executor (``asyncio.to_thread``) for its whole generation.

asyncio's default pool has ``os.cpu_count() + 4`` threads: 6 on a 2-core machine, fewer than the 8 requests
``--parallel 8`` decodes at once (and than the admission limit). Requests beyond 6 waited for a thread, not for
the model: an idle slot while requests queued, and a p95 latency twice the median. The server's lifespan sizes
the pool to its admission limit instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor


def local_leg_threads(threads: int) -> Callable[[object], contextlib.AbstractAsyncContextManager]:
    """A FastAPI ``lifespan`` that gives the loop a default executor of ``threads`` threads."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="edge-local")
        asyncio.get_running_loop().set_default_executor(executor)
        try:
            yield
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    return lifespan
