"""The renewal job's figures, read back from the store.

Everything here is computed from what the store holds, never from a process's memory, which is
why a run interrupted and resumed reports what an uninterrupted one does
(:meth:`RenewalSummary.figures`). A step re-run after an interruption asks the outreach gate
again, so the gate's audit can hold a denial twice; the summary counts one per row version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from seamline.budget import PriceTable
from seamline.models import Usage
from seamline.store import Store
from seamline.workloads.renewal._agent import KIND, TERMINAL, granted_discount
from seamline.workloads.renewal._catalog import catalog_stream
from seamline.workloads.renewal._customer import CONTRACTS, Customer

__all__ = ["RenewalSummary", "ReviewItem", "summarise"]

PRICES = PriceTable()


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """An accepted offer flagged by a warning rule and drawn for sampled human review."""

    customer: str
    key: str
    flags: tuple[str, ...]
    discount: str
    plan: str


@dataclass
class RenewalSummary:
    job: str
    customers: int
    outcomes: Counter[str] = field(default_factory=Counter)
    by_contract: dict[str, Counter[str]] = field(default_factory=dict)
    offers_sent: int = 0
    discounts: list[Decimal] = field(default_factory=list)
    """The discount of every renewal that kept one, at the list price it was sent at."""
    escalations: int = 0
    approvals: Counter[str] = field(default_factory=Counter)
    gate_denials: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    """Tokens and cost of the model calls whose answers the job recorded and used."""
    cost_by_customer: dict[str, Decimal] = field(default_factory=dict)
    charged_tokens: int = 0
    charged_cost: Decimal = Decimal(0)
    """What the budget ledger charged: the recorded calls, plus any call an interruption cut
    off after it was charged or reserved (so it can exceed the recorded spend)."""
    terminal_days: Counter[int] = field(default_factory=Counter)
    throttled: int = 0
    reassessed: int = 0
    reassess_reasons: Counter[str] = field(default_factory=Counter)
    injection_blocked: int = 0
    hallucinations_escalated: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    """Contracts whose model budget reached its alert line, by the declared route taken."""
    flagged: dict[str, ReviewItem] = field(default_factory=dict)
    """Accepted offers above a warning line (e.g. a discount over 20%), by boundary key."""
    reviews: list[ReviewItem] = field(default_factory=list)
    """The flagged offers drawn for sampled human review: the review list."""
    retention: Counter[str] = field(default_factory=Counter)
    world: list[tuple[str, str]] = field(default_factory=list)
    """The world's changes as published on the catalog stream: (type, what)."""
    step_failures: Counter[str] = field(default_factory=Counter)
    wall_seconds: float = 0.0
    steps: dict[str, int] = field(default_factory=dict)
    entered: dict[str, Counter[int]] = field(default_factory=dict)
    """state -> window day (0..90 from the window opening) -> instances that entered it."""
    opens: dict[str, datetime] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return sum(self.outcomes[t] for t in TERMINAL)

    @property
    def unfinished(self) -> Counter[str]:
        """Contracts outside a final state, by the state they stopped in."""
        return Counter({k: n for k, n in self.outcomes.items() if k not in TERMINAL and n})

    @property
    def review_flagged(self) -> int:
        return len(self.flagged)

    @property
    def discounts_granted(self) -> int:
        return sum(d > 0 for d in self.discounts)

    @property
    def mean_discount(self) -> Decimal:
        granted = [d for d in self.discounts if d > 0]
        return sum(granted, Decimal(0)) / len(granted) if granted else Decimal(0)

    def figures(self) -> dict[str, Any]:
        """Every figure that follows from the store alone: what two runs of one job with one
        seed must agree on, however often they were interrupted (not the wall time, nor the
        runner's step counts)."""
        return {
            "outcomes": dict(self.outcomes),
            "by_contract": {k: dict(v) for k, v in self.by_contract.items()},
            "offers_sent": self.offers_sent,
            "discounts": sorted(self.discounts),
            "escalations": self.escalations,
            "approvals": dict(self.approvals),
            "gate_denials": dict(self.gate_denials),
            "rejects": dict(self.rejects),
            "commits": self.commits,
            "tokens": (self.prompt_tokens, self.completion_tokens),
            "cost": self.cost,
            "cost_by_customer": dict(self.cost_by_customer),
            "terminal_days": dict(self.terminal_days),
            "reassessed": self.reassessed,
            "reassess_reasons": dict(self.reassess_reasons),
            "injection_blocked": self.injection_blocked,
            "hallucinations_escalated": self.hallucinations_escalated,
            "fallbacks": dict(self.fallbacks),
            "flagged": dict(self.flagged),
            "reviews": sorted(self.reviews, key=lambda r: r.key),
            "retention": dict(self.retention),
            "world": list(self.world),
            "step_failures": dict(self.step_failures),
            "entered": {k: dict(v) for k, v in self.entered.items()},
        }


