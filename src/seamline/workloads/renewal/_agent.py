"""The 90-day contract-renewal agent: one durable P5 row per contract.

States, in order: window_open -> assessing -> offer_ready -> offer_sent -> (accepted |
awaiting_approval -> accepted/approval_denied | churning | silent) -> day 0: renewed,
renewed_with_offer, restructured, churned or expired. assessing may escalate to needs_person
(-> offer_ready or no_offer); offer_ready returns to assessing when re-verification fails.

Day -90 the window opens; signals are gathered in parallel through hardened tools (P1), and
for customers at risk a retention case is opened as a saga (P2). The model proposes an
assessment and an offer through the boundary, shown the catalog in force. The world changes on
a row of its own, which publishes each change to the job's catalog stream (P3): a policy bump,
the end of life of the DSL plan (in force for each contract from day -47 of its own window),
a price change. On day -47 and again on day -30 the offer is re-verified under the facts in
force; on day -30 it goes through the gate (the policy in force, with the discount it really
gives at the list price in force) and the throttles (P4, P6), the send recorded in the outbox
in the same transaction as the move. Day -7 the customer's answer arrives (simulated) and
mergers or large discounts wait for a person (P6). Day 0 ends the window.

Customers, support notes, approvers and answers are SIMULATED, seeded, and labelled so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from seamline.boundary import Committed, Escalated, Failed, Runtime
from seamline.budget import Budget, Route
from seamline.models import Model
from seamline.patterns import (
    Gate,
    GateAllow,
    Goto,
    Sleep,
    StateMachine,
    StepContext,
    Throttle,
    ThrottlePolicy,
    Workflow,
)
from seamline.store import Store, UnitOfWork
from seamline.workloads.renewal._catalog import EOL_WINDOW_DAY, WORLD_SCHEDULE, Catalog, recheck
from seamline.workloads.renewal._customer import Customer
from seamline.workloads.renewal._facts import (
    current_plan,
    renewal_input,
    support_notes,
    tenant_of,
)
from seamline.workloads.renewal._offer import (
    PolicyBook,
    RenewalOffer,
    offer_boundary,
    stable_fraction,
)
from seamline.workloads.renewal._signals import Signals, fresh_attempts
from seamline.workloads.renewal._world import WORLD, WORLD_LAG, WORLD_MACHINE, Campaign

__all__ = [
    "EOL_AFTER",
    "KIND",
    "MACHINE",
    "TERMINAL",
    "WORLD",
    "RenewalAgent",
    "current_plan",
    "granted_discount",
    "renewal_input",
    "support_notes",
    "tenant_of",
]

KIND = "renewal"
TERMINAL = ("renewed", "renewed_with_offer", "restructured", "churned", "expired")
_CLOSING = frozenset(TERMINAL)
AUTO_APPROVE = Decimal("0.20")
APPROVAL_SLA = timedelta(hours=48)
ESCALATION_SLA = timedelta(hours=72)
EOL_AFTER = dict(WORLD_SCHEDULE)["dsl_end_of_life"]
"""The DSL end of life is announced 43 days into the campaign (day -47 of the first windows)."""

MACHINE = StateMachine(
    kind=KIND,
    initial="window_open",
    transitions={
        "window_open": frozenset({"assessing"}),
        "assessing": frozenset({"offer_ready", "needs_person"}),
        "needs_person": frozenset({"offer_ready", "no_offer"}),
        "offer_ready": frozenset({"offer_sent", "assessing"}),
        "offer_sent": frozenset({"awaiting_approval", "accepted", "churning", "silent"}),
        "awaiting_approval": frozenset({"accepted", "approval_denied"}),
        "accepted": frozenset({"renewed", "renewed_with_offer", "restructured"}),
        "approval_denied": frozenset({"renewed", "churned"}),
        "no_offer": frozenset({"renewed", "churned"}),
        "churning": frozenset({"churned"}),
        "silent": frozenset({"expired"}),
    },
    terminal=_CLOSING,
)


@dataclass
class RenewalAgent:
    """The workflow and its handlers, bound to one job (store, model, seed, campaign start).
    ``fallback`` is the route the budget takes at 80% of ``budget_tokens`` per contract."""

    store: Store
    runtime: Runtime
    model: Model
    fallback: Route
    customers: Mapping[str, Customer]
    job: str
    seed: int
    start: datetime
    book: PolicyBook
    on_terminal: Callable[[str], None] = lambda state: None
    households: Mapping[str, str] = field(default_factory=dict)
    budget_tokens: int = 12_000

    def __post_init__(self) -> None:
        self.boundary = offer_boundary(self.model, self.book)
        self.throttle = Throttle(
            "outreach",
            ThrottlePolicy(
                per_minute=30, per_tenant_per_hour=2000, money_per_day=Decimal("250000")
            ),
        )
        self.signals = Signals(
            self.store, self.customers, job=self.job, seed=self.seed, clock=self.runtime.clock
        )
        self.campaign = Campaign(self.store, self.job, self.start, self.book)
        handlers = {
            "window_open": self.open_window,
            "assessing": self.assess,
            "needs_person": self.person_decides,
            "offer_ready": self.send_offer,
            "offer_sent": self.customer_answers,
            "awaiting_approval": self.approver_decides,
            **dict.fromkeys(
                ("accepted", "approval_denied", "no_offer", "churning", "silent"), self.close
            ),
        }
        self.workflow = Workflow(MACHINE, handlers=handlers)
        self.world = Workflow(
            WORLD_MACHINE,
            handlers={
                "campaign_open": self.campaign.bump_policy,
                "policy_bumped": self.campaign.end_dsl,
                "dsl_end_of_life": self.campaign.change_price,
            },
        )

    # --- the timeline ---------------------------------------------------------------------

    def window_opens(self, customer_id: str) -> datetime:
        """Contracts end across a quarter: each window opens on its own day."""
        return self.start + timedelta(days=int(stable_fraction("window", customer_id) * 90))

    def day(self, row_data: Mapping[str, Any], day: int) -> datetime:
        return datetime.fromisoformat(row_data["opens"]) + timedelta(days=90 + day)

    def send_at(self, row_data: Mapping[str, Any]) -> datetime:
        """Outreach goes out on day -30, in business hours (09:00-17:00), each contract at
        its own minute: the throttles cap bursts, they are not the schedule."""
        minute = int(stable_fraction("send", row_data["customer"]) * 480)
        return self.day(row_data, -30) + timedelta(hours=9, minutes=minute)

    def next_check(self, row_data: Mapping[str, Any], now: datetime) -> datetime:
        """When a ready offer is looked at next: day -47 (the catalog check), then its send."""
        check = self.day(row_data, EOL_WINDOW_DAY)
        return check if now < check else max(now, self.send_at(row_data))

    def add_customer(self, unit: UnitOfWork, c: Customer) -> None:
        opens = self.window_opens(c.customer_id)
        data = {
            "customer": c.customer_id,
            "contract": c.contract,
            "opens": opens.isoformat(),
            "tenant": tenant_of(c),
            "plan": current_plan(c),
        }
        MACHINE.create(unit, self.row_id(c.customer_id), data, actor=self.job)
        self.workflow.schedule_entry(
            unit, self.row_id(c.customer_id), "window_open", 1, self.start, delay=opens - self.start
        )

    def add_world(self, unit: UnitOfWork, config: Mapping[str, Any] | None = None) -> None:
        """The job's world row; ``config`` (the cohort and seed) lets workers rebuild the job."""
        row = f"{self.job}:world"
        WORLD_MACHINE.create(unit, row, dict(config or {}), actor=self.job)
        self.world.schedule_entry(
            unit, row, "campaign_open", 1, self.start, delay=self.campaign.first_step()
        )

    def row_id(self, customer_id: str) -> str:
        return f"{self.job}:{customer_id}"

    async def catalog(self, now: datetime) -> Catalog | None:
        return await self.campaign.catalog(now)

    # --- day -90: signals --------------------------------------------------------------------

    async def open_window(self, ctx: StepContext) -> Goto:
        c = self.customers[ctx.row.data["customer"]]
        with fresh_attempts():
            signals, case = await self.signals.gather(c)
        return Goto("assessing", {"signals": signals, "retention": case})

    # --- the boundary: assessment and offer --------------------------------------------------

    async def assess(self, ctx: StepContext) -> Goto | Sleep:
        catalog = await self.catalog(ctx.now)
        if catalog is None:
            return Sleep(ctx.now + WORLD_LAG, "the world's change due now is not published yet")
        c = self.customers[ctx.row.data["customer"]]
        item = renewal_input(
            c,
            seed=self.seed,
            version=ctx.row.version,
            signals=ctx.row.data.get("signals", {}),
            catalog=catalog,
            policy_version=self.book.at(ctx.now).version,
            household=self.households.get(c.customer_id),
        )
        run_id = f"{self.job}/{c.customer_id}"  # one run per contract, inside the job
        # One spender at a time: the contract's steps are serialised by its row's
        # compare-and-swap, so the budget needs no per-call reservations (Budget.shared).
        budget = Budget(run_id, max_tokens=self.budget_tokens, on_alert=self.fallback, shared=False)
        result = await self.boundary.run(item, runtime=self.runtime, run_id=run_id, budget=budget)
        if isinstance(result, Committed):
            return Goto(
                "offer_ready",
                {"offer": result.result, "flags": list(result.flags)},
                at=self.next_check(ctx.row.data, ctx.now),
            )
        if isinstance(result, Escalated):
            return Goto(
                "needs_person",
                {"escalation": result.approval_id},
                at=ctx.now + _human_delay(result.approval_id, ESCALATION_SLA),
            )
        if result.reason_code.startswith("budget_"):
            return self._budget_spent(ctx, run_id, result)
        raise RuntimeError(f"offer boundary failed: {result.reason_code}: {result.message}")

    def _budget_spent(self, ctx: StepContext, run_id: str, result: Failed) -> Goto:
        """The contract's model budget is spent: a person decides, as for any escalation."""
        approval_id = f"{ctx.row.id}:v{ctx.row.version}:budget"
        ctx.unit.open_approval(
            id=approval_id,
            kind="escalation",
            reason=result.message,
            request={
                "customer": ctx.row.data["customer"],
                "decision_needed": "choose the renewal offer for this customer, or none",
                "options": ["approve an edited proposal", "reject"],
                "tried": [],
            },
            requested_by="renewal-agent",
            run_id=run_id,
            row_id=ctx.row.id,
            due_at=ctx.now + ESCALATION_SLA,
        )
        return Goto(
            "needs_person",
            {"escalation": approval_id},
            at=ctx.now + _human_delay(approval_id, ESCALATION_SLA),
        )

    async def person_decides(self, ctx: StepContext) -> Goto | Sleep:
        """A (simulated) retention specialist settles the escalation, or its SLA passes."""
        from seamline.patterns import decide_approval

        catalog = await self.catalog(ctx.now)
        if catalog is None:
            return Sleep(ctx.now + WORLD_LAG, "the world's change due now is not published yet")
        approval_id = ctx.row.data["escalation"]
        approval = await self.store.get_approval(approval_id)
        c = self.customers[ctx.row.data["customer"]]
        ready_at = self.next_check(ctx.row.data, ctx.now)
        if approval is not None and approval.status in ("approved", "edited"):
            # a person decided (in the console or the CLI): their offer, or the agent's last
            # proposal they approved, goes on to the send, where it is re-verified
            offer = _decided_offer(approval.decision, approval.request)
            if offer is not None:
                return Goto(
                    "offer_ready",
                    {"offer": offer.model_dump(mode="json"), "decided_by": approval.decided_by},
                    at=ready_at,
                )
        if approval is not None and approval.status == "pending":
            if stable_fraction("escalation-edit", approval_id) < 0.7:
                plan = catalog.replacement(current_plan(c))
                offer = RenewalOffer(
                    customer_id=c.customer_id,
                    churn_risk="high",
                    plan=plan,
                    term_months=12 if c.contract == "Month-to-month" else 24,
                    discount=Decimal("0.10"),
                    monthly_price=(catalog.prices[plan] * Decimal("0.90")).quantize(
                        Decimal("0.01")
                    ),
                    message="A loyalty offer from our retention team, 10% off your plan.",
                )
                await decide_approval(
                    self.store,
                    approval_id,
                    principal="sim-specialist",
                    decision="edit",
                    reason="compliant offer instead",
                    edited=offer.model_dump(mode="json"),
                )
                return Goto("offer_ready", {"offer": offer.model_dump(mode="json")}, at=ready_at)
            await decide_approval(
                self.store,
                approval_id,
                principal="sim-specialist",
                decision="reject",
                reason="no offer for this customer",
            )
        return Goto("no_offer", at=self.day(ctx.row.data, 0))

    # --- day -47 and day -30: re-verified, then outreach through the gate --------------------

    async def send_offer(self, ctx: StepContext) -> Goto | Sleep:
        catalog = await self.catalog(ctx.now)
        if catalog is None:
            return Sleep(ctx.now + WORLD_LAG, "the world's change due now is not published yet")
        data = ctx.row.data
        c = self.customers[data["customer"]]
        offer = data["offer"]
        opens = datetime.fromisoformat(data["opens"])
        facts = catalog.as_record()
        check = recheck(offer, catalog, opens=opens, now=ctx.now)
        if check.problem is not None:
            return Goto(
                "assessing",
                {
                    "reassess": check.message,
                    "recheck": {"problem": check.problem, **facts},
                    "restructure": check.problem == "plan_end_of_life",
                },
            )
        send_at = self.send_at(data)
        if ctx.now < send_at:  # day -47: the offer stands under the facts in force
            ctx.unit.append_event(
                MACHINE.stream(ctx.row.id),
                "rechecked",
                {"at": ctx.now.isoformat(), "plan": offer["plan"], **facts},
            )
            return Sleep(send_at, "re-verified on day -47; sent on day -30")
        return await self._send(ctx, c, offer, check.list_price, check.discount, catalog)

    async def _send(
        self,
        ctx: StepContext,
        c: Customer,
        offer: Mapping[str, Any],
        list_price: Decimal,
        discount: Decimal,
        catalog: Catalog,
    ) -> Goto:
        policy = self.book.at(ctx.now)
        gate = Gate(
            "outreach",
            roles={"send_offer": frozenset({"renewal-agent"})},
            policy=self.book.verifier(policy.version),
        )
        # The discount the gate checks is the one the price really gives at today's list
        # price; the row version tells a re-run of this step from a later decision.
        inputs = {
            "discount": str(discount),
            "monthly_price": offer["monthly_price"],
            "list_price": str(list_price),
            "message": offer["message"],
            "plan": offer["plan"],
            "row_version": ctx.row.version,
        }
        decision = await gate.check(
            self.store,
            action="send_offer",
            principal="renewal-agent",
            subject=ctx.row.id,
            inputs=inputs,
            now=ctx.now,
            tenant=tenant_of(c),
        )
        if not isinstance(decision, GateAllow):
            # Re-verified under the policy and prices in force and refused: propose again.
            moved = "" if discount == Decimal(offer["discount"]) else f"; list price {list_price}"
            why = f"{decision.rule} under policy {policy.version}{moved}"
            return Goto(
                "assessing",
                {"reassess": why, "denied": decision.rule, "recheck": catalog.as_record()},
            )
        money = list_price * discount * 12
        throttle = await self.throttle.current(self.store)
        throttle.take_into(ctx.unit, now=ctx.now, tenant=tenant_of(c), money=money)
        gate.allow_into(ctx.unit, decision, inputs)
        sent = {"list_price": str(list_price), "discount": str(discount)}
        ctx.unit.record_commit(
            f"{ctx.row.id}:outreach",
            {"offer": dict(offer), "policy": policy.version, "catalog_seq": catalog.seq, **sent},
            run_id=self.job,
            boundary="outreach",
        )
        ctx.unit.append_event(
            "outbox",
            "offer_sent",
            {
                "customer": c.customer_id,
                "plan": offer["plan"],
                "policy": policy.version,
                "at": ctx.now.isoformat(),
                **sent,
            },
            idempotency_key=f"{ctx.row.id}:outreach",
        )
        return Goto(
            "offer_sent",
            {"sent_under": policy.version, "sent": sent},
            at=self.day(ctx.row.data, -7),
        )

    # --- day -7: the customer answers (simulated) --------------------------------------------

    async def customer_answers(self, ctx: StepContext) -> Goto:
        from seamline.patterns import request_approval

        c = self.customers[ctx.row.data["customer"]]
        offer = ctx.row.data["offer"]
        discount = granted_discount(ctx.row.data)
        draw = stable_fraction(self.seed, "answer", c.customer_id)
        accept_p = 0.92 if not c.churn else min(0.6, 0.15 + 1.2 * float(discount))
        if draw > 0.97:
            return Goto("silent", at=self.day(ctx.row.data, 0))
        if draw > accept_p * 0.97:
            return Goto("churning", at=self.day(ctx.row.data, 0))
        merger = offer.get("merge_with")
        if discount > AUTO_APPROVE or merger:
            approval_id = f"{ctx.row.id}:close"
            reason = (
                f"contract merger with {merger}"
                if merger
                else f"discount {discount} above the auto-approve line {AUTO_APPROVE}"
            )
            await request_approval(
                self.store,
                id=approval_id,
                reason=reason,
                request={"customer": c.customer_id, "offer": offer, "contract": c.contract},
                requested_by="renewal-agent",
                now=ctx.now,
                sla=APPROVAL_SLA,
                row_id=ctx.row.id,
                run_id=self.job,
            )
            return Goto(
                "awaiting_approval",
                {"approval": approval_id},
                at=ctx.now + _human_delay(approval_id, APPROVAL_SLA),
            )
        return Goto("accepted", at=self.day(ctx.row.data, 0))

    async def approver_decides(self, ctx: StepContext) -> Goto:
        """A (simulated) approver decides within the SLA, or the SLA's default deny applies."""
        from seamline.patterns import decide_approval, expire_approval

        approval_id = ctx.row.data["approval"]
        approval = await self.store.get_approval(approval_id)
        closing = self.day(ctx.row.data, 0)
        if approval is not None and approval.status == "pending":
            if approval.due_at is not None and ctx.now >= approval.due_at:
                await expire_approval(self.store, approval, ctx.now)  # this one only
            else:
                yes = stable_fraction("approve", approval_id) < 0.85
                await decide_approval(
                    self.store,
                    approval_id,
                    principal="sim-approver",
                    decision="approve" if yes else "reject",
                    reason="within guidelines" if yes else "too costly",
                )
            approval = await self.store.get_approval(approval_id)
        granted = approval is not None and approval.status == "approved"
        return Goto("accepted" if granted else "approval_denied", at=closing)

    # --- day 0 -------------------------------------------------------------------------------

    async def close(self, ctx: StepContext) -> Goto:
        c = self.customers[ctx.row.data["customer"]]
        state = ctx.row.state
        offer = ctx.row.data.get("offer") or {}
        if state == "accepted":
            if offer.get("plan") != ctx.row.data["plan"]:
                outcome = "restructured"
            elif granted_discount(ctx.row.data) > 0:
                outcome = "renewed_with_offer"
            else:
                outcome = "renewed"
        elif state in ("approval_denied", "no_offer"):
            outcome = "churned" if c.churn else "renewed"
        elif state == "churning":
            outcome = "churned"
        else:
            outcome = "expired"
        self.on_terminal(outcome)
        return Goto(outcome)


def granted_discount(row_data: Mapping[str, Any]) -> Decimal:
    """The discount a sent offer gives at the list price it was sent at (else as proposed)."""
    sent = row_data.get("sent") or {}
    offer = row_data.get("offer") or {}
    return Decimal(str(sent.get("discount", offer.get("discount", "0"))))


def _decided_offer(decision: Any, request: Any) -> RenewalOffer | None:
    """The offer a person's decision stands for: the edited one, or on a plain approve the
    agent's last proposal that parsed (None: there is nothing to send)."""
    if isinstance(decision, dict) and decision.get("edited"):
        return RenewalOffer.model_validate(decision["edited"])
    tried = request.get("tried", []) if isinstance(request, dict) else []
    for attempt in reversed(tried):
        if attempt.get("candidate"):
            return RenewalOffer.model_validate(attempt["candidate"])
    return None


def _human_delay(approval_id: str, sla: timedelta) -> timedelta:
    """When a simulated person looks at a request: mostly within the SLA, sometimes never."""
    draw = stable_fraction("delay", approval_id)
    if draw < 0.2:
        return sla  # nobody looked: the SLA's fallback applies
    return timedelta(hours=2 + draw * (sla.total_seconds() / 3600 - 4))
