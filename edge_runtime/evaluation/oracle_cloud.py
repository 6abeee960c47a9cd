"""The evaluation's cloud: a loopback OpenAI-compatible server that answers every item with its gold answer.

The "oracle cloud" is the ceiling a real cloud model approaches; its price and latency are configurable so
cost and wall time are those of a real deployment. Requests cross real HTTP through ``CloudGateway`` (with its
retries and cost accounting), concurrently up to a bound, so cloud latency overlaps instead of adding up.
Each request carries the item id and its purpose (``routed``: the router escalated it; ``reference``: asked
only to know whether the cloud gets it right) in the OpenAI ``metadata`` field; the server matches by that id,
falling back to the prompt text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fallback.tasks import MAX_ANSWER_TOKENS, TaskItem, is_correct

PROVIDER_NAME = "oracle-cloud"
ROUTED = "routed"
REFERENCE = "reference"


@dataclass(frozen=True)
class CloudCall:
    """What the cloud answered for one item and what it cost."""

    item_id: str
    purpose: str
    text: str
    correct: bool
    tokens_in: int
    tokens_out: int
    latency_s: float
    cost_usd: float


class OracleAnswers:
    """``answer_fn`` for ``OracleServer``: the gold answer of the item a request is about ("" if unknown)."""

    def __init__(self, items: Sequence[TaskItem]) -> None:
        self.by_id = {item.id: item.answer for item in items}
        self.by_prompt = {item.prompt: item.answer for item in items}

    def __call__(self, body: dict[str, Any]) -> str:
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if metadata.get("item_id") in self.by_id:
            return self.by_id[metadata["item_id"]]
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
        prompt = messages[-1].get("content") if messages else body.get("prompt")
        return self.by_prompt.get(prompt, "") if isinstance(prompt, str) else ""


def gateway_config(base_url: str, price_in: float, price_out: float, latency_s: float):
    """One provider at ``base_url`` with the given prices; redaction off (public data, exact prompts)."""
    from fallback.providers import GatewayConfig

    provider = {"name": PROVIDER_NAME, "base_url": base_url, "model": "oracle",
                "price_input_per_mtok": price_in, "price_output_per_mtok": price_out,
                "timeout_s": latency_s + 30.0}
    return GatewayConfig.build({"providers": [provider], "overall_deadline_s": latency_s + 90.0,
                                "redact": False}, source="oracle cloud")


def cloud_request(item: TaskItem, purpose: str):
    from fallback.gateway import CloudRequest

    return CloudRequest(messages=[{"role": "user", "content": item.prompt}], max_tokens=MAX_ANSWER_TOKENS,
                        temperature=0.0, stop=item.stop,
                        extra_body={"metadata": {"item_id": item.id, "purpose": purpose}})


async def _ask(gateway, item: TaskItem, purpose: str, gate: asyncio.Semaphore) -> CloudCall:
    async with gate:
        response = await gateway.complete(cloud_request(item, purpose))
    text = response.text.strip()
    return CloudCall(item.id, purpose, text, is_correct(item, text), response.usage.prompt_tokens,
                     response.usage.completion_tokens, response.latency_s, response.cost_usd)


async def ask_all(gateway, jobs: Sequence[tuple[TaskItem, str]], concurrency: int) -> list[CloudCall]:
    """Every (item, purpose) through the gateway, at most ``concurrency`` in flight; results in job order."""
    gate = asyncio.Semaphore(concurrency)
    return list(await asyncio.gather(*(_ask(gateway, item, purpose, gate) for item, purpose in jobs)))


def received_log(bodies: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """What the server received, one record per completion request: item id and purpose."""
    log = []
    for body in bodies:
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        log.append({"item_id": str(metadata.get("item_id", "")), "purpose": str(metadata.get("purpose", ""))})
    return log
