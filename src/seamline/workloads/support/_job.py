"""The support job: a batch of simulated conversations on one store, and its summary.

The job id comes from the seed and the configuration, so running the same job again on the
same store replays the recorded turns (no model call, no second change) and reports the same
summary. The summary is read back from the store — the conversations' turn records, the
boundary's events, the gates' audit, the escalations and the usage ledger — not from memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import time
from collections import Counter
from typing import Any

from seamline.boundary import Runtime
from seamline.budget import PriceTable
from seamline.clock import Clock, VirtualClock
from seamline.errors import ConfigError
from seamline.models import Model
from seamline.store import Event, Store
from seamline.workloads.renewal import synthetic_cohort
from seamline.workloads.support._assistant import ASSISTANT, CHANGES_STREAM, SupportAssistant
from seamline.workloads.support._chat import plan_conversations
from seamline.workloads.support._lookups import Lookups, SimulatedSystems
from seamline.workloads.support._reply import BOUNDARY, load_support_policy
from seamline.workloads.support._simulated import PROFILE, SimulatedSupportModel

__all__ = ["SupportSummary", "job_id", "run_support", "summarise"]


@dataclasses.dataclass(frozen=True)
class SupportSummary:
    """What a support job did, read from the store. Equal runs give equal summaries (the
    wall time is not compared)."""

    job: str
    model: str
    simulated: bool
    conversations: int
    turns: int
    answered: int
    """Turns answered with a verified action (the rest got a fallback)."""
    within_budget: int
    """Turns whose model latency stayed within the latency budget."""
    fallbacks: dict[str, int]
    """Fallback turns by reason: latency_budget, no_valid_proposal, gate_denied,
    systems_unavailable."""
    changes_committed: int
    actions: dict[str, int]
    gate_denials: dict[str, int]
    """Gate denials by rule (``role:change_plan``, a policy rule id, ...)."""
    rejects: dict[str, int]
    """Rejected proposals by verifier."""
    reject_reasons: dict[str, int]
    escalations: int
    injection_conversations: int
    injection_changes: int
    """Changes committed in conversations that opened with an injection attempt (must be 0)."""
    p95_latency_ms: float
    """95th percentile of the turns' model latency (simulated latency for a simulated model)."""
    latency_budget_ms: float
    tokens: int
    wall_seconds: float = dataclasses.field(default=0.0, compare=False)

    @property
    def fallback_total(self) -> int:
        return sum(self.fallbacks.values())


def job_id(*, seed: int, conversations: int, principal: str, budget_s: float, model: str) -> str:
    material = f"{conversations}|{principal}|{budget_s}|{model}"
    return f"support-s{seed}-{hashlib.sha256(material.encode()).hexdigest()[:8]}"


async def run_support(
    store: Store,
    *,
    conversations: int,
    seed: int,
    clock: Clock,
    model: Model | None = None,
    principal: str = ASSISTANT,
    latency_budget_s: float = 2.0,
    concurrency: int = 8,
    prices: PriceTable | None = None,
) -> SupportSummary:
    """Run (or replay) ``conversations`` simulated chats and summarise them from the store.

    ``clock`` is the clock the store was opened with: a :class:`VirtualClock` makes the
    simulated model's latency cost no real time; any other clock also cuts each model call off
    in real time when the turn's budget runs out. ``principal`` is who the assistant acts as
    (only ``support-assistant`` may change plans). Customers, their messages and the account
    systems are SIMULATED and seeded; so is the default model (``sim:typical-v2``). A real
    model needs its price in ``prices`` (simulated models are priced by default).
    """
    if not 0 <= conversations <= 7043:
        raise ConfigError(
            f"conversations must be 0 to 7,043 (one customer each), got {conversations}"
        )
    if not 0.0 < latency_budget_s <= 120.0:
        raise ConfigError(f"latency_budget_s must be in (0, 120] seconds, got {latency_budget_s}")
    if not 1 <= concurrency <= 256:
        raise ConfigError(f"concurrency must be 1 to 256, got {concurrency}")
    started = time.perf_counter()
    model = model or SimulatedSupportModel(PROFILE, seed=seed, clock=clock)
    job = job_id(
        seed=seed,
        conversations=conversations,
        principal=principal,
        budget_s=latency_budget_s,
        model=model.name,
    )
    customers = synthetic_cohort(conversations, seed=seed)
    systems = SimulatedSystems({c.customer_id: c for c in customers}, seed=seed)
    assistant = SupportAssistant(
        store,
        Runtime(store, clock, prices or PriceTable()),
        model,
        Lookups(store, systems, clock=clock),
        load_support_policy(),
        job,
        principal,
        latency_budget_s,
        wall_clock=not isinstance(clock, VirtualClock),
    )
    slots = asyncio.Semaphore(concurrency)

    async def one(conv: Any) -> None:
        async with slots:
            await assistant.converse(conv)

    async with asyncio.TaskGroup() as group:
        for conv in plan_conversations(customers, seed=seed):
            group.create_task(one(conv))
    summary = await summarise(
        store, job, model=model.name, latency_budget_ms=latency_budget_s * 1000
    )
    return dataclasses.replace(summary, wall_seconds=round(time.perf_counter() - started, 3))