async def summarise(
    store: Store, job: str, customers: Sequence[Customer], *, prices: PriceTable = PRICES
) -> RenewalSummary:
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
                s.discounts.append(granted_discount(r.data))
            if r.data.get("retention"):
                s.retention[r.data["retention"]] += 1
        after = rows[-1].id
    seq = 0
    while True:
        events = await store.read_events(after_seq=seq, limit=5000)
        if not events:
            break
        for e in events:
            _tally(s, e.stream, e.type, e.payload, job, prices)
        seq = events[-1].seq
    for state in TERMINAL:  # the step's own instant, not the batch's commit time
        s.terminal_days.update(s.entered.get(state, Counter()))
    await _denials(store, s)
    for a in await store.list_approvals(limit=100_000):
        if a.run_id is not None and (a.run_id == job or a.run_id.startswith(f"{job}/")):
            if a.kind == "escalation":
                s.escalations += 1
            s.approvals[f"{a.kind}:{a.status}"] += 1
    totals = await store.usage_totals(job, include_children=True)
    s.charged_tokens, s.charged_cost = totals.prompt_tokens + totals.completion_tokens, totals.cost
    return s


def _tally(
    s: RenewalSummary, stream: str, type: str, payload: Any, job: str, prices: PriceTable
) -> None:
    if stream.startswith(f"sdb:renewal-offer:{job}/"):
        _tally_boundary(s, stream, type, payload, prices)
    elif stream == "outbox" and type == "offer_sent":
        s.offers_sent += 1
    elif stream.startswith(f"wf:{KIND}:{job}:"):
        _tally_row(s, stream, type, payload)
    elif stream.startswith(f"budget:{job}/") and type == "budget_alert":
        s.fallbacks[payload.get("route", "?")] += 1
    elif stream == catalog_stream(job):
        what = {k: v for k, v in payload.items() if k != "effective_at"}
        s.world.append((type, ", ".join(f"{k}={v}" for k, v in what.items())))


def _tally_boundary(
    s: RenewalSummary, stream: str, type: str, payload: Any, prices: PriceTable
) -> None:
    customer = stream.rsplit("/", 1)[1].split(":", 1)[0]
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
    elif type == "accepted" and payload.get("flags"):
        key = stream.removeprefix("sdb:renewal-offer:")
        candidate = payload.get("candidate") or {}
        s.flagged[key] = ReviewItem(
            customer,
            key,
            tuple(payload["flags"]),
            str(candidate.get("discount", "")),
            str(candidate.get("plan", "")),
        )
    elif type == "review_sampled":
        key = stream.removeprefix("sdb:renewal-offer:")
        item = s.flagged.get(key) or ReviewItem(customer, key, tuple(payload["flags"]), "", "")
        s.reviews.append(item)
    elif type == "proposed":
        prompt_tokens, completion_tokens = payload["usage"]
        cost = prices.cost(payload["model"], Usage(prompt_tokens, completion_tokens))
        s.prompt_tokens += prompt_tokens
        s.completion_tokens += completion_tokens
        s.cost += cost
        s.cost_by_customer[customer] = s.cost_by_customer.get(customer, Decimal(0)) + cost


def _tally_row(s: RenewalSummary, stream: str, type: str, payload: Any) -> None:
    if type == "step_failed":
        s.step_failures[str(payload.get("error", "?"))[:200]] += 1
        return
    if type != "transitioned":
        return
    patch = payload.get("patch") or {}
    reason = patch.get("reassess")
    if payload.get("to") == "assessing" and reason:
        s.reassessed += 1
        code = patch.get("denied") or (patch.get("recheck") or {}).get("problem")
        s.reassess_reasons[code or reason] += 1
    opens = s.opens.get(stream[len(f"wf:{KIND}:") :])
    if opens is not None and payload.get("at"):
        day = (datetime.fromisoformat(payload["at"]) - opens).days
        s.entered.setdefault(payload["to"], Counter())[day] += 1


async def _denials(store: Store, s: RenewalSummary) -> None:
    """Gate denials by rule: one per audited decision, except that a step re-run after an
    interruption (same subject, rule and row version) counts once."""
    seen: set[tuple[str, str, object]] = set()
    seq = 0
    while page := await store.audit_entries(after_seq=seq, limit=5000):
        for entry in page:
            if not entry.actor.startswith("gate:") or entry.decision != "deny":
                continue
            details = entry.details if isinstance(entry.details, dict) else {}
            rule = details.get("rule") or "?"
            version = (details.get("inputs") or {}).get("row_version")
            key = (entry.subject, rule, version if version is not None else entry.seq)
            if key not in seen:
                seen.add(key)
                s.gate_denials[rule] += 1
        seq = page[-1].seq
