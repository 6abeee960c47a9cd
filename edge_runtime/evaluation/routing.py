"""The routed run of the evaluation: the policy decides per test item, escalations cross HTTP, the ledger records.

Every test item is decided by ``fallback.policy.decide``: a generated answer first by the running decision
(``fallback.early``: escalated at the first checkpoint whose confidence is below its threshold, and the time
of that checkpoint is when the request was decided), then, if it reached its end, as invalid (empty, not the
schema's JSON) or on its calibrated confidence. An item's ``confidence`` is the whole answer's calibrated
confidence (the evaluation runs every answer to its end, so the ranking metrics judge one score per item);
``decision_confidence`` is the one the decision was taken on. With ``EDGE_CONFIDENCE_THRESHOLD`` set only the
final decision is taken. Escalated items go to
the loopback oracle cloud through ``CloudGateway`` as ``routed`` calls; every other test item is sent once
too, as a ``reference`` call, so cloud correctness and cloud-only cost are measured for every item (the server
is on loopback, so this is cheap). The ledger gets one row per routed test item, never the reference calls.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_runtime.evaluation.oracle_cloud import REFERENCE, ROUTED, CloudCall
from edge_runtime.evaluation.report import ItemOutcome
from fallback.calibration import Calibrator
from fallback.early import RunningCalibration, decide_running
from fallback.tasks import LocalAnswer, TaskItem, is_correct


def effective_threshold(threshold: float) -> float:
    """A threshold of 1 escalates every answer, even one whose confidence rounds to exactly 1.0."""
    return math.nextafter(1.0, 2.0) if threshold >= 1.0 else threshold


@dataclass
class Routed:
    item: TaskItem
    local: LocalAnswer
    confidence: float
    escalated: bool
    reason: str
    decision_s: float = 0.0  # from the request's start to the routing decision
    decided_after_tokens: int | None = None  # set when the running decision stopped the answer
    decision_confidence: float | None = None  # the confidence the decision was taken on (None: ``confidence``)


def route(test: dict[str, list[TaskItem]], answers: dict[str, LocalAnswer], calibrators: dict[str, Calibrator],
          override: float | None) -> list[Routed]:
    """The policy's decision for every test item, taken as early as the running decision allows."""
    from fallback.policy import PolicyConfig

    routed = []
    for task, items in test.items():
        calibrator = calibrators[task]
        config = PolicyConfig(threshold=effective_threshold(override if override is not None
                                                            else calibrator.threshold))
        running = RunningCalibration.of(calibrator) if override is None else None
        routed += [route_item(item, answers[item.id], calibrator, running, config) for item in items]
    return routed


def route_item(item: TaskItem, answer: LocalAnswer, calibrator: Calibrator, running: RunningCalibration | None,
               config) -> Routed:
    """One item's decision: early (running), invalid, or on the whole answer's calibrated confidence."""
    from edge_runtime.evaluation.task_calibration import calibrator_signals
    from fallback.policy import LocalOutcome, decide
    from fallback.validity import Validity

    confidence = 0.0 if answer.invalid else calibrator.predict(calibrator_signals(item, answer, calibrator))
    early = decide_running(running, len(answer.logprobs),
                           lambda tokens, at: calibrator_signals(item, answer, at, tokens)) if running else None
    if early is not None:
        decision = decide(LocalOutcome(confidence=early.confidence, stopped_early=True), config)
        return Routed(item, answer, confidence, decision.escalate, decision.reason.value,
                      decision_time(answer, early.tokens), early.tokens, early.confidence)
    if answer.invalid:
        decision = decide(LocalOutcome(confidence=0.0, validity=Validity(False, answer.invalid)), config)
        return Routed(item, answer, 0.0, decision.escalate, decision.reason.value, answer.latency_s)
    decision = decide(LocalOutcome(confidence=confidence), config)
    return Routed(item, answer, confidence, decision.escalate, decision.reason.value, answer.latency_s)


def decision_time(answer: LocalAnswer, tokens: int) -> float:
    """When a checkpoint is reached: the query text's (-1) at the request's start; the prompt's (0) and the first
    token's (1) when the prefill ends, with the first token; checkpoint n with token n."""
    return 0.0 if tokens < 0 else answer.token_times_s[max(tokens - 1, 0)]


