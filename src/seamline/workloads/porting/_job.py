"""The porting job: a batch of port requests through their workflow, in virtual time.

Everything the job knows lives in the store, so it resumes where it stopped: rows that exist
are not created again, pending timers carry on, every side effect has an idempotency key. The
job id is derived from the seed, the cohort and the simulated world, so the same call resumes
the same job, and the summary is read back from the store rather than kept in memory.

The runner processes due timers one at a time (``concurrency=1``) in due order: outside
parties race the workflow's own timers for the same row (a customer's cancellation against
the donor's answer), and a fixed order is what makes the same seed give the same outcomes on
both backends. Many workers on PostgreSQL stay correct without it — every move is a
compare-and-swap — but which of two racing messages wins would then vary.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from seamline.boundary import Runtime
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.models import Model
from seamline.patterns import Runner
from seamline.store import Duplicate, Store, UnitOfWork
from seamline.workloads.porting._agent import PortingAgent
from seamline.workloads.porting._intake import SimulatedPortingModel
from seamline.workloads.porting._machine import (
    CUTOVER_GATE,
    INBOX,
    KIND,
    TERMINAL,
)
from seamline.workloads.porting._world import SimulatedWorld, World
from seamline.workloads.renewal import Customer, synthetic_cohort

__all__ = [
    "JOB_KIND",
    "PortingSummary",
    "drive_porting",
    "enqueue_porting",
    "job_id",
    "porting_jobs",
    "porting_runner",
    "run_porting",
    "summarise",
]


def job_id(customers: Sequence[Customer], seed: int, world: SimulatedWorld) -> str:
    digest = hashlib.sha256("|".join(c.customer_id for c in customers).encode()).hexdigest()
    return f"porting-s{seed}-{digest[:8]}-{world.digest}"


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class PortingSummary:
    """What a porting job did, read back from the store."""

    job: str
    requests: int
    model: str
    outcomes: Counter[str] = field(default_factory=Counter)
    """Port rows by state: completed, rejected, cancelled (and any still waiting)."""
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    days_to_complete: list[float] = field(default_factory=list)
    """Form arrival to cutover, per completed port, in days, ascending."""
    escalations: Counter[str] = field(default_factory=Counter)
    """By what asked: intake, donor_timeout, cutover (a compensation kept failing), step."""
    escalation_outcomes: Counter[str] = field(default_factory=Counter)
    """approved, rejected, edited, expired (the SLA fallback), withdrawn, pending."""
    donor_rejections: Counter[str] = field(default_factory=Counter)
    sagas: Counter[str] = field(default_factory=Counter)
    """Cutover sagas by ending: completed, compensated, compensation_failed."""
    compensations: int = 0
    """Saga steps undone (each exactly once)."""
    gate_denials: Counter[str] = field(default_factory=Counter)
    intake_rejects: Counter[str] = field(default_factory=Counter)
    timer_noops: int = 0
    manual_overrides: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    """Outside messages by type and fate, e.g. ``customer_cancel:ignored``."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    throttled: int = 0
    wall_seconds: float = 0.0
    virtual_days: float = 0.0

    @property
    def simulated(self) -> bool:
        return self.model.startswith("sim:")

    @property
    def finished(self) -> int:
        return sum(self.outcomes[t] for t in TERMINAL)

    @property
    def days_p50(self) -> float | None:
        return percentile(self.days_to_complete, 0.50)

    @property
    def days_p95(self) -> float | None:
        return percentile(self.days_to_complete, 0.95)

    @property
    def sla_fallbacks(self) -> int:
        return self.escalation_outcomes["expired"]

    def figures(self) -> dict[str, Any]:
        """Everything that must be the same for the same seed (not wall time)."""
        return {
            "job": self.job,
            "outcomes": dict(self.outcomes),
            "rejected_by_reason": dict(self.rejected_by_reason),
            "days_to_complete": [round(d, 4) for d in self.days_to_complete],
            "escalations": dict(self.escalations),
            "escalation_outcomes": dict(self.escalation_outcomes),
            "donor_rejections": dict(self.donor_rejections),
            "sagas": dict(self.sagas),
            "compensations": self.compensations,
            "gate_denials": dict(self.gate_denials),
            "intake_rejects": dict(self.intake_rejects),
            "timer_noops": self.timer_noops,
            "manual_overrides": self.manual_overrides,
            "messages": dict(self.messages),
            "tokens": self.prompt_tokens + self.completion_tokens,
        }


JOB_KIND = "porting-job"
"""The kind of a job's own row (``<job>:job``): how workers rebuild it (seed, requests)."""


