"""What ``seamline worker`` drives: enqueued jobs of each workflow kind, from one store.

Every kind's driver claims due timers with leases through the P5 runner, so any number of
worker processes, on one machine or many, share one store's work; correctness rests on the
store (compare-and-swap moves, idempotency keys), not on the leases. A worker drives its kinds
side by side until nothing is due for it, or, with ``follow``, keeps looking for new work
until it is told to stop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.store import open_store

__all__ = ["KINDS", "WorkerReport", "drive"]

Started = Callable[[str, str], None]
"""Told (kind, job) when a driver starts on a job."""


@dataclass
class WorkerReport:
    """What one worker did, per kind: the runner's counts (moved, noop, killed, …)."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    rounds: int = 0
    kind: Literal["worker_report"] = "worker_report"

    def add(self, kind: str, counts: Mapping[str, int]) -> None:
        self.counts.setdefault(kind, Counter()).update(counts)

    def busy(self, before: Mapping[str, int]) -> bool:
        return self.total() != sum(before.values())

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


async def _renewal(
    url: str, owner: str, job: str | None, concurrency: int, stop: threading.Event, on: Started
) -> Mapping[str, int] | None:
    from seamline.workloads.renewal._worker import work

    try:
        report = await work(
            url,
            owner=owner,
            job=job,
            concurrency=concurrency,
            stop=stop,
            on_start=lambda j: on("renewal", j),
        )
    except ConfigError as exc:
        if "no renewal job" in str(exc):
            return None
        raise
    return report.counts


async def _porting(
    url: str, owner: str, job: str | None, concurrency: int, stop: threading.Event, on: Started
) -> Mapping[str, int] | None:
    from seamline.workloads.porting._cli import PORTING_START
    from seamline.workloads.porting._job import drive_porting, porting_jobs

    clock = VirtualClock(PORTING_START)
    store = open_store(url, clock=clock)
    counts: Counter[str] = Counter()
    try:
        jobs = await porting_jobs(store)
        if not jobs:
            return None
        for name, config in jobs:
            if stop.is_set() or (job is not None and name != job):
                continue
            on("porting", name)
            counts.update(
                await drive_porting(store, name, config, clock=clock, owner=owner, stop=stop)
            )
    finally:
        await store.close()
    return counts


Driver = Callable[
    [str, str, "str | None", int, threading.Event, Started], Awaitable[Mapping[str, int] | None]
]
"""Drives a kind's enqueued jobs; returns the runner's counts, or None when the store holds
no job of that kind."""
KINDS: Mapping[str, Driver] = {"renewal": _renewal, "porting": _porting}
_ENQUEUE = {"renewal": "renewals", "porting": "porting"}
"""The workflow kinds a worker can drive, and how."""


async def drive(
    url: str,
    *,
    kinds: tuple[str, ...],
    owner: str,
    job: str | None = None,
    concurrency: int = 64,
    stop: threading.Event | None = None,
    follow: bool = False,
    poll_s: float = 2.0,
    on_start: Started = lambda kind, job: None,
) -> WorkerReport:
    """Drive ``kinds`` until nothing is due (or, ``follow``, until ``stop`` is set)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ConfigError(
            f"unknown kinds {unknown or '(none given)'}; a worker drives: {', '.join(KINDS)}"
        )
    stopping = stop or threading.Event()
    report = WorkerReport()
    while True:
        before = {k: sum(c.values()) for k, c in report.counts.items()}
        results = await asyncio.gather(
            *(KINDS[k](url, owner, job, concurrency, stopping, on_start) for k in kinds)
        )
        for k, counts in zip(kinds, results, strict=True):
            if counts is not None:
                report.add(k, counts)
        report.rounds += 1
        if not follow and not report.counts:
            raise ConfigError(
                f"no enqueued {' or '.join(kinds)} job in this store; create one first, e.g. "
                + ", ".join(f"'seamline {_ENQUEUE[k]} enqueue'" for k in kinds)
                + " (or run with --follow to wait for one)"
            )
        if not follow or stopping.is_set():
            return report
        if not report.busy(before):
            await asyncio.to_thread(stopping.wait, poll_s)  # idle: look again in a moment
            if stopping.is_set():
                return report
