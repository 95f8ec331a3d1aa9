"""A renewal worker: one of any number of processes sharing one store.

Workers claim due timers with leases (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so each step
runs in one worker at a time; a worker that dies leaves its leases to expire and another takes
the work; SIGTERM finishes the step under way and stops. Correctness does not depend on the
leases: every move is a compare-and-swap and every commit has an idempotency key, so a step
that two workers race on commits once. Each worker keeps its own virtual clock; a step runs
at its timer's due instant, so the decisions are the same however the work is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.patterns import RunnerReport
from seamline.store import open_store
from seamline.telemetry import flush_spans
from seamline.workloads.renewal._agent import KIND, WORLD
from seamline.workloads.renewal._customer import Customer
from seamline.workloads.renewal._data import load_customers, synthetic_cohort
from seamline.workloads.renewal._job import CAMPAIGN_START, build_agent, runner_for

__all__ = ["cohort_from", "work"]


def cohort_from(source: dict[str, object], seed: int) -> tuple[Customer, ...]:
    """Rebuild the cohort a job was enqueued with."""
    if "data" in source:
        return load_customers(Path(str(source["data"]))).customers[
            : int(str(source.get("limit", 10**9)))
        ]
    if "synthetic" in source:
        return synthetic_cohort(int(str(source["synthetic"])), seed=seed)
    raise ConfigError(f"the job's source {source} names neither data nor a synthetic cohort")


async def work(
    url: str,
    *,
    owner: str,
    job: str | None = None,
    concurrency: int = 64,
    stop: threading.Event | None = None,
    on_start: Callable[[str], None] | None = None,
) -> RunnerReport:
    """Drive the store's renewal job until nothing is left for this worker, or until
    ``stop`` is set (the step under way is finished first)."""
    clock = VirtualClock(CAMPAIGN_START)
    store = open_store(url, clock=clock)
    try:
        worlds = [
            r
            for r in await store.list_rows(kind=WORLD, limit=1000)
            if job is None or r.id == f"{job}:world"
        ]
        if not worlds:
            raise ConfigError(
                "no renewal job in this store; create one with 'seamline renewals enqueue' first"
            )
        if len(worlds) > 1:
            jobs = ", ".join(r.id.rsplit(":", 1)[0] for r in worlds)
            raise ConfigError(f"several renewal jobs in this store ({jobs}); pass --job")
        config = worlds[0].data
        seed = int(config["seed"])
        customers = cohort_from(config["source"], seed)
        due = await store.next_timer_due(kinds=[KIND, WORLD])
        if due is not None:
            clock.advance_to(due)
        agent = build_agent(store, customers, clock=clock, seed=seed)
        runner = runner_for(store, agent, clock=clock, owner=owner, concurrency=concurrency)
        if on_start is not None:
            on_start(agent.job)
        return await runner.run_until_idle(stop=stop)
    finally:
        await flush_spans(store)
        await store.close()
