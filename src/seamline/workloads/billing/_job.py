"""The billing job: publish each cycle's facts to the log, scan them, summarise from the store;
and its replay: fork the log, scan the fork with the recorded proposals, compare decisions.

Everything the job knows is in the store, so running it again resumes it: facts already
published are refused as duplicates (idempotency keys), the scanner continues from its
offset, and the summary is read back from the log and the ledger, not kept in memory. The job
id depends on the customers and the seed, not on the number of cycles, so running more cycles
extends the same log.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from seamline.clock import Clock, VirtualClock
from seamline.errors import ConfigError
from seamline.models import Model, ModelResponse, RecordedModel, RecordingKey, Usage
from seamline.patterns import fork_stream, publish
from seamline.store import Duplicate, Event, Store, UnitOfWork
from seamline.workloads.billing._credit import BOUNDARY, simulated_credit_model
from seamline.workloads.billing._effects import (
    NotificationFailed,
    Notifier,
    RecordedNotifier,
    SimulatedNotifier,
)
from seamline.workloads.billing._events import (
    FORK_MARKER,
    REGISTRY,
    AnomalyDetected,
    BillingFact,
    ChargePosted,
    CreditCompensated,
    CreditDenied,
    CreditEscalated,
    CreditIssued,
    CreditNeedsHuman,
    CreditOutcome,
    CreditPosted,
    CreditProposed,
    CreditReversed,
    decisions_stream,
    log_stream,
    notices_stream,
)
from seamline.workloads.billing._generate import billing_events, cycle_start
from seamline.workloads.billing._scanner import CreditScanner

if TYPE_CHECKING:  # the renewal package is imported only for the type: it loads its report
    from seamline.workloads.renewal import Customer

__all__ = [
    "BillingSummary",
    "Decision",
    "ReplayReport",
    "decisions",
    "job_id",
    "recorded_model",
    "replay_billing",
    "run_billing",
    "summarise",
]


BATCH = 500
"""Facts per transaction when a cycle is published."""


def job_id(customers: Sequence[Customer], seed: int) -> str:
    digest = hashlib.sha256("|".join(c.customer_id for c in customers).encode()).hexdigest()
    return f"billing-s{seed}-{digest[:8]}"


@dataclass(frozen=True, slots=True)
class BillingSummary:
    """A billing job as the store records it."""

    job: str
    customers: int
    cycles: int
    events: int
    anomalies: Mapping[str, int]
    proposed: int
    committed: int
    denied: Mapping[str, int]
    """``stage:rule`` -> count."""
    escalated: int
    compensated: int
    needs_human: int
    credited: Decimal
    """Money credited and not reversed."""
    reversed: Decimal
    rejects: Mapping[str, int]
    """The boundary's rejects by reason code (each fed back to the model)."""
    models: tuple[str, ...]
    simulated: bool
    tokens: int
    cost: Decimal
    wall_seconds: float = 0.0
    kind: Literal["billing_summary"] = "billing_summary"

    @property
    def anomalies_found(self) -> int:
        return sum(self.anomalies.values())

    @property
    def denied_total(self) -> int:
        return sum(self.denied.values())


async def run_billing(
    store: Store,
    *,
    customers: Sequence[Customer],
    cycles: int,
    seed: int,
    clock: Clock,
    model: Model | None = None,
    notifier: Notifier | None = None,
    token_budget: int = 2_000_000,
    on_cycle: Callable[[int, int], None] | None = None,
) -> BillingSummary:
    """Run (or resume) the billing job for ``customers`` over ``cycles`` monthly cycles.

    ``clock`` is the clock the store was opened with; a :class:`VirtualClock` is moved to
    each cycle's start before its facts are published. Without ``model`` the simulated one
    answers (seeded, labelled ``sim:``); without ``notifier`` a simulated notification
    service bounces a seeded 3% of notices.
    """
    started = time.perf_counter()
    job = job_id(customers, seed)
    scanner = CreditScanner(
        store,
        scope=job,
        model=model or simulated_credit_model(seed=seed, clock=clock),
        clock=clock,
        notifier=notifier or SimulatedNotifier(store, seed=seed),
        token_budget=token_budget,
    )
    by_cycle: dict[int, list[BillingFact]] = {}
    for cycle, fact in billing_events(customers, cycles=cycles, seed=seed):
        by_cycle.setdefault(cycle, []).append(fact)
    for cycle in range(1, cycles + 1):
        if isinstance(clock, VirtualClock):
            clock.advance_to(cycle_start(cycle))
        await _publish_cycle(store, job, by_cycle.get(cycle, []))
        await scanner.drain()  # the scan after each cycle's billing run
        if on_cycle is not None:
            on_cycle(cycle, cycles)
    summary = await summarise(store, job)
    return replace(summary, wall_seconds=time.perf_counter() - started)


