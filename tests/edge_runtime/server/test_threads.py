"""The server's lifespan gives the event loop enough threads for every local leg its admission lets in.

Each non-streamed local request holds a thread of the default executor while it decodes; asyncio's own pool
(cpu count + 4) ran out before ``--parallel`` requests were decoding on small machines."""

from __future__ import annotations

import asyncio
import os
import threading

from edge_runtime.server.threads import local_leg_threads


def test_every_admitted_local_leg_gets_a_thread_at_once():
    wanted = (os.cpu_count() or 1) + 6  # more than asyncio's default pool holds
    barrier = threading.Barrier(wanted, timeout=10)

    async def main() -> None:
        async with local_leg_threads(wanted)(None):
            # each call blocks until all of them run at the same time: a smaller pool times the barrier out
            await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(wanted)))

    asyncio.run(main())
