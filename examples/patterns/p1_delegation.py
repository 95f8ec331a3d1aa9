#!/usr/bin/env python3
"""P1 hierarchical delegation on the renewal workload: four signals for one customer.

When a contract's renewal window opens, the agent needs four independent signals before it
can score churn risk: usage, network, billing and support. An orchestrator sends each of
four stateless workers a typed task and merges their typed answers by a declared priority.

The workers here are stand-ins that answer from customer 7590-VHVEG's row of the Telco churn
data (plus a few invented support and network figures); no model, network or store is used.
Two things go wrong on purpose:

* the network worker hangs, so it times out; the orchestrator retries it once (its share of
  the run's retry budget), it times out again, and the declared default takes its place;
* the billing system answers 503 once; the orchestrator retries, and the second call works.

Run it with ``python examples/patterns/p1_delegation.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pydantic

from seamline.patterns import (
    Delegated,
    Delegation,
    Failure,
    Substitute,
    Success,
    Worker,
    WorkerResult,
    render_trace,
)

CUSTOMER = "7590-VHVEG"


@dataclass(frozen=True, slots=True)
class SignalTask:
    """What every worker is asked: one customer, looking back ``days``."""

    customer_id: str
    days: int = 90


class UsageSignals(pydantic.BaseModel):
    tenure_months: int
    internet_service: str
    streaming: bool
    monthly_charges: float  # metered estimate; the invoice is the better source


class BillingSignals(pydantic.BaseModel):
    contract: str
    payment_method: str
    paperless_billing: bool
    monthly_charges: float  # as invoiced


class SupportSignals(pydantic.BaseModel):
    tech_support: bool
    open_tickets: int
    last_contact_sentiment: str


async def usage_worker(task: SignalTask) -> WorkerResult:
    await asyncio.sleep(0.01)
    return Success(
        UsageSignals(
            tenure_months=1, internet_service="DSL", streaming=False, monthly_charges=30.12
        )
    )


async def network_worker(task: SignalTask) -> WorkerResult:
    await asyncio.sleep(30)  # the probe service hangs; the orchestrator's timeout ends it
    return Success({"outage_minutes": 0, "network_quality": "good"})


class BillingSystem:
    """The outside system billing reads from: down for its first call, then fine."""

    def __init__(self) -> None:
        self.calls = 0

    async def invoice_summary(self, customer_id: str) -> WorkerResult:
        self.calls += 1
        if self.calls == 1:
            return Failure("billing_unavailable", "billing API answered 503", retryable=True)
        return Success(
            BillingSignals(
                contract="Month-to-month",
                payment_method="Electronic check",
                paperless_billing=True,
                monthly_charges=29.85,
            )
        )


def billing_worker(system: BillingSystem) -> Callable[[SignalTask], Awaitable[WorkerResult]]:
    # The worker keeps no state and never retries; the flakiness lives in the system it calls.
    async def work(task: SignalTask) -> WorkerResult:
        return await system.invoice_summary(task.customer_id)

    return work


async def support_worker(task: SignalTask) -> WorkerResult:
    await asyncio.sleep(0.02)
    return Success({"tech_support": False, "open_tickets": 2, "last_contact_sentiment": "negative"})


def build() -> Delegation:
    return Delegation(
        "renewal-signals",
        workers=[
            Worker("usage", usage_worker, timeout_s=1.0, output=UsageSignals),
            Worker("network", network_worker, timeout_s=0.2),
            Worker(
                "billing", billing_worker(BillingSystem()), timeout_s=1.0, output=BillingSignals
            ),
            Worker("support", support_worker, timeout_s=1.0, output=SupportSignals),
        ],
        # Who wins when two workers report the same field: declared here, never decided by a model.
        priority=["usage", "support", "billing", "network"],
        field_priority={"monthly_charges": ["billing"]},  # the invoice beats the estimate
        on_partial=Substitute(
            defaults={
                "usage": {},
                "network": {"network_quality": "unknown"},
                "billing": {},
                "support": {},
            }
        ),
        retries=2,
        retries_per_worker=1,
        backoff_initial_s=0.05,
    )


def show(result: Delegated, delegation: Delegation) -> None:
    print("trace")
    for line in render_trace(result.trace).splitlines():
        print("  " + line)
    print()
    print("merged signals")
    overruled = {c.field: c.overruled for c in result.conflicts}
    width = max(len(name) for name in result.merged)
    for name, value in result.merged.items():
        source = result.provenance[name]
        note = "  (declared default)" if source in result.substituted else ""
        if name in overruled:
            note += f"  (overruled: {', '.join(overruled[name])})"
        print(f"  {name:<{width}}  {value!s:<16}  from {source}{note}")
    print()
    print("workers")
    for name, outcome in result.results_by_worker.items():
        calls = result.attempts_by_worker[name]
        what = "success" if isinstance(outcome, Success) else getattr(outcome, "reason_code", "?")
        then = "  -> substituted" if name in result.substituted else ""
        print(f"  {name:<8} {what:<20} {calls} call(s){then}")
    print(f"retries used: {result.retries_used} of {delegation.retries}")


async def main() -> int:
    print(f"P1 delegation: renewal signals for customer {CUSTOMER}")
    print("(stand-in workers; no model, network or store)")
    print()
    delegation = build()
    task = SignalTask(CUSTOMER)
    result = await delegation.run({w.name: task for w in delegation.workers})
    if not isinstance(result, Delegated):
        print(f"delegation failed: {result.reason_code}: {result.message}")
        return 1
    show(result, delegation)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