async def _publish_cycle(store: Store, job: str, facts: Sequence[BillingFact]) -> None:
    """Publish a cycle's facts as the billing system posts them: in batches of up to
    :data:`BATCH`, each one transaction. Facts go in in order, so a batch whose last fact is
    in the log was published before (the run is resuming); a batch refused as a duplicate
    was published in part, and its facts are published one by one, the old ones refused."""
    stream = log_stream(job)
    for i in range(0, len(facts), BATCH):
        *head, last = facts[i : i + BATCH]
        key = f"{job}:{last.event_id}"
        if await store.event_by_key(key) is not None:
            continue
        unit = UnitOfWork()
        for fact in head:
            unit.append_event(
                stream, REGISTRY.name_of(fact), fact, idempotency_key=f"{job}:{fact.event_id}"
            )
        done = await publish(store, REGISTRY, stream, last, idempotency_key=key, unit=unit)
        if isinstance(done, Duplicate):
            for fact in facts[i : i + BATCH]:
                one = f"{job}:{fact.event_id}"
                await publish(store, REGISTRY, stream, fact, idempotency_key=one)


async def _events(store: Store, *, prefix: str) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000, stream_prefix=prefix):
        out.extend(page)
        after = page[-1].seq
    return out


async def _stream(store: Store, stream: str) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await store.read_stream(stream, after=after, limit=5000):
        out.extend(page)
        after = page[-1].stream_seq
    return out


async def summarise(store: Store, job: str) -> BillingSummary:
    """Read the job's figures back from its log, its decisions and its ledger."""
    log = [e for e in await _stream(store, log_stream(job)) if e.type != FORK_MARKER]
    charges = [f for f in map(REGISTRY.decode, log) if isinstance(f, ChargePosted)]
    anomalies: Counter[str] = Counter()
    denied: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for e in await _stream(store, decisions_stream(job)):
        fact = REGISTRY.decode(e)
        kinds[e.type] += 1
        if isinstance(fact, AnomalyDetected):
            anomalies[fact.type] += 1
        elif isinstance(fact, CreditDenied):
            denied[f"{fact.stage}:{fact.rule}"] += 1
    credited = reversed_ = Decimal(0)
    for e in await _events(store, prefix=f"ledger:{job}:"):
        fact = REGISTRY.decode(e)
        if isinstance(fact, CreditPosted):
            credited += fact.amount
        elif isinstance(fact, CreditReversed):
            reversed_ += fact.amount
    rejects: Counter[str] = Counter()
    models: set[str] = set()
    simulated = False
    for e in await _events(store, prefix=f"sdb:{BOUNDARY}:{job}:"):
        if e.type == "rejected":
            rejects.update(r["reason_code"] for r in e.payload["rejects"])
        elif e.type == "proposed":
            models.add(e.payload["model"])
            simulated = simulated or bool(e.payload["simulated"])
    usage = await store.usage_totals(job)
    return BillingSummary(
        job=job,
        customers=len({c.customer_id for c in charges}),
        cycles=max((c.cycle for c in charges), default=0),
        events=len(log),
        anomalies=dict(sorted(anomalies.items())),
        proposed=kinds["CreditProposed"],
        committed=kinds["CreditIssued"],
        denied=dict(sorted(denied.items())),
        escalated=kinds["CreditEscalated"],
        compensated=kinds["CreditCompensated"],
        needs_human=kinds["CreditNeedsHuman"],
        credited=credited - reversed_,
        reversed=reversed_,
        rejects=dict(rejects.most_common()),
        models=tuple(sorted(models)),
        simulated=simulated,
        tokens=usage.total_tokens,
        cost=usage.cost,
    )


# --- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What the scanner decided for one anomaly, as compared between a run and its replay."""

    anomaly_id: str
    log_position: int
    outcome: str
    amount: Decimal | None = None
    reason_code: str | None = None
    prompt_hash: str | None = None
    detail: str = ""
    kind: Literal["decision"] = "decision"


async def decisions(store: Store, scope: str, *, upto: int | None = None) -> list[Decision]:
    """The scanner's decisions in ``scope``, in log order; only anomalies found at or before
    log position ``upto`` when it is given."""
    found: dict[str, Decision] = {}
    for e in await _stream(store, decisions_stream(scope)):
        fact = REGISTRY.decode(e)
        if isinstance(fact, AnomalyDetected):
            found[fact.anomaly_id] = Decision(fact.anomaly_id, fact.log_position, "detected")
            continue
        if not isinstance(fact, CreditOutcome):
            continue
        aid = fact.anomaly_id
        d = found[aid]
        if isinstance(fact, CreditProposed):
            d = replace(
                d,
                outcome="proposed",
                amount=fact.amount,
                reason_code=fact.reason_code,
                prompt_hash=e.prompt_hash,
            )
        elif isinstance(fact, CreditDenied):
            d = replace(d, outcome=f"denied:{fact.stage}", detail=fact.rule)
        elif isinstance(fact, CreditEscalated):
            d = replace(d, outcome="escalated")
        elif isinstance(fact, CreditIssued):
            d = replace(d, outcome="issued")
        elif isinstance(fact, CreditCompensated):
            d = replace(d, outcome="compensated", detail=f"{fact.failed_step}: {fact.reason}")
        elif isinstance(fact, CreditNeedsHuman):
            d = replace(d, outcome="needs_human")
        found[aid] = d
    out = sorted(found.values(), key=lambda d: (d.log_position, d.anomaly_id))
    return [d for d in out if upto is None or d.log_position <= upto]


