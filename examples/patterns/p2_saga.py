#!/usr/bin/env python3
"""P2 saga on the telco workload: a mid-contract plan change that must not half-happen.

Customer 5575-GNVDE (a one-year DSL contract at $56.95 a month in the Telco churn data) moves
to a fibre plan twelve days into a billing cycle. Three systems that share no transaction
take part, so the change is a saga of three steps, each with the compensation that undoes it:

1. ``provision_plan``    network inventory switches the line to fibre  / switch it back
2. ``credit_prorated``   billing credits the unused 18 days of DSL     / reverse the credit
3. ``send_confirmation`` messaging sends the confirmation               / send a correction

The messaging system rejects the confirmation (its template was withdrawn), so the saga
undoes the first two in reverse order. The billing system answers 503 to the first reversal;
the compensation is retried with backoff and succeeds. Every call carries an idempotency key,
and the fake systems below apply each key once, as real billing and provisioning APIs do.

A second change then fails the same way, but the old DSL plan has reached end of life, so
switching back keeps failing: the saga escalates to a person with what was done, what could
not be undone, and the options.

Everything runs on a SQLite store in a temporary directory, in virtual time (the backoff
waits cost nothing), with no model and no network. Run it with
``python examples/patterns/p2_saga.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from seamline.clock import VirtualClock
from seamline.patterns import (
    CompensationContext,
    Saga,
    SagaNeedsHuman,
    SagaResult,
    SagaStep,
    SagaStepContext,
    saga_trace,
)
from seamline.store import Store, open_store

MONTHLY = Decimal("56.95")
UNUSED_DAYS, CYCLE_DAYS = 18, 30


@dataclass
class Systems:
    """Stand-ins for network inventory, billing and messaging. Each applies an idempotency
    key once and answers a repeat with the first answer."""

    retired_plans: set[str] = field(default_factory=set)
    billing_outages: int = 0
    lines: dict[str, str] = field(default_factory=dict)
    balance: dict[str, Decimal] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, apply: Any) -> Any:
        if key not in self.seen:
            self.seen[key] = apply()
        return self.seen[key]

    async def provision(self, ctx: SagaStepContext) -> dict[str, str]:
        customer, plan = ctx.input["customer"], ctx.input["to_plan"]
        old = self.lines.get(customer, ctx.input["from_plan"])

        def switch() -> dict[str, str]:
            self.lines[customer] = plan
            return {"from": old, "to": plan}

        return dict(self.once(ctx.key, switch))

    async def unprovision(self, ctx: CompensationContext) -> dict[str, str]:
        customer, old = ctx.input["customer"], ctx.input["from_plan"]
        if old in self.retired_plans:
            raise RuntimeError(f"plan {old} reached end of life; inventory refuses new lines on it")

        def restore() -> dict[str, str]:
            self.lines[customer] = old
            return {"restored": old}

        return dict(self.once(ctx.key, restore))

    async def credit(self, ctx: SagaStepContext) -> dict[str, str]:
        amount = (MONTHLY * UNUSED_DAYS / CYCLE_DAYS).quantize(Decimal("0.01"))
        customer = ctx.input["customer"]

        def post() -> dict[str, str]:
            self.balance[customer] = self.balance.get(customer, Decimal(0)) - amount
            return {"credited": str(amount)}

        return dict(self.once(ctx.key, post))

    async def reverse_credit(self, ctx: CompensationContext) -> dict[str, str]:
        if self.billing_outages:
            self.billing_outages -= 1
            raise ConnectionError("billing answered 503 Service Unavailable")
        amount, customer = Decimal(ctx.result["credited"]), ctx.input["customer"]

        def post() -> dict[str, str]:
            self.balance[customer] = self.balance.get(customer, Decimal(0)) + amount
            return {"reversed": str(amount)}

        return dict(self.once(ctx.key, post))

    async def confirm(self, ctx: SagaStepContext) -> None:
        raise LookupError("template plan-change-v3 was withdrawn; nothing was sent")

    async def correct(self, ctx: CompensationContext) -> str:
        return "no message to correct"


def plan_change(systems: Systems) -> Saga:
    return Saga(
        "plan-change",
        [
            SagaStep("provision_plan", systems.provision, systems.unprovision),
            SagaStep("credit_prorated", systems.credit, systems.reverse_credit),
            SagaStep("send_confirmation", systems.confirm, systems.correct),
        ],
        compensation_attempts=3,
        backoff_initial_s=5.0,
    )


async def show(store: Store, saga_id: str, result: SagaResult) -> None:
    print(f"\n=== saga {saga_id}: {type(result).__name__}")
    for line in await saga_trace(store, saga_id):
        print(line)


async def main() -> None:
    start = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
    clock = VirtualClock(start)
    change = {"customer": "5575-GNVDE", "from_plan": "dsl-one-year", "to_plan": "fiber-300"}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'p2.db'}", clock=clock)
        try:
            systems = Systems(billing_outages=1)
            result = await plan_change(systems).run("pc-1", change, store=store, clock=clock)
            await show(store, "pc-1", result)
            backoff = (clock.now() - start).total_seconds()
            print(
                f"line is back on {systems.lines['5575-GNVDE']}; net balance change "
                f"{systems.balance['5575-GNVDE']}; backoff waited {backoff:.1f} s of virtual time"
            )

            retired = Systems(retired_plans={"dsl-one-year"})
            result = await plan_change(retired).run("pc-2", change, store=store, clock=clock)
            await show(store, "pc-2", result)
            assert isinstance(result, SagaNeedsHuman)
            approval = await store.get_approval(result.approval_id)
            assert approval is not None
            request = approval.request
            print(f"\nescalation {approval.id} ({approval.status}): {approval.reason}")
            print(f"undone: {request['undone']}")
            for item in request["not_undone"]:
                print(f"not undone: {item['step']} ({item['error']})")
            print(f"decision needed: {request['decision_needed']}")
            print("options:")
            for option in request["options"]:
                print(f"  - {option['option']}: {option['expected_impact']}")
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