def run_cloud(routed: list[Routed], price_in: float, price_out: float, latency_s: float,
              concurrency: int) -> tuple[list[CloudCall], list[dict], float]:
    """Escalated items as ``routed`` calls, the rest as ``reference`` calls, all on one loopback oracle."""
    from edge_runtime.evaluation.oracle_cloud import OracleAnswers, gateway_config, received_log
    from edge_runtime.evaluation.oracle_server import OracleServer
    from fallback.gateway import CloudGateway

    jobs = [(r.item, ROUTED if r.escalated else REFERENCE) for r in routed]
    with OracleServer(OracleAnswers([r.item for r in routed]), latency_s=latency_s) as cloud:
        config = gateway_config(cloud.base_url, price_in, price_out, latency_s)
        started = time.perf_counter()
        calls = asyncio.run(_ask_with_gateway(CloudGateway(config), jobs, concurrency))
        wall_s = time.perf_counter() - started
        return calls, received_log(cloud.received), wall_s


async def _ask_with_gateway(gateway, jobs, concurrency: int) -> list[CloudCall]:
    from edge_runtime.evaluation.oracle_cloud import ask_all

    async with gateway:
        return await ask_all(gateway, jobs, concurrency)


def record_ledger(path: Path, routed: list[Routed], calls: list[CloudCall],
                  prices: tuple[float, float]) -> dict:
    """One ledger row per routed test item (reference calls are not part of the routed run)."""
    from fallback.ledger import Ledger, LedgerEntry, format_summary

    path.unlink(missing_ok=True)
    with Ledger(path) as ledger:
        for entry, call in zip(routed, calls):
            cloud = call if entry.escalated else None
            ledger.record(LedgerEntry(
                route="cloud" if cloud else "local", reason=entry.reason, confidence=entry.confidence,
                local_tokens_in=entry.local.tokens_in,
                local_tokens_out=entry.decided_after_tokens or entry.local.tokens_out,
                local_latency_s=entry.decision_s if entry.escalated else entry.local.latency_s,
                cloud_tokens_in=cloud.tokens_in if cloud else 0,
                cloud_tokens_out=cloud.tokens_out if cloud else 0,
                cloud_latency_s=cloud.latency_s if cloud else None, cloud_cost_usd=cloud.cost_usd if cloud else 0.0,
                provider="oracle-cloud" if cloud else None, price_input_per_mtok=prices[0],
                price_output_per_mtok=prices[1], task=entry.item.task,
                correct=cloud.correct if cloud else is_correct(entry.item, entry.local.answer)))
        summary = ledger.summary()
    print(format_summary(summary), file=sys.stderr)
    return asdict(summary)


def outcomes_of(routed: list[Routed], calls: list[CloudCall]) -> list[ItemOutcome]:
    return [ItemOutcome(r.item.id, r.item.task, r.confidence, is_correct(r.item, r.local.answer), call.correct,
                        r.escalated, r.reason, call.cost_usd if r.escalated else 0.0, call.cost_usd,
                        decision_s=r.decision_s, local_latency_s=r.local.latency_s,
                        decision_confidence=r.confidence if r.decision_confidence is None else r.decision_confidence,
                        schema_valid=not r.local.invalid if r.item.is_structured else None)
            for r, call in zip(routed, calls)]


def item_records(routed: list[Routed], calls: list[CloudCall]) -> list[dict]:
    return [{"id": r.item.id, "task": r.item.task, "local_answer": r.local.answer,
             "local_correct": is_correct(r.item, r.local.answer), "confidence": r.confidence,
             "escalated": r.escalated, "reason": r.reason, "decision_s": r.decision_s,
             "decision_confidence": r.decision_confidence,
             "decided_after_tokens": r.decided_after_tokens, "local_latency_s": r.local.latency_s,
             "invalid": r.local.invalid, "cloud_call": call.purpose,
             "cloud_answer": call.text, "cloud_correct": call.correct, "cloud_cost_usd": call.cost_usd}
            for r, call in zip(routed, calls)]
