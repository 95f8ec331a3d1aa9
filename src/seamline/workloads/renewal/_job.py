"""The renewal job: a cohort through its 90-day windows on one store, in virtual time.

Everything the job knows lives in the store, so it can be interrupted at any point (Ctrl-C,
SIGKILL) and run again: rows that exist are not created twice, pending timers carry on, and
every commit has an idempotency key. The job id is derived from the seed and the cohort, so
the same command resumes the same job. The summary is computed from the store, not from
memory, which is also why an interrupted-then-resumed run reports the same figures as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from seamline.boundary import Runtime
from seamline.budget import PriceTable
from seamline.clock import VirtualClock
from seamline.models import Model, Usage
from seamline.patterns import Runner
from seamline.store import Duplicate, Store, UnitOfWork
from seamline.workloads.renewal._agent import KIND, TERMINAL, RenewalAgent
from seamline.workloads.renewal._customer import CONTRACTS, Customer
from seamline.workloads.renewal._offer import PolicyBook, SimulatedRenewalModel, stable_fraction

__all__ = [
    "CAMPAIGN_START",
    "RenewalSummary",
    "build_agent",
    "enqueue_renewals",
    "job_id",
    "run_renewals",
    "runner_for",
    "summarise",
]

CAMPAIGN_START = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = PriceTable()


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


@dataclass
class RenewalSummary:
    job: str
    customers: int
    outcomes: Counter[str] = field(default_factory=Counter)
    by_contract: dict[str, Counter[str]] = field(default_factory=dict)
    offers_sent: int = 0
    discounts: list[Decimal] = field(default_factory=list)
    escalations: int = 0
    approvals: Counter[str] = field(default_factory=Counter)
    gate_denials: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    cost_by_customer: dict[str, Decimal] = field(default_factory=dict)
    terminal_days: Counter[int] = field(default_factory=Counter)
    throttled: int = 0
    reassessed: int = 0
    injection_blocked: int = 0
    hallucinations_escalated: int = 0
    wall_seconds: float = 0.0
    steps: dict[str, int] = field(default_factory=dict)
    entered: dict[str, Counter[int]] = field(default_factory=dict)
    """state -> window day (0..90 from the window opening) -> instances that entered it."""
    opens: dict[str, datetime] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return sum(self.outcomes[t] for t in TERMINAL)


def build_agent(
    store: Store,
    customers: Sequence[Customer],
    *,
    clock: VirtualClock,
    seed: int,
    model: Model | None = None,
    on_terminal: Callable[[str], None] = lambda state: None,
) -> RenewalAgent:
    """The job's agent: its workflow, world and handlers, bound to this store and clock."""
    model = model or SimulatedRenewalModel("typical-v1", seed=seed, clock=clock)
    cheap = SimulatedRenewalModel("reliable-v1", seed=seed, clock=clock)
    return RenewalAgent(
        store,
        Runtime(store, clock),
        model,
        cheap,
        {c.customer_id: c for c in customers},
        job_id(customers, seed),
        seed,
        CAMPAIGN_START,
        PolicyBook(CAMPAIGN_START),
        on_terminal=on_terminal,
        households=households(customers),
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
    store: Store, agent: RenewalAgent, *, clock: VirtualClock, owner: str, concurrency: int = 64
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


async def run_renewals(
    store: Store,
    customers: Sequence[Customer],
    *,
    clock: VirtualClock,
    seed: int = 7,
    model: Model | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    concurrency: int = 64,
) -> RenewalSummary:
    """Run (or resume) the renewal job for ``customers`` and summarise it from the store.

    ``clock`` must be the virtual clock the store was opened with (it stamps what is written);
    start it at :data:`CAMPAIGN_START`. On a resumed store it is moved on to the first pending
    timer, where the interrupted run stopped.
    """
    started = time.perf_counter()
    job = job_id(customers, seed)
    pending = await store.next_timer_due()
    if pending is not None:
        clock.advance_to(pending)  # resuming: virtual time continues where it stopped
    done = [await _count_terminal(store, job)]
    total = len(customers)

    def terminal(_: str) -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], total)

    agent = build_agent(store, customers, clock=clock, seed=seed, model=model, on_terminal=terminal)
    await _create(store, agent, customers, {"seed": seed, "source": {"synthetic": total}})
    if on_progress is not None:
        on_progress(done[0], total)
    runner = runner_for(store, agent, clock=clock, owner=f"{job}-runner", concurrency=concurrency)
    report = await runner.run_until_idle()
    summary = await summarise(store, job, customers)
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
            continue  # this chunk was created before an interruption
        unit = UnitOfWork()
        for c in part:
            agent.add_customer(unit, c)
        outcome = await store.apply(unit)
        if isinstance(outcome, Duplicate):  # partly created: fall back to one by one
            for c in part:
                single = UnitOfWork()
                agent.add_customer(single, c)
                await store.apply(single)


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


