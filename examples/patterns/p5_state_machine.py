#!/usr/bin/env python3
"""P5 shared state machine: renewal windows as durable rows moved by timers.

Three contracts open their renewal window; the runner drives them through 37 days of virtual
time. A person expires one offer by hand mid-way, so its day-30 timer fires as a recorded
no-op instead of acting on a stale view. Run: python examples/patterns/p5_state_machine.py
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta

from seamline.clock import VirtualClock
from seamline.patterns import (
    Goto,
    Runner,
    StateMachine,
    StepContext,
    TransitionProposal,
    Workflow,
    apply_transition,
)
from seamline.store import UnitOfWork, open_store

MACHINE = StateMachine(
    kind="renewal",
    initial="open",
    transitions={
        "open": frozenset({"offered"}),
        "offered": frozenset({"renewed", "expired"}),
    },
    terminal=frozenset({"renewed", "expired"}),
    guards={("open", "offered"): lambda data, patch: patch.get("discount", 1) <= 0.30},
)


async def offer(ctx: StepContext) -> Goto:
    # The offer's ledger row lands in the same transaction as the move: exactly once.
    ctx.unit.record_commit(f"{ctx.row.id}:offer", {"discount": 0.10})
    return Goto("offered", {"discount": 0.10})


async def close(ctx: StepContext) -> Goto:
    return Goto("renewed")


WORKFLOW = Workflow(
    MACHINE, handlers={"open": offer, "offered": close}, enter_after={"offered": timedelta(days=30)}
)


async def main() -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/p5.db", clock=clock)
        unit = UnitOfWork()
        for customer in ("7590-VHVEG", "5575-GNVDE", "3668-QPYBK"):
            WORKFLOW.start(unit, customer, {"customer": customer}, clock.now(), actor="intake")
        await store.apply(unit)
        runner = Runner(store, [WORKFLOW], clock=clock)
        print("day 0:", dict((await runner.step()).counts))
        row = await store.get_row("5575-GNVDE")
        assert row is not None
        override = TransitionProposal.model_validate(
            {"from": "offered", "to": "expired", "if_version": row.version}
        )
        moved = await apply_transition(store, MACHINE, row.id, override, actor="alice")
        print("day 0: alice expires 5575-GNVDE by hand ->", moved.kind)
        report = await runner.run_until_idle()
        print(f"day {(clock.now() - datetime(2026, 1, 1, tzinfo=UTC)).days}:", dict(report.counts))
        for r in await store.list_rows(kind="renewal"):
            trail = [
                f"{e.type}({e.payload.get('to') or e.payload.get('state', '')})"
                for e in await store.read_stream(MACHINE.stream(r.id))
            ]
            print(f"  {r.id}: {r.state} v{r.version}  " + " -> ".join(trail))
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
