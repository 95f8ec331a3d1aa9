"""Worker processes for the pattern tests: a CAS racer, a runner, a consumer, a throttle user,
a real-time runner of ticking instances (for the kill switch), and a person resuming an
escalated instance days later.

Each prints one JSON line with what it did; anything unexpected exits non-zero with the
reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from seamline.clock import VirtualClock
from seamline.patterns import (
    Consumer,
    Goto,
    Moved,
    Runner,
    StateMachine,
    StepContext,
    Throttle,
    ThrottlePolicy,
    TransitionProposal,
    Workflow,
    apply_transition,
    resume,
)
from seamline.store import Applied, Throttled, UnitOfWork, open_store
from tests._workflows import RENEWAL, WORKFLOW

T0 = datetime(2026, 1, 1, tzinfo=UTC)

TICKER = StateMachine(
    kind="ticker",
    initial="a",
    transitions={"a": frozenset({"b", "done"}), "b": frozenset({"a", "done"})},
    terminal=frozenset({"done"}),
)


async def tick(ctx: StepContext) -> Goto:
    """Flip a <-> b until ``limit`` ticks; each flip writes a ledger row (its side effect) in
    the unit of its move, keyed by the version the move creates."""
    n = int(ctx.row.data.get("n", 0))
    if n >= int(ctx.row.data["limit"]):
        return Goto("done")
    key = f"{ctx.row.id}:tick:{ctx.row.version + 1}"
    ctx.unit.record_commit(key, {"n": n + 1}, run_id=ctx.row.id, boundary="tick")
    return Goto("b" if ctx.row.state == "a" else "a", {"n": n + 1})


TICKS = Workflow(TICKER, handlers={"a": tick, "b": tick})


async def race(url: str, row_id: str, name: str) -> dict[str, object]:
    """Try once to move the row open -> offered; on a stale reject, re-read and report."""
    store = open_store(url)
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        row = await store.get_row(row_id)
        assert row is not None
        proposal = TransitionProposal.model_validate(
            {"from": "open", "to": "offered", "if_version": 1, "patch": {"by": name}}
        )
        result = await apply_transition(store, RENEWAL, row_id, proposal, actor=name)
        again = await store.get_row(row_id)
        assert again is not None
        if isinstance(result, Moved):
            return {"won": True, "version": result.version}
        return {
            "won": False,
            "reason": result.reason_code,
            "retryable": result.retryable,
            "reread_version": again.version,
            "reread_by": again.data.get("by"),
        }
    finally:
        await store.close()


async def run(url: str, owner: str) -> dict[str, object]:
    """Drive every instance to the end in virtual time (resuming whatever is pending)."""
    store = open_store(url)
    try:
        due = await store.next_timer_due()
        clock = VirtualClock(due or T0)
        runner = Runner(store, [WORKFLOW], clock=clock, owner=owner, lease_s=30, batch=20)
        print("ready", flush=True)
        report = await runner.run_until_idle()
        return {"counts": dict(report.counts)}
    finally:
        await store.close()


async def ticks(url: str) -> dict[str, object]:
    """Drive the ticking instances in real time until nothing is left to do (all done, or
    every due step refused by the kill switch)."""
    store = open_store(url)
    try:
        runner = Runner(store, [TICKS], owner="ticker", lease_s=30, batch=200, concurrency=50)
        print("ready", flush=True)
        report = await runner.run_until_idle()
        return {"counts": dict(report.counts)}
    finally:
        await store.close()


async def resume_escalated(url: str, row_id: str, at: str, name: str) -> dict[str, object]:
    """A person, at virtual time ``at``, resumes an escalated renewal instance, and a runner in
    this process drives it on to its end."""
    now = datetime.fromisoformat(at)
    clock = VirtualClock(now)
    store = open_store(url, clock=clock)
    try:
        print("ready", flush=True)
        ok = await resume(
            store, WORKFLOW, row_id, now, principal=name, reason="billing is back up; go on"
        )
        report = await Runner(store, [WORKFLOW], clock=clock, owner=name).run_until_idle()
        row = await store.get_row(row_id)
        assert row is not None
        return {"resumed": ok, "state": row.state, "counts": dict(report.counts)}
    finally:
        await store.close()


async def consume(url: str, stream: str) -> dict[str, object]:
    """Apply each event's amount to a ledger row, one event at a time, slowly."""
    store = open_store(url)

    async def handle(event, unit: UnitOfWork) -> None:  # type: ignore[no-untyped-def]
        unit.record_commit(f"applied:{event.seq}", event.payload)
        await asyncio.sleep(0.002)

    try:
        print("ready", flush=True)
        total = await Consumer(store, "ledger", stream, handle, batch=10).drain()
        return {"handled": total}
    finally:
        await store.close()


async def throttle(url: str, tries: int) -> dict[str, object]:
    """Send as many messages as the shared per-minute cap allows, all in one minute."""
    store = open_store(url, clock=VirtualClock(T0))
    gate = Throttle("mail", ThrottlePolicy(per_minute=25, per_tenant_per_hour=1000))
    sent = refused = 0
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(tries):
            unit = gate.take_into(UnitOfWork(), now=T0, tenant="acme")
            unit.append_event("mail", "sent", {"i": i})
            outcome = await store.apply(unit)
            if isinstance(outcome, Applied):
                sent += 1
            elif isinstance(outcome, Throttled):
                refused += 1
            else:
                raise SystemExit(f"unexpected outcome {outcome}")
        return {"sent": sent, "refused": refused}
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["race", "run", "consume", "throttle", "ticks", "resume"])
    parser.add_argument("url")
    parser.add_argument("arg", nargs="?", default="")
    parser.add_argument("--name", default="w")
    parser.add_argument("--at", default=T0.isoformat())
    a = parser.parse_args()
    if a.mode == "ticks":
        result = asyncio.run(ticks(a.url))
    elif a.mode == "resume":
        result = asyncio.run(resume_escalated(a.url, a.arg, a.at, a.name))
    elif a.mode == "race":
        result = asyncio.run(race(a.url, a.arg, a.name))
    elif a.mode == "run":
        result = asyncio.run(run(a.url, a.name))
    elif a.mode == "consume":
        result = asyncio.run(consume(a.url, a.arg))
    else:
        result = asyncio.run(throttle(a.url, int(a.arg)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
