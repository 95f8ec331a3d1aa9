#!/usr/bin/env python3
"""P4 supervisor + gate: nothing reaches the outside world unchecked.

A gate with a role table, versioned policy as code and a budget stands before sending an
offer: a hallucinated 90% discount is denied (fast, before any store read) and audited; a
25% offer is allowed, flagged for review, and audited in the same transaction as the send.
Then a supervisor restarts a crashing worker with backoff and escalates when it keeps crashing.
Run: python examples/patterns/p4_gate.py
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from seamline.boundary import PolicyVerifier, parse_policy
from seamline.budget import Budget
from seamline.clock import VirtualClock
from seamline.patterns import Gate, GateAllow, Supervisor
from seamline.store import UnitOfWork, open_store

POLICY = PolicyVerifier(
    parse_policy(
        {
            "policy": "renewal-offers",
            "version": "2026.11.2",
            "rules": [
                {"id": "discount.hard_cap", "field": "discount", "max": "0.30"},
                {"id": "discount.review", "field": "discount", "warn_above": "0.20"},
            ],
        }
    )
)


async def main() -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/p4.db", clock=clock)
        gate = Gate(
            "outreach",
            roles={"send_offer": frozenset({"renewal-agent"})},
            policy=POLICY,
            budget=Budget("run-1", max_cost=Decimal("50")),
        )
        for who, discount in (
            ("renewal-agent", "0.90"),
            ("intern", "0.10"),
            ("renewal-agent", "0.25"),
        ):
            inputs = {"discount": Decimal(discount)}
            decision = await gate.check(
                store,
                action="send_offer",
                principal=who,
                subject="7590-VHVEG",
                inputs=inputs,
                now=clock.now(),
            )
            if isinstance(decision, GateAllow):
                unit = UnitOfWork().record_commit("7590-VHVEG:offer", {"discount": discount})
                await store.apply(gate.allow_into(unit, decision, inputs))
                print(f"{who} offers {discount}: allowed, flags {list(decision.flags)}")
            else:
                print(
                    f"{who} offers {discount}: denied by the {decision.gate} gate "
                    f"({decision.rule}): {decision.reason}"
                )
        for entry in await store.audit_entries():
            print(
                f"  audit: {entry.actor} {entry.decision} {entry.action} "
                f"policy {entry.policy_version}: {entry.reason}"
            )

        crashes = 0

        async def billing_sync() -> None:
            nonlocal crashes
            crashes += 1
            raise ConnectionError("billing API unreachable")

        sup = Supervisor(store, clock=clock, max_restarts=3, window=timedelta(minutes=5))
        started = clock.now()
        outcome = await sup.supervise("billing-sync", billing_sync)
        print(
            f"supervisor: {outcome.outcome} after {outcome.restarts} restarts "
            f"({(clock.now() - started).total_seconds():.0f} s of backoff); "
            f"escalation {outcome.approval_id is not None}"
        )
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