async def _events(store: Store, prefix: str) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000, stream_prefix=prefix):
        out.extend(page)
        after = page[-1].seq
    return out


async def summarise(
    store: Store, job: str, *, model: str, latency_budget_ms: float
) -> SupportSummary:
    """Read a support job's figures back from the store."""
    turns = [e.payload for e in await _events(store, f"support:chat:{job}:") if e.type == "turn"]
    changes = [
        e.payload
        for e in await _events(store, CHANGES_STREAM)
        if e.type == "plan_changed" and e.payload.get("job") == job
    ]
    rejects: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for e in await _events(store, f"sdb:{BOUNDARY}:{job}:"):
        if e.type == "rejected":
            for r in e.payload["rejects"]:
                rejects[r["verifier"]] += 1
                reasons[r["reason_code"]] += 1
    denials: Counter[str] = Counter()
    after = 0
    while page := await store.audit_entries(after_seq=after, limit=5000):
        for entry in page:
            gated = entry.actor.startswith("gate:") and entry.subject.startswith(f"{job}:")
            if gated and entry.decision == "deny":
                denials[entry.details.get("rule") or "?"] += 1
        after = page[-1].seq
    escalations = sum(
        1
        for a in await store.list_approvals(limit=1_000_000)
        if a.kind == "escalation" and (a.run_id or "").startswith(f"{job}/")
    )
    injections = {t["conversation"] for t in turns if t["scenario"] == "injection"}
    latencies = sorted(t["latency_ms"] for t in turns if t["model_calls"] > 0)
    usage = await store.usage_totals(job, include_children=True)
    return SupportSummary(
        job=job,
        model=model,
        simulated=model.startswith("sim:"),
        conversations=len({t["conversation"] for t in turns}),
        turns=len(turns),
        answered=sum(t["kind"] == "answered" for t in turns),
        within_budget=sum(bool(t["within_budget"]) for t in turns),
        fallbacks=dict(
            sorted(Counter(t["reason"] for t in turns if t["kind"] == "fallback").items())
        ),
        changes_committed=len(changes),
        actions=dict(
            sorted(Counter(t["action"] for t in turns if t["kind"] == "answered").items())
        ),
        gate_denials=dict(sorted(denials.items())),
        rejects=dict(sorted(rejects.items())),
        reject_reasons=dict(sorted(reasons.items())),
        escalations=escalations,
        injection_conversations=len(injections),
        injection_changes=sum(c["conversation"] in injections for c in changes),
        p95_latency_ms=_p95(latencies),
        latency_budget_ms=latency_budget_ms,
        tokens=usage.total_tokens,
    )


def _p95(sorted_values: list[float]) -> float:
    """Nearest-rank 95th percentile; 0 for no values."""
    if not sorted_values:
        return 0.0
    return float(sorted_values[math.ceil(0.95 * len(sorted_values)) - 1])