async def summarise(store: Store, job: str, customers: Sequence[Customer]) -> RenewalSummary:
    """Read the job's figures back from the store."""
    s = RenewalSummary(job, len(customers))
    contract = {c.customer_id: c.contract for c in customers}
    s.by_contract = {k: Counter() for k in CONTRACTS}
    after = f"{job}:"
    while True:
        rows = [
            r
            for r in await store.list_rows(kind=KIND, after_id=after, limit=5000)
            if r.id.startswith(f"{job}:")
        ]
        if not rows:
            break
        for r in rows:
            s.outcomes[r.state] += 1
            s.by_contract[contract[r.data["customer"]]][r.state] += 1
            s.opens[r.id] = datetime.fromisoformat(r.data["opens"])
            if r.state in ("renewed_with_offer", "restructured") and r.data.get("offer"):
                s.discounts.append(Decimal(r.data["offer"]["discount"]))
        after = rows[-1].id
    seq = 0
    while True:
        events = await store.read_events(after_seq=seq, limit=5000)
        if not events:
            break
        for e in events:
            _tally(s, e.stream, e.type, e.payload, job)
        seq = events[-1].seq
    for state in TERMINAL:  # the step's own instant, not the batch's commit time
        s.terminal_days.update(s.entered.get(state, Counter()))
    for entry in await _all_audit(store):
        if entry.actor.startswith("gate:") and entry.decision == "deny":
            s.gate_denials[entry.details.get("rule") or "?"] += 1
    for a in await store.list_approvals(limit=100_000):
        if a.run_id is not None and (a.run_id == job or a.run_id.startswith(f"{job}/")):
            if a.kind == "escalation":
                s.escalations += 1
            s.approvals[f"{a.kind}:{a.status}"] += 1
    totals = await store.usage_totals(job, include_children=True)
    s.prompt_tokens, s.completion_tokens, s.cost = (
        totals.prompt_tokens,
        totals.completion_tokens,
        totals.cost,
    )
    return s


def _tally(s: RenewalSummary, stream: str, type: str, payload: Any, job: str) -> None:
    if stream.startswith(f"sdb:renewal-offer:{job}/"):
        if type == "rejected":
            for r in payload["rejects"]:
                s.rejects[f"{r['verifier']}: {r['reason_code']}"] += 1
                s.injection_blocked += r["reason_code"] in (
                    "prompt_injection",
                    "echoes_untrusted_instructions",
                )
                s.hallucinations_escalated += r["reason_code"] == "hallucinated_discount"
        elif type == "committed":
            s.commits += 1
        elif type == "proposed":
            customer = stream.rsplit("/", 1)[1].split(":", 1)[0]
            prompt_tokens, completion_tokens = payload["usage"]
            cost = PRICES.cost(payload["model"], Usage(prompt_tokens, completion_tokens))
            s.cost_by_customer[customer] = s.cost_by_customer.get(customer, Decimal(0)) + cost
    elif stream == "outbox" and type == "offer_sent":
        s.offers_sent += 1
    elif stream.startswith(f"wf:{KIND}:{job}:") and type == "transitioned":
        if payload.get("to") == "assessing" and payload.get("patch", {}).get("reassess"):
            s.reassessed += 1
        opens = s.opens.get(stream[len(f"wf:{KIND}:") :])
        if opens is not None and payload.get("at"):
            day = (datetime.fromisoformat(payload["at"]) - opens).days
            s.entered.setdefault(payload["to"], Counter())[day] += 1


async def _all_audit(store: Store) -> list[Any]:
    out: list[Any] = []
    seq = 0
    while True:
        page = await store.audit_entries(after_seq=seq, limit=5000)
        if not page:
            return out
        out.extend(page)
        seq = page[-1].seq
