"""The renewal job: a cohort through its 90-day windows on one store, in virtual time.

Everything the job knows lives in the store, so it can be interrupted at any point (Ctrl-C,
SIGKILL) and run again: rows that exist are not created twice, pending timers carry on, and
every commit has an idempotency key. The job id is derived from the seed and the cohort, so
the same command resumes the same job. The summary is computed from the store, not from
memory, which is also why an interrupted-then-resumed run reports the same figures as an
uninterrupted one.

Day -90 of each window is opened by a trigger that passes a gate: the first trigger for a
contract creates its row and schedules its steps (an audited allow); any later trigger for the
same contract is an audited deny (rule ``window.duplicate_trigger``), never a second row. The
row's unique id is what decides, so two triggers that race are told apart by the store.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from seamline.boundary import Runtime
from seamline.budget import CheaperModel, EscalateToHuman, PriceTable, Route
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.models import Model
from seamline.patterns import GateAllow, GateDeny, Runner, RunnerReport, resume
from seamline.store import Duplicate, Store, UnitOfWork
from seamline.workloads.renewal._agent import KIND, TERMINAL, RenewalAgent
from seamline.workloads.renewal._customer import Customer
from seamline.workloads.renewal._offer import PolicyBook, SimulatedRenewalModel, stable_fraction
from seamline.workloads.renewal._summary import PRICES, RenewalSummary, summarise

__all__ = [
    "CAMPAIGN_START",
    "JobProgress",
    "RenewalSummary",
    "build_agent",
    "enqueue_renewals",
    "job_id",
    "run_renewals",
    "runner_for",
    "summarise",
    "trigger_window",
]

CAMPAIGN_START = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW_GATE = "window-open"
TRIGGER_PRINCIPAL = "renewal-campaign"


def job_id(customers: Sequence[Customer], seed: int) -> str:
    digest = hashlib.sha256("|".join(c.customer_id for c in customers).encode()).hexdigest()
    return f"renewals-s{seed}-{digest[:8]}"


def households(customers: Sequence[Customer]) -> dict[str, str]:
    """About 2% of customers share a household with the next one: a contract merger."""
    pairs: dict[str, str] = {}
    ids = [c.customer_id for c in customers]
    for a, b in itertools.pairwise(ids):
        if a not in pairs and b not in pairs and stable_fraction("household", a) < 0.02:
            pairs[a], pairs[b] = b, a
    return pairs


def fallback_route(
    model: Model, fallback: Model | None, *, seed: int, clock: VirtualClock
) -> Route:
    """What the budget does at 80%: a simulated run falls back to the reliable simulated
    profile; a real model to the configured cheaper real model, else to a person. A real run
    never falls back to a simulated model."""
    simulated = model.name.startswith("sim:")
    if fallback is not None:
        if not simulated and fallback.name.startswith("sim:"):
            raise ConfigError(
                f"the budget fallback of real model {model.name!r} is simulated model "
                f"{fallback.name!r}; name a cheaper real model, or none to hand the contract "
                "to a person at 80% of its budget"
            )
        return CheaperModel(fallback)
    if simulated:
        return CheaperModel(SimulatedRenewalModel("reliable-v1", seed=seed, clock=clock))
    return EscalateToHuman()


def build_agent(
    store: Store,
    customers: Sequence[Customer],
    *,
    clock: VirtualClock,
    seed: int,
    model: Model | None = None,
    fallback: Model | None = None,
    prices: PriceTable = PRICES,
    budget_tokens: int = 12_000,
    on_terminal: Callable[[str], None] = lambda state: None,
) -> RenewalAgent:
    """The job's agent: its workflow, world and handlers, bound to this store and clock.
    ``prices`` must price ``model`` and ``fallback``; ``budget_tokens`` is each contract's
    model budget."""
    model = model or SimulatedRenewalModel("typical-v1", seed=seed, clock=clock)
    route = fallback_route(model, fallback, seed=seed, clock=clock)
    prices.price(model.name)  # an unpriced model is refused before any row moves
    if isinstance(route, CheaperModel):
        prices.price(route.model.name)
    return RenewalAgent(
        store,
        Runtime(store, clock, prices),
        model,
        route,
        {c.customer_id: c for c in customers},
        job_id(customers, seed),
        seed,
        CAMPAIGN_START,
        PolicyBook(CAMPAIGN_START),
        on_terminal=on_terminal,
        households=households(customers),
        budget_tokens=budget_tokens,
    )


async def trigger_window(
    store: Store, agent: RenewalAgent, customer: Customer
) -> GateAllow | GateDeny:
    """Day -90's trigger for one contract: open its window, unless it is open already — then
    the gate refuses it with an audited deny, and nothing else is written."""
    unit = UnitOfWork()
    allow = _window_allow(agent, customer)
    agent.add_customer(unit, customer)
    _audit(unit, allow, agent, customer)
    outcome = await store.apply(unit)
    if not isinstance(outcome, Duplicate):
        return allow
    deny = GateDeny(
        "open_window",
        TRIGGER_PRINCIPAL,
        agent.row_id(customer.customer_id),
        "policy",
        "window.duplicate_trigger",
        f"the renewal window of {customer.customer_id} opening "
        f"{agent.window_opens(customer.customer_id):%Y-%m-%d} is open already; a second "
        "trigger would open a second row",
        None,
    )
    await store.apply(_audit(UnitOfWork(), deny, agent, customer))
    return deny


def _window_allow(agent: RenewalAgent, c: Customer) -> GateAllow:
    return GateAllow("open_window", TRIGGER_PRINCIPAL, agent.row_id(c.customer_id), None)


def _audit(
    unit: UnitOfWork, decision: GateAllow | GateDeny, agent: RenewalAgent, c: Customer
) -> UnitOfWork:
    deny = isinstance(decision, GateDeny)
    return unit.audit(
        actor=f"gate:{WINDOW_GATE}",
        action=decision.action,
        subject=decision.subject,
        decision=decision.kind,
        reason=decision.reason if isinstance(decision, GateDeny) else "first trigger",
        details={
            "principal": decision.principal,
            "inputs": {
                "contract": c.customer_id,
                "opens": agent.window_opens(c.customer_id).isoformat(),
            },
            "gate": "policy" if deny else None,
            "rule": decision.rule if isinstance(decision, GateDeny) else None,
            "flags": [],
        },
    )


async def enqueue_renewals(
    store: Store,
    customers: Sequence[Customer],
    *,
    clock: VirtualClock,
    seed: int,
    source: Mapping[str, Any],
) -> str:
    """Create the job's rows and timers without running them (for ``seamline worker``);
    ``source`` says how workers rebuild the cohort: ``{"data": PATH}`` or
    ``{"synthetic": N}``. Idempotent: enqueuing twice creates nothing new."""
    agent = build_agent(store, customers, clock=clock, seed=seed)
    await _create(store, agent, customers, {"seed": seed, "source": dict(source)})
    return agent.job


def runner_for(
    store: Store, agent: RenewalAgent, *, clock: VirtualClock, owner: str, concurrency: int = 128
) -> Runner:
    return Runner(
        store,
        [agent.workflow, agent.world],
        clock=clock,
        owner=owner,
        batch=concurrency * 4,
        concurrency=concurrency,
        tick=timedelta(days=1),
    )


@dataclass(frozen=True, slots=True)
class JobProgress:
    """How far a job is: the virtual campaign day reached (of ``days``, when the last window
    closes) and the windows closed (of ``contracts``)."""

    day: int
    days: int
    closed: int
    contracts: int
    kind: Literal["job_progress"] = "job_progress"


async def run_renewals(
    store: Store,
    customers: Sequence[Customer],
    *,
    clock: VirtualClock,
    seed: int = 7,
    model: Model | None = None,
    fallback: Model | None = None,
    prices: PriceTable = PRICES,
    budget_tokens: int = 12_000,
    source: Mapping[str, Any] | None = None,
    on_progress: Callable[[JobProgress], None] | None = None,
    concurrency: int = 128,
) -> RenewalSummary:
    """Run (or resume) the renewal job for ``customers`` and summarise it from the store.

    ``clock`` must be the virtual clock the store was opened with (it stamps what is written);
    start it at :data:`CAMPAIGN_START`. On a resumed store it is moved on to the first pending
    timer, where the interrupted run stopped. ``source`` is recorded on the job for workers
    to rebuild the cohort (``{"data": PATH, "limit": N}``; default: a synthetic cohort).
    """
    started = time.perf_counter()
    job = job_id(customers, seed)
    pending = await store.next_timer_due()
    if pending is not None:
        clock.advance_to(pending)  # resuming: virtual time continues where it stopped
    closed = [await _count_terminal(store, job)]
    total = len(customers)

    def terminal(_: str) -> None:
        closed[0] += 1

    agent = build_agent(
        store,
        customers,
        clock=clock,
        seed=seed,
        model=model,
        fallback=fallback,
        prices=prices,
        budget_tokens=budget_tokens,
        on_terminal=terminal,
    )
    last = max((agent.window_opens(c.customer_id) for c in customers), default=CAMPAIGN_START)
    days = (last - CAMPAIGN_START).days + 90

    def progress(_: RunnerReport | None = None) -> None:
        if on_progress is not None:
            day = min(days, max(0, (clock.now() - CAMPAIGN_START).days))
            on_progress(JobProgress(day, days, closed[0], total))

    config = {"seed": seed, "source": dict(source or {"synthetic": total})}
    await _create(store, agent, customers, config)
    await _reenter_parked(store, agent, clock.now())
    progress()
    runner = runner_for(store, agent, clock=clock, owner=f"{job}-runner", concurrency=concurrency)
    report = await runner.run_until_idle(on_step=progress)
    summary = await summarise(store, job, customers, prices=prices)
    summary.throttled = report.counts["throttled"]
    summary.steps = dict(report.counts)
    summary.wall_seconds = time.perf_counter() - started
    return summary


async def _create(
    store: Store, agent: RenewalAgent, customers: Sequence[Customer], config: Mapping[str, Any]
) -> None:
    world = UnitOfWork()
    agent.add_world(world, config)
    await store.apply(world)  # a Duplicate means the job exists already: resuming
    chunk = 500
    for i in range(0, len(customers), chunk):
        part = customers[i : i + chunk]
        if await store.get_row(agent.row_id(part[-1].customer_id)) is not None:
            continue  # this chunk was created before an interruption: the job resumes
        unit = UnitOfWork()
        for c in part:
            agent.add_customer(unit, c)
            _audit(unit, _window_allow(agent, c), agent, c)
        outcome = await store.apply(unit)
        if isinstance(outcome, Duplicate):  # someone else triggered some: one by one
            for c in part:
                await trigger_window(store, agent, c)


async def _reenter_parked(store: Store, agent: RenewalAgent, now: datetime) -> int:
    """Re-enter the job's rows that a failed step parked (retried, then escalated by the
    runner) at the state they stopped in: running the job again after fixing the cause (a
    missing price, an endpoint that was down) carries them on. Returns how many."""
    n = 0
    for a in await store.list_approvals(status="pending", limit=100_000):
        row_id = a.row_id or ""
        if a.kind != "escalation" or not a.requested_by.startswith("runner:"):
            continue
        if not row_id.startswith(f"{agent.job}:"):
            continue
        workflow = agent.world if row_id == f"{agent.job}:world" else agent.workflow
        n += await resume(
            store,
            workflow,
            row_id,
            now,
            principal="renewals-run",
            reason="the job was run again: its parked steps are tried once more",
            approval_id=a.id,
        )
    return n


async def _count_terminal(store: Store, job: str) -> int:
    n = 0
    after = f"{job}:"
    while True:
        rows = await store.list_rows(kind=KIND, after_id=after, limit=5000)
        rows = [r for r in rows if r.id.startswith(f"{job}:")]
        if not rows:
            return n
        n += sum(r.state in TERMINAL for r in rows)
        after = rows[-1].id
