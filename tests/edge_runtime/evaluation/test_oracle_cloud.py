"""The oracle cloud over real HTTP: gold answers by item id (or prompt), cost, and concurrency."""

from __future__ import annotations

import asyncio
import time

from edge_runtime.evaluation.oracle_cloud import (REFERENCE, ROUTED, OracleAnswers, ask_all, gateway_config,
                                                  received_log)
from edge_runtime.evaluation.oracle_server import OracleServer
from fallback.gateway import CloudGateway
from fallback.tasks import TaskItem

ITEMS = [TaskItem(id=f"c{i}", task="capitals", prompt=f"Q: capital {i}?\nA:", answer=f"City {i}", stop=["\n"])
         for i in range(12)]


def test_answers_by_id_then_by_prompt_else_empty():
    oracle = OracleAnswers(ITEMS)
    assert oracle({"metadata": {"item_id": "c3"}, "messages": []}) == "City 3"
    assert oracle({"messages": [{"role": "user", "content": ITEMS[4].prompt}]}) == "City 4"
    assert oracle({"messages": [{"role": "user", "content": "unknown"}]}) == ""


async def _ask(cloud: OracleServer, jobs, concurrency: int):
    async with CloudGateway(gateway_config(cloud.base_url, 2.5, 10.0, cloud.latency_s)) as gateway:
        return await ask_all(gateway, jobs, concurrency)


def test_every_item_gets_its_gold_answer_concurrently_and_is_priced():
    jobs = [(item, ROUTED if i % 3 == 0 else REFERENCE) for i, item in enumerate(ITEMS)]
    with OracleServer(OracleAnswers(ITEMS), latency_s=0.3) as cloud:
        started = time.perf_counter()
        calls = asyncio.run(_ask(cloud, jobs, concurrency=12))
        elapsed = time.perf_counter() - started
        log = received_log(cloud.received)
    assert elapsed < 0.3 * len(ITEMS) / 2  # latency overlapped, not serialised
    assert [call.item_id for call in calls] == [item.id for item in ITEMS]
    assert all(call.correct and call.text == item.answer for call, item in zip(calls, ITEMS))
    first = calls[0]  # usage is the server's word count: 4 prompt words, 2 answer words
    assert (first.tokens_in, first.tokens_out) == (4, 2)
    assert first.cost_usd == (4 * 2.5 + 2 * 10.0) / 1e6
    assert sorted((r["item_id"], r["purpose"]) for r in log) == sorted((i.id, p) for i, p in jobs)
