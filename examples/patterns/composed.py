#!/usr/bin/env python3
"""The six patterns composed: one renewal window, start to end, with a trace of who acted.

- P5 is the spine: the contract is one durable row moved through its states by timers.
- P1 inside "window_open": an orchestrator gathers usage, billing and support signals from
  stateless workers and merges them by declared priority.
- P6 on the risky edge: a discount above the auto-approve line waits for a person.
- P4 on the commit: the gate checks role and versioned policy before anything is sent.
- P2 inside "approved": reserving the offer and sending the message is a saga; each step has
  its compensation.
- P3 is the audit stream: every step above is an event; the trace below is read back from it.

Virtual time: the 37 days run in well under a second. Run: python examples/patterns/composed.py
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from seamline.boundary import PolicyVerifier, parse_policy
from seamline.clock import VirtualClock
from seamline.patterns import (
    Delegated,
    Delegation,
    Drop,
    Gate,
    GateAllow,
    Goto,
    Runner,
    Saga,
    SagaCompleted,
    SagaStep,
    StateMachine,
    StepContext,
    Success,
    Worker,
    Workflow,
    decide_approval,
    request_approval,
)
from seamline.store import SqlStore, UnitOfWork, open_store

START = datetime(2026, 1, 1, tzinfo=UTC)
AUTO_APPROVE = Decimal("0.20")
POLICY = PolicyVerifier(
    parse_policy(
        {
            "policy": "renewal-offers",
            "version": "2026.11.3",
            "rules": [{"id": "discount.hard_cap", "field": "discount", "max": "0.30"}],
        }
    )
)
GATE = Gate("outreach", roles={"send_offer": frozenset({"renewal-agent"})}, policy=POLICY)

MACHINE = StateMachine(
    kind="renewal",
    initial="window_open",
    transitions={
        "window_open": frozenset({"assessed"}),
        "assessed": frozenset({"approved", "awaiting_approval"}),
        "awaiting_approval": frozenset({"approved", "expired"}),
        "approved": frozenset({"outreach_sent", "expired"}),
        "outreach_sent": frozenset({"renewed", "churned"}),
    },
    terminal=frozenset({"renewed", "churned", "expired"}),
)

TRACE: list[tuple[datetime, str, str]] = []


def note(clock: VirtualClock, pattern: str, text: str) -> None:
    TRACE.append((clock.now(), pattern, text))


async def usage(task: str) -> Success:
    return Success({"tenure_months": 2, "gb_per_month": 38.0})


async def billing(task: str) -> Success:
    return Success({"contract": "Month-to-month", "monthly_charges": 70.70})


async def support(task: str) -> Success:
    return Success({"open_tickets": 3, "sentiment": "negative"})


SIGNALS = Delegation(
    "signals",
    workers=[Worker("usage", usage), Worker("billing", billing), Worker("support", support)],
    priority=["billing", "usage", "support"],
    on_partial=Drop(),
)


def build(store: SqlStore, clock: VirtualClock) -> Workflow:
    sent: dict[str, str] = {}

    async def gather(ctx: StepContext) -> Goto:
        result = await SIGNALS.run({w.name: ctx.row.id for w in SIGNALS.workers})
        assert isinstance(result, Delegated)
        note(clock, "P1", f"signals merged from {sorted(set(result.provenance.values()))}")
        risk = "high" if result.merged["open_tickets"] >= 3 else "low"
        return Goto("assessed", {"signals": dict(result.merged), "risk": risk})

    async def assess(ctx: StepContext) -> Goto:
        discount = Decimal("0.25") if ctx.row.data["risk"] == "high" else Decimal("0.10")
        if discount > AUTO_APPROVE:
            await request_approval(
                store,
                id=f"approve:{ctx.row.id}",
                reason=f"discount {discount} is above the auto-approve line {AUTO_APPROVE}",
                request={"discount": str(discount)},
                requested_by="renewal-agent",
                now=ctx.now,
                sla=timedelta(days=2),
                row_id=ctx.row.id,
            )
            note(clock, "P6", f"discount {discount} needs a person: approval requested")
            return Goto("awaiting_approval", {"discount": str(discount)})
        return Goto("approved", {"discount": str(discount)})

    async def reserve(step: Any) -> dict[str, str]:
        return {"reservation": f"res-{step.input['customer']}"}

    async def release(comp: Any) -> None:
        return None

    async def send(step: Any) -> dict[str, str]:
        sent[step.key] = step.input["customer"]  # the mail system dedupes on the key
        return {"message_id": f"m-{len(sent)}"}

    async def recall(comp: Any) -> None:
        sent.pop(comp.key, None)

    outreach = Saga(
        "outreach",
        [SagaStep("reserve_offer", reserve, release), SagaStep("send_message", send, recall)],
    )

    async def approved(ctx: StepContext) -> Goto:
        inputs = {"discount": Decimal(ctx.row.data["discount"])}
        decision = await GATE.check(
            store,
            action="send_offer",
            principal="renewal-agent",
            subject=ctx.row.id,
            inputs=inputs,
            now=ctx.now,
        )
        if not isinstance(decision, GateAllow):
            note(clock, "P4", f"gate denied: {decision.reason}")
            return Goto("expired")
        note(clock, "P4", f"gate allowed send_offer under policy {decision.policy_version}")
        result = await outreach.run(
            f"outreach-{ctx.row.id}",
            {"customer": ctx.row.id},
            store=store,
            clock=clock,
            # a kill on this renewal, or on all renewals, also stops the saga's next step
            kill_scopes=(f"run:{ctx.row.id}", f"kind:{MACHINE.kind}"),
        )
        assert isinstance(result, SagaCompleted)
        note(clock, "P2", "saga completed: offer reserved, message sent")
        GATE.allow_into(ctx.unit, decision, inputs)  # the allow is audited with the move
        return Goto("outreach_sent")

    async def close(ctx: StepContext) -> Goto:
        return Goto("renewed")

    return Workflow(
        MACHINE,
        handlers={
            "window_open": gather,
            "assessed": assess,
            "approved": approved,
            "outreach_sent": close,
        },
        enter_after={"outreach_sent": timedelta(days=30)},
    )


async def main() -> None:
    clock = VirtualClock(START)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/composed.db", clock=clock)
        workflow = build(store, clock)
        await store.apply(
            workflow.start(UnitOfWork(), "7590-VHVEG", {}, clock.now(), actor="intake")
        )
        note(clock, "P5", "renewal window opened (day -90)")
        runner = Runner(store, [workflow], clock=clock)
        await runner.run_until_idle()
        row = await store.get_row("7590-VHVEG")
        assert row is not None and row.state == "awaiting_approval"
        note(clock, "P5", "instance suspended at awaiting_approval (a row, not a task)")
        clock.advance(timedelta(hours=20))
        await decide_approval(
            store,
            "approve:7590-VHVEG",
            principal="alice",
            decision="approve",
            reason="long-standing customer",
        )
        note(clock, "P6", "alice approved the discount")
        await workflow.move(store, row.id, "approved", actor="alice", now=clock.now())
        await runner.run_until_idle()
        row = await store.get_row("7590-VHVEG")
        assert row is not None
        note(clock, "P5", f"window closed: {row.state}")

        print("who acted when")
        for at, pattern, text in TRACE:
            print(f"  day {(at - START).days:>2} {at:%H:%M}  {pattern}  {text}")
        print("P3 audit stream (read back from the log)")
        for e in await store.read_events(limit=100):
            if e.stream.startswith(("wf:", "saga:", "approval:")):
                detail = e.payload.get("to") or e.payload.get("step") or ""
                print(f"  #{e.seq:<3} {e.stream:<28} {e.type:<22} {detail}")
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
