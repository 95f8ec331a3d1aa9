"""A small end-to-end run on the store: renewal windows driven by timers in virtual time.

No model is involved yet: each contract's outcome is drawn from a seeded random generator
(labelled as such in the output). What it exercises is the durable spine: one versioned row
per contract, timers attached to a row version, compare-and-swap transitions, their events
and commit-ledger rows written in one unit of work, and virtual time jumping timer to timer.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from seamline.clock import VirtualClock, advance_to_next_timer
from seamline.store import Applied, Store, Timer, UnitOfWork

__all__ = ["DEMO_START", "DemoSummary", "run_demo"]

DEMO_START = datetime(2026, 1, 1, tzinfo=UTC)
KIND = "demo-renewal"

# state -> (timer that moves it on, days after the window opens, next states with weights)
_PLAN: dict[str, tuple[str, int, tuple[tuple[str, int], ...]]] = {
    "window_open": ("outreach", 60, (("offer_sent", 1),)),
    "offer_sent": ("close", 83, (("accepted", 70), ("declined", 30))),
    "accepted": ("end", 90, (("renewed", 1),)),
    "declined": ("end", 90, (("churned", 1),)),
}


@dataclass(slots=True)
class DemoSummary:
    contracts: int
    final_states: Counter[str] = field(default_factory=Counter)
    transitions: int = 0
    commits: int = 0
    stale_timers: int = 0
    virtual_days: float = 0.0
    wall_seconds: float = 0.0


async def run_demo(
    store: Store,
    clock: VirtualClock,
    *,
    contracts: int = 200,
    seed: int = 7,
    run_id: str = "demo",
    on_progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Open ``contracts`` renewal windows and drive each to a terminal state."""
    rng = random.Random(seed)
    started, start_at = time.perf_counter(), clock.now()
    summary = DemoSummary(contracts=contracts)
    for n in range(contracts):
        row_id = f"{run_id}-{n:05d}"
        unit = (
            UnitOfWork()
            .create_row(row_id, kind=KIND, state="window_open", data={"customer": n})
            .append_event(
                row_id, "window_opened", {"at": clock.now()}, idempotency_key=f"{row_id}:opened"
            )
        )
        _schedule_next(unit, row_id, "window_open", 1, start_at)
        await store.apply(unit)
    while await advance_to_next_timer(clock, store) is not None:
        for timer in await store.due_timers(clock.now(), limit=500):
            done = await _fire(store, timer, rng, start_at, summary)
            if done and on_progress is not None:
                on_progress(1)
    summary.virtual_days = (clock.now() - start_at) / timedelta(days=1)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _schedule_next(
    unit: UnitOfWork, row_id: str, state: str, version: int, start: datetime
) -> None:
    if state in _PLAN:
        name, day, _ = _PLAN[state]
        unit.schedule_timer(
            row_id,
            row_version=version,
            name=name,
            due_at=start + timedelta(days=day),
            id=f"{row_id}:{name}",
        )


async def _fire(
    store: Store, timer: Timer, rng: random.Random, start: datetime, summary: DemoSummary
) -> bool:
    """Apply one due timer; True when its row reached a terminal state."""
    row = await store.get_row(timer.row_id)
    if row is None or row.version != timer.row_version:
        # The row moved after this timer was set: firing it would act on a stale view.
        await store.apply(UnitOfWork().settle_timer(timer.id, "noop"))
        summary.stale_timers += 1
        return False
    states, weights = zip(*_PLAN[row.state][2], strict=True)
    nxt = rng.choices(states, weights)[0]
    unit = (
        UnitOfWork()
        .transition(row.id, expect_version=row.version, to=nxt)
        .append_event(
            row.id,
            "transitioned",
            {"from": row.state, "to": nxt, "timer": timer.name},
            causation_id=timer.id,
            idempotency_key=f"{timer.id}:fired",
        )
        .settle_timer(timer.id, "fired")
    )
    if nxt == "offer_sent":
        unit.record_commit(
            f"{row.id}:outreach", {"channel": "email"}, run_id=row.id, boundary="outreach"
        )
    _schedule_next(unit, row.id, nxt, row.version + 1, start)
    outcome = await store.apply(unit)
    if not isinstance(outcome, Applied):
        return False  # another driver moved the row first; its own timer carries on
    summary.transitions += 1
    summary.commits += nxt == "offer_sent"
    if nxt not in _PLAN:
        summary.final_states[nxt] += 1
        return True
    return False
