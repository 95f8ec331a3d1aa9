#!/usr/bin/env python3
"""P6 human in the loop: kill switch, escalation, approval under an SLA, throttling.

A number-porting step keeps failing, so its instance is suspended with an escalation that
shows a person what was tried, the decision needed and the options; three (virtual) days
later a person resumes it, which settles the escalation and re-enters the failed step.

Run: python examples/patterns/p6_human.py
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from seamline.clock import VirtualClock
from seamline.patterns import (
    EscalateOnFailure,
    Goto,
    KillSwitch,
    Runner,
    StateMachine,
    StepContext,
    Throttle,
    ThrottlePolicy,
    Workflow,
    decide_approval,
    expire_overdue,
    request_approval,
    resume,
)
from seamline.store import Store, UnitOfWork, open_store

PORTING = StateMachine(
    kind="porting",
    initial="requested",
    transitions={"requested": frozenset({"ported"})},
    terminal=frozenset({"ported"}),
    on_failure={"requested": EscalateOnFailure()},
)
DONOR_UP = {"value": False}


async def port_number(ctx: StepContext) -> Goto:
    if not DONOR_UP["value"]:
        raise ConnectionError("donor carrier API answered 503")
    return Goto("ported")


async def escalation(store: Store, clock: VirtualClock) -> None:
    """A failing step suspends its instance with a record a person can act on, days later."""
    workflow = Workflow(PORTING, handlers={"requested": port_number})
    await store.apply(workflow.start(UnitOfWork(), "port-0412", {}, clock.now(), actor="intake"))
    runner = Runner(store, [workflow], clock=clock)
    await runner.run_until_idle()
    [esc] = [a for a in await store.list_approvals(status="pending") if a.kind == "escalation"]
    print(f"escalation {esc.id}: {esc.reason}")
    print(f"  decision needed: {esc.request['decision_needed']}")
    for option in esc.request["options"]:
        print(f"  - {option['option']}: {option['expected_impact']}")

    clock.advance(timedelta(days=3))  # the instance waits as a row, not in memory
    DONOR_UP["value"] = True
    await resume(
        store, workflow, "port-0412", clock.now(), principal="bob", reason="donor API is back"
    )
    await runner.run_until_idle()
    row, settled = await store.get_row("port-0412"), await store.get_approval(esc.id)
    assert row is not None and settled is not None
    print(
        f"day 3: bob resumed port-0412 -> {row.state}; "
        f"escalation {settled.status} by {settled.decided_by}"
    )


async def main() -> None:
    clock = VirtualClock(datetime(2026, 1, 5, 9, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/p6.db", clock=clock)

        # Throttling: the tightest cap wins, and a refused send takes nothing.
        throttle = Throttle(
            "outreach",
            ThrottlePolicy(per_minute=3, per_tenant_per_hour=100, money_per_day=Decimal("500")),
        )
        sent = []
        for n in range(5):
            unit = throttle.take_into(
                UnitOfWork(), now=clock.now(), tenant="acme", money=Decimal("20")
            )
            outcome = await store.apply(unit.append_event("outreach", "sent", {"n": n}))
            sent.append(outcome.kind)
        print("throttle, 5 sends in one minute:", sent)

        # Approval under an SLA with default deny.
        await request_approval(
            store,
            id="merge-4471",
            reason="contract merger needs a specialist",
            request={"customers": ["4471-A", "4471-B"]},
            requested_by="renewal-agent",
            now=clock.now(),
            sla=timedelta(hours=48),
        )
        await request_approval(
            store,
            id="disc-7590",
            reason="discount 25% above auto line",
            request={"discount": "0.25"},
            requested_by="renewal-agent",
            now=clock.now(),
            sla=timedelta(hours=24),
        )
        decided = await decide_approval(
            store, "merge-4471", principal="alice", decision="approve", reason="same household"
        )
        print("alice:", decided.kind, "merge-4471")
        clock.advance(timedelta(hours=25))
        for expired in await expire_overdue(store, clock.now()):
            fallback = expired.request["fallback_on_timeout"]
            print(f"SLA passed for {expired.id}: fallback {fallback} applied")

        await escalation(store, clock)

        # Kill switch: only authorised principals; commits check it in their transaction.
        switch = KillSwitch(store, {"alice": frozenset({"all"})})
        print("mallory:", (await switch.kill("all", principal="mallory", reason="?")).kind)
        print(
            "alice:",
            (await switch.kill("kind:renewal", principal="alice", reason="prompt regression")).kind,
        )
        guarded = UnitOfWork().require_alive("all", "kind:renewal").record_commit("send-1", {})
        print("a renewal commit after the kill:", (await store.apply(guarded)).kind)
        for entry in await store.audit_entries():
            print(f"  audit: {entry.actor} {entry.action} {entry.subject}: {entry.decision}")
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