async def recorded_model(store: Store, scope: str) -> RecordedModel:
    """Every proposal the credit boundary recorded in ``scope``, for recovery replay."""
    prefix = f"sdb:{BOUNDARY}:{scope}:{BOUNDARY}:"
    recordings: dict[RecordingKey, ModelResponse] = {}
    for e in await _events(store, prefix=prefix):
        if e.type != "proposed":
            continue
        p = e.payload
        recordings[(BOUNDARY, e.stream[len(prefix) :], int(p["attempt"]))] = ModelResponse(
            text=p["raw"],
            model=p["model"],
            model_version=e.model_version or "",
            usage=Usage(*p["usage"]),
            latency_ms=p["latency_ms"],
            finish_reason=p["finish_reason"],
            simulated=bool(p["simulated"]),
        )
    return RecordedModel(recordings, name="recorded")


async def recorded_notifications(store: Store, scope: str) -> dict[str, str]:
    """Credit id -> the error of each notice the original run failed to deliver."""
    failures: dict[str, str] = {}
    prefix = f"{NotificationFailed.__name__}: "
    for e in await _events(store, prefix=f"saga:{scope}:"):
        if e.type == "step_failed" and e.payload["step"] == "notify_customer":
            credit_id = e.stream[len(f"saga:{scope}:") :]
            failures[credit_id] = str(e.payload["error"]).removeprefix(prefix)
    return failures


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """A recovery replay of a job's log on a fork, compared decision by decision."""

    job: str
    branch: str
    at: int
    copied: int
    original: tuple[Decision, ...]
    replayed: tuple[Decision, ...]
    original_records: tuple[int, int]
    """Events in the original's decisions, ledger and outbox before and after the replay."""
    kind: Literal["replay_report"] = "replay_report"

    @property
    def original_untouched(self) -> bool:
        return self.original_records[0] == self.original_records[1]

    @property
    def diverged(self) -> tuple[tuple[Decision | None, Decision | None], ...]:
        mine = {d.anomaly_id: d for d in self.original}
        theirs = {d.anomaly_id: d for d in self.replayed}
        ids = sorted(set(mine) | set(theirs))
        return tuple(
            (mine.get(i), theirs.get(i)) for i in ids if _same(mine.get(i), theirs.get(i)) is False
        )

    @property
    def identical(self) -> bool:
        return not self.diverged


def _same(a: Decision | None, b: Decision | None) -> bool:
    if a is None or b is None:
        return False
    return (a.log_position, a.outcome, a.amount, a.reason_code, a.prompt_hash, a.detail) == (
        b.log_position,
        b.outcome,
        b.amount,
        b.reason_code,
        b.prompt_hash,
        b.detail,
    )


async def replay_billing(
    store: Store,
    job: str,
    *,
    clock: Clock,
    at: int | None = None,
    branch: str | None = None,
    token_budget: int = 2_000_000,
) -> ReplayReport:
    """Fork the job's log at ``at`` (default: all of it) and scan the fork from offset 0 with
    the recorded proposals and notification outcomes (recovery replay: no live model call).
    The branch's effects go to its own sandbox ledger and outbox; the original's log,
    decisions and ledger are only read."""
    source = log_stream(job)
    length = len(await _stream(store, source))
    at = length if at is None else at
    if not 0 <= at <= length:
        raise ConfigError(f"replay at position {at}: the log {source} holds {length} events")
    scope = branch or await _free_branch(store, job)
    before = await _records(store, job)
    forked = await fork_stream(store, source, at, log_stream(scope))
    if isinstance(forked, Duplicate):
        raise ConfigError(f"branch {scope} exists already; name another, or leave it to pick one")
    failures = await recorded_notifications(store, job)
    scanner = CreditScanner(
        store,
        scope=scope,
        model=await recorded_model(store, job),
        clock=clock,
        notifier=RecordedNotifier(SimulatedNotifier(store, seed=0, bounce_rate=0.0), failures),
        token_budget=token_budget,
        replay=True,
    )
    await scanner.drain()
    original = await decisions(store, job, upto=at)
    replayed = await decisions(store, scope)
    after = await _records(store, job)
    return ReplayReport(
        job, scope, at, forked.copied, tuple(original), tuple(replayed), (before, after)
    )


async def _records(store: Store, scope: str) -> int:
    """How many events the scope's decisions, ledger and outbox hold."""
    ledger = await _events(store, prefix=f"ledger:{scope}:")
    held = [await _stream(store, s) for s in (decisions_stream(scope), notices_stream(scope))]
    return len(ledger) + sum(map(len, held))


async def _free_branch(store: Store, job: str) -> str:
    n = 1
    while await store.read_stream(log_stream(f"{job}@replay-{n}"), limit=1):
        n += 1
    return f"{job}@replay-{n}"