def _agent(
    store: Store,
    customers: Sequence[Customer],
    *,
    seed: int,
    clock: VirtualClock,
    model: Model | None,
    world: SimulatedWorld,
    on_terminal: Callable[[str], None] = lambda _: None,
) -> PortingAgent:
    model = model or SimulatedPortingModel("typical-v1", seed=seed, clock=clock)
    job = job_id(customers, seed, world)
    return PortingAgent(
        store, Runtime(store, clock), model, World(world, seed), job, on_terminal=on_terminal
    )


def porting_runner(
    store: Store, agent: PortingAgent, *, clock: VirtualClock, owner: str, concurrency: int = 1
) -> Runner:
    """The runner that drives a job's requests and inbox (see the module note on ordering)."""
    return Runner(
        store,
        [agent.workflow, agent.inbox],
        clock=clock,
        owner=owner,
        batch=500,
        concurrency=concurrency,
        tick=timedelta(hours=1),
    )


async def run_porting(
    store: Store,
    *,
    requests: int | Sequence[Customer],
    seed: int,
    clock: VirtualClock,
    model: Model | None = None,
    world: SimulatedWorld | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PortingSummary:
    """Run (or resume) a porting job and summarise it from the store.

    ``requests`` is a number of customers from the seeded synthetic cohort, or the customers
    themselves. ``clock`` must be the virtual clock the store was opened with; the forms
    arrive over the two days after it. ``model`` reads the forms (default: the simulated
    model, ``sim:typical-v1``); ``world`` sets how the simulated donor, customers, desk and
    network behave.
    """
    started = time.perf_counter()
    customers = (
        synthetic_cohort(requests, seed=seed) if isinstance(requests, int) else tuple(requests)
    )
    world = world or SimulatedWorld()
    pending = await store.next_timer_due()
    if pending is not None:
        clock.advance_to(pending)  # resuming: virtual time continues where it stopped
    total = len(customers)
    done = [0]

    def terminal(_: str) -> None:
        done[0] = min(total, done[0] + 1)
        if on_progress is not None:
            on_progress(done[0], total)

    agent = _agent(
        store, customers, seed=seed, clock=clock, model=model, world=world, on_terminal=terminal
    )
    job = agent.job
    done[0] = await _count_terminal(store, job)
    begin = clock.now()
    await _create(store, agent, customers, begin)
    if on_progress is not None:
        on_progress(done[0], total)
    report = await porting_runner(store, agent, clock=clock, owner=f"{job}-runner").run_until_idle()
    summary = await summarise(store, job, total, agent.model.name)
    summary.throttled = report.counts["throttled"]
    summary.wall_seconds = time.perf_counter() - started
    summary.virtual_days = (clock.now() - begin).total_seconds() / 86400
    if on_progress is not None:
        on_progress(summary.finished, total)
    return summary


async def enqueue_porting(store: Store, *, requests: int, seed: int, clock: VirtualClock) -> str:
    """Create a job's requests (rows and their first timers) and its job row without running
    anything, for ``seamline worker --kinds porting``. Idempotent: enqueuing twice creates
    nothing new."""
    customers = synthetic_cohort(requests, seed=seed)
    agent = _agent(store, customers, seed=seed, clock=clock, model=None, world=SimulatedWorld())
    await _create(store, agent, customers, clock.now())
    await store.apply(
        UnitOfWork().create_row(
            f"{agent.job}:job",
            kind=JOB_KIND,
            state="enqueued",
            data={"seed": seed, "requests": requests, "start": clock.now().isoformat()},
        )
    )  # a Duplicate when enqueued before: the job row is the same
    return agent.job


async def porting_jobs(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """The enqueued porting jobs in ``store``: (job id, its config)."""
    return [
        (r.id.removesuffix(":job"), dict(r.data or {}))
        for r in await store.list_rows(kind=JOB_KIND, limit=1000)
    ]


async def drive_porting(
    store: Store,
    job: str,
    config: dict[str, Any],
    *,
    clock: VirtualClock,
    owner: str,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """Drive one enqueued porting job until nothing is due for this worker, or until ``stop``
    is set (the step under way finishes first); another worker on the same store shares the
    work through the timers' leases."""
    customers = synthetic_cohort(int(config["requests"]), seed=int(config["seed"]))
    agent = _agent(
        store,
        customers,
        seed=int(config["seed"]),
        clock=clock,
        model=None,
        world=SimulatedWorld(),
    )
    if agent.job != job:
        raise ConfigError(f"porting job {job} does not rebuild from its config {config}")
    runner = porting_runner(store, agent, clock=clock, owner=owner)
    return dict((await runner.run_until_idle(stop=stop)).counts)


async def _create(
    store: Store, agent: PortingAgent, customers: Sequence[Customer], start: datetime
) -> None:
    chunk = 250
    for i in range(0, len(customers), chunk):
        part = customers[i : i + chunk]
        if await store.get_row(agent.row_id(part[-1].customer_id)) is not None:
            continue  # created before an interruption
        unit = UnitOfWork()
        for c in part:
            agent.add_request(unit, c, start)
        if isinstance(await store.apply(unit), Duplicate):  # partly created: one by one
            for c in part:
                single = UnitOfWork()
                agent.add_request(single, c, start)
                await store.apply(single)


async def _rows(store: Store, kind: str, job: str) -> list[Any]:
    out: list[Any] = []
    after = f"{job}:"
    while True:
        page = [
            r
            for r in await store.list_rows(kind=kind, after_id=after, limit=5000)
            if r.id.startswith(f"{job}:")
        ]
        if not page:
            return out
        out.extend(page)
        after = page[-1].id


async def _count_terminal(store: Store, job: str) -> int:
    return sum(r.state in TERMINAL for r in await _rows(store, KIND, job))


async def _events(store: Store, prefix: str) -> list[Any]:
    out: list[Any] = []
    seq = 0
    while page := await store.read_events(after_seq=seq, limit=5000, stream_prefix=prefix):
        out.extend(page)
        seq = page[-1].seq
    return out


async def summarise(store: Store, job: str, requests: int, model: str) -> PortingSummary:
    """Read a job's figures back from the store."""
    s = PortingSummary(job, requests, model)
    for r in await _rows(store, KIND, job):
        data = r.data
        s.outcomes[r.state] += 1
        if r.state == "rejected":
            s.rejected_by_reason[data["reason"]] += 1
        if r.state == "completed":
            took = datetime.fromisoformat(data["completed_at"]) - datetime.fromisoformat(
                data["requested_at"]
            )
            s.days_to_complete.append(took.total_seconds() / 86400)
    s.days_to_complete.sort()
    for m in await _rows(store, INBOX.kind, job):
        data = m.data
        s.messages[f"{data['type']}:{m.state}"] += 1
        if (
            data["type"] == "donor_answer"
            and data["verdict"] == "reject"
            and m.state == "delivered"
        ):
            s.donor_rejections[data["reason"]] += 1
    for e in await _events(store, f"wf:{KIND}:{job}:"):
        if e.type == "timer_noop":
            s.timer_noops += 1
        elif e.type == "transitioned" and str(e.payload.get("actor", "")).startswith("desk:"):
            s.manual_overrides += 1
    for e in await _events(store, f"sdb:port-intake:{job}/"):
        if e.type == "rejected":
            for reject in e.payload["rejects"]:
                s.intake_rejects[reject["reason_code"]] += 1
    for e in await _events(store, f"saga:{job}/"):
        if e.type in ("saga_completed", "saga_compensated", "saga_compensation_failed"):
            s.sagas[e.type.removeprefix("saga_")] += 1
        elif e.type == "compensation_done":
            s.compensations += 1
    seq = 0
    while page := await store.audit_entries(after_seq=seq, limit=5000):
        for entry in page:
            if (
                entry.actor == f"gate:{CUTOVER_GATE.name}"
                and entry.decision == "deny"
                and entry.subject.startswith(f"{job}:")
            ):
                s.gate_denials[entry.details.get("rule") or "?"] += 1
        seq = page[-1].seq
    for a in await store.list_approvals(limit=1_000_000):
        if a.run_id is None or not a.run_id.startswith((f"{job}/", f"{job}:")):
            continue
        s.escalations[_asked_by(a.requested_by)] += 1
        withdrawn = (a.decision or {}).get("decision") == "withdrawn"
        s.escalation_outcomes["withdrawn" if withdrawn else a.status] += 1
    totals = await store.usage_totals(job, include_children=True)
    s.prompt_tokens, s.completion_tokens, s.cost = (
        totals.prompt_tokens,
        totals.completion_tokens,
        totals.cost,
    )
    return s


def _asked_by(requested_by: str) -> str:
    if requested_by.startswith("boundary:"):
        return "intake"
    if requested_by.startswith("saga:"):
        return "cutover"
    if requested_by.startswith("runner:"):
        return "step_failure"
    return "donor_timeout"
