"""The number-porting workflow: one durable P5 row per port request, moved by timers.

``requested`` (the model reads the form through the intake boundary) -> ``validated`` (the
request goes to the donor carrier, behind a role gate and a per-donor throttle) ->
``submitted_to_donor`` (days of waiting; the row's only timer is the five-day timeout) ->
``scheduled`` (a cutover slot in our maintenance window) -> ``cutting_over`` (the gate, then the
saga: reserve the number in our switch, activate the SIM, release from the donor) ->
``completed``. Side roads: ``intake_review`` and ``donor_escalated`` wait for a person under an
SLA with default deny; ``cutover_stuck`` waits for a person after a compensation kept failing;
``rejected`` and ``cancelled`` end it.

The outside parties — the donor, the customer, the operations desk — never call into a
handler. Their messages are rows of their own (kind ``porting-inbox``) delivered when due: a
delivery checks the port row and moves it by compare-and-swap in the same unit as the
message's settlement, or records why it no longer applies. A port row that moved while a
timer waited makes that timer a recorded ``timer_noop``: the donor's answer beats the
timeout, a customer's cancellation beats everything still pending, a person's manual
reschedule beats the old slot. ``cutting_over`` is the point of no return: it is entered
before any network change, so a cancellation arriving during a cutover is refused, never
half-applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from seamline.boundary import Committed, Escalated, Reject, Runtime
from seamline.budget import Budget, EscalateToHuman
from seamline.models import Model
from seamline.patterns import (
    GateAllow,
    Goto,
    NotAuthorised,
    Saga,
    SagaCompensated,
    SagaCompleted,
    SagaNeedsHuman,
    SagaStep,
    Sleep,
    StepContext,
    Throttle,
    ThrottlePolicy,
    TransitionProposal,
    Workflow,
    decide_approval,
    expire_overdue,
)
from seamline.store import Approval, NotPending, Row, Store, UnitOfWork
from seamline.workloads.porting._intake import (
    INTAKE_SLA,
    IntakeInput,
    intake_boundary,
    verify_edit,
)
from seamline.workloads.porting._machine import (
    AGENT,
    CANCELLABLE,
    CUTOVER_GATE,
    DONOR_TIMEOUT,
    ESCALATION_SLA,
    INBOX,
    KIND,
    MACHINE,
    MAX_CUTOVERS,
    MAX_SUBMISSIONS,
    OUTBOX,
    SUBMIT_GATE,
)
from seamline.workloads.porting._world import DeskAction, SimulatedNetwork, World, next_window
from seamline.workloads.renewal import Customer

__all__ = ["PortingAgent"]


@dataclass
class PortingAgent:
    """The workflow, its handlers and the inbox, bound to one job."""

    store: Store
    runtime: Runtime
    model: Model
    world: World
    job: str
    on_terminal: Callable[[str], None] = lambda outcome: None

    def __post_init__(self) -> None:
        self.intake = intake_boundary(self.model)
        self.network = SimulatedNetwork(self.world)
        net = self.network
        self.saga = Saga(
            "port-cutover",
            [
                SagaStep("reserve_number", net.reserve_number, net.unreserve_number),
                SagaStep("activate_sim", net.activate_sim, net.deactivate_sim),
                # Last, because it is the hardest to undo: the donor lets go of the number.
                SagaStep("release_from_donor", net.release_from_donor, net.snap_back),
            ],
            compensation_attempts=3,
            backoff_initial_s=0.01,
            backoff_max_s=0.05,
            escalation_sla=ESCALATION_SLA,
        )
        self.throttle = Throttle("donor-submissions", ThrottlePolicy(per_tenant_per_hour=12))
        self.workflow = Workflow(
            MACHINE,
            handlers={
                state: self._counted(handler)
                for state, handler in (
                    ("requested", self.read_form),
                    ("intake_review", self.intake_deadline),
                    ("validated", self.submit),
                    ("submitted_to_donor", self.donor_timeout),
                    ("donor_escalated", self.donor_deadline),
                    ("scheduled", self.await_slot),
                    ("cutting_over", self.cut_over),
                )
            },
        )
        self.inbox = Workflow(INBOX, handlers={"queued": self.deliver})

    def row_id(self, customer_id: str) -> str:
        return f"{self.job}:{customer_id}"

    def run_id(self, customer_id: str) -> str:
        return f"{self.job}/{customer_id}"

    def add_request(self, unit: UnitOfWork, c: Customer, start: datetime) -> None:
        """A port request row, due when the customer's form arrives, and the customer's
        (simulated) change of mind, if any."""
        s = self.world.subscriber(c.customer_id)
        arrives = self.world.arrival(c.customer_id, start)
        row = self.row_id(c.customer_id)
        data = {
            "customer": c.customer_id,
            "form": self.world.form(s),
            "requested_at": arrives.isoformat(),
            "submissions": [],
        }
        MACHINE.create(unit, row, data, actor="web-form")
        self.workflow.schedule_entry(unit, row, "requested", 1, start, delay=arrives - start)
        cancel_at = self.world.cancellation(c.customer_id, arrives)
        if cancel_at is not None:
            self._queue(unit, row, "customer_cancel", {"from": "customer"}, at=cancel_at, now=start)

    # --- intake -----------------------------------------------------------------------------

    async def read_form(self, ctx: StepContext) -> Goto:
        cid = ctx.row.data["customer"]
        item = IntakeInput(customer_id=cid, version=ctx.row.version, form=ctx.row.data["form"])
        run_id = self.run_id(cid)
        budget = Budget(run_id, max_tokens=8_000, on_alert=EscalateToHuman())
        result = await self.intake.run(item, runtime=self.runtime, run_id=run_id, budget=budget)
        if isinstance(result, Committed):
            return Goto("validated", {"request": result.result, "validated_by": "model"})
        if isinstance(result, Escalated):
            s = self.world.subscriber(cid)
            action = self.world.desk_on_intake(result.approval_id, s, ctx.now, INTAKE_SLA)
            if action is not None:
                self._queue_desk(
                    ctx.unit, ctx.row.id, result.approval_id, action, now=ctx.now, about="intake"
                )
            approval = await self.store.get_approval(result.approval_id)
            tried = (approval.request or {}).get("tried", []) if approval else []
            problems = sorted({r["reason_code"] for a in tried for r in a["rejects"]})
            return Goto(
                "intake_review",
                {"escalation": result.approval_id, "intake_problems": problems},
                at=approval.due_at if approval and approval.due_at else ctx.now + INTAKE_SLA,
            )
        raise RuntimeError(f"intake boundary failed: {result.reason_code}: {result.message}")

    async def intake_deadline(self, ctx: StepContext) -> Goto | Sleep:
        """The intake escalation's SLA: apply what a person decided, or the fallback."""
        approval = await self._settled(ctx, ctx.row.data["escalation"])
        if isinstance(approval, Sleep):
            return approval
        return self._after_intake(ctx.row, approval, ctx.now)

    def _after_intake(self, row: Row, approval: Approval, now: datetime) -> Goto:
        decision = approval.decision or {}
        if approval.status == "expired":
            return Goto("rejected", {"reason": "intake_sla_expired", "via": "sla_fallback"})
        if approval.status == "rejected":
            return Goto("rejected", {"reason": "intake_rejected", "by": approval.decided_by})
        if not decision.get("edited"):  # approve without an edit leaves nothing to submit
            return Goto("rejected", {"reason": "intake_needs_edit", "by": approval.decided_by})
        item = IntakeInput(customer_id=row.data["customer"], version=row.version, form="")
        checked = verify_edit(decision["edited"], item, now=now)
        if isinstance(checked, Reject):
            return Goto("rejected", {"reason": "intake_edit_invalid", "rule": checked.rule_id})
        return Goto(
            "validated",
            {"request": checked.model_dump(mode="json"), "validated_by": approval.decided_by},
        )

    # --- the donor --------------------------------------------------------------------------

    async def submit(self, ctx: StepContext) -> Goto:
        """Send the port request to the donor (an outbox message, once per submission)."""
        row, req = ctx.row, ctx.row.data["request"]
        n = len(row.data["submissions"]) + 1
        inputs = {"donor": req["donor"], "number": req["number"], "submission": n}
        decision = await SUBMIT_GATE.check(
            self.store,
            action="submit_port",
            principal=AGENT,
            subject=row.id,
            inputs=inputs,
            now=ctx.now,
        )
        if not isinstance(decision, GateAllow):
            raise RuntimeError(f"the submission gate refused {row.id}: {decision.reason}")
        SUBMIT_GATE.allow_into(ctx.unit, decision, inputs)
        self.throttle.take_into(ctx.unit, now=ctx.now, tenant=req["donor"])
        key = f"{row.id}:submit:{n}"
        # The PIN goes to the donor's API only; the ledger and the outbox carry a mask.
        sent = {**inputs, "donor_account": req["donor_account"], "pin": "****"}
        ctx.unit.record_commit(key, sent, run_id=self.job, boundary="donor-submission")
        ctx.unit.append_event(
            OUTBOX, "port_submitted", {"port": row.id, **sent}, idempotency_key=key
        )
        s = self.world.subscriber(row.data["customer"])
        answer = self.world.donor_answer(s, n, req, ctx.now)
        if answer is not None:  # the simulated donor queues its reply; a silent one never does
            message = {
                "from": f"donor:{req['donor']}",
                "submission": n,
                "verdict": answer.verdict,
                "reason": answer.reason,
                "donor_ref": answer.donor_ref,
                "cutover_at": answer.cutover_at.isoformat() if answer.cutover_at else None,
            }
            self._queue(
                ctx.unit, row.id, "donor_answer", message, at=answer.at, now=ctx.now, suffix=str(n)
            )
        submissions = [*row.data["submissions"], {"n": n, "at": ctx.now.isoformat(), "key": key}]
        return Goto(
            "submitted_to_donor",
            {"submission": n, "submissions": submissions},
            at=ctx.now + DONOR_TIMEOUT,
        )

    async def donor_timeout(self, ctx: StepContext) -> Goto:
        """Five days without an answer (had one come, the row would have moved and this timer
        would be a no-op): a person decides, under an SLA with default deny."""
        row, req = ctx.row, ctx.row.data["request"]
        n, donor = row.data["submission"], req["donor"]
        escalation, due = f"esc:{row.id}:donor:{n}", ctx.now + ESCALATION_SLA
        can_resubmit = n < MAX_SUBMISSIONS
        options = [
            {
                "option": "cancel the port",
                "decision": "reject",
                "expected_impact": f"the port ends rejected (donor_no_answer); the customer is "
                f"told and keeps the number at {donor}; nothing to undo on our network",
            }
        ]
        if can_resubmit:
            options.insert(
                0,
                {
                    "option": "resubmit",
                    "decision": "approve",
                    "expected_impact": f"submission {n + 1} of {MAX_SUBMISSIONS} goes to {donor}; "
                    f"the customer waits up to {DONOR_TIMEOUT.days} more days; nothing changes "
                    "on our network until the donor accepts",
                },
            )
        tried = [
            {"at": s["at"], "action": f"port request submission {s['n']} sent to {donor}"}
            for s in row.data["submissions"]
        ]
        tried.append(
            {"at": ctx.now.isoformat(), "action": f"waited {DONOR_TIMEOUT.days} days: no answer"}
        )
        waited = f"in {DONOR_TIMEOUT.days} days"
        reason = f"{donor} has not answered port request {n} for {req['number']} {waited}"
        ctx.unit.open_approval(
            id=escalation,
            kind="escalation",
            reason=reason,
            request={
                "workflow": KIND,
                "port": row.id,
                "number": req["number"],
                "donor": donor,
                "what_was_tried": tried,
                "decision_needed": f"{reason}: resubmit, or cancel the port?"
                if can_resubmit
                else f"{reason}, for the last time: cancel the port?",
                "options": options,
                "fallback_on_timeout": "deny",
                "fallback_means": "the port is cancelled as rejected (donor_no_answer)",
                "sla_hours": ESCALATION_SLA.total_seconds() / 3600,
            },
            requested_by=AGENT,
            run_id=self.run_id(row.data["customer"]),
            row_id=row.id,
            due_at=due,
        )
        ctx.unit.append_event(
            f"approval:{escalation}", "requested", {"reason": reason, "due_at": due}
        )
        ctx.unit.audit(
            actor=AGENT,
            action="escalate",
            subject=row.id,
            decision="needs_human",
            reason=reason,
            details={"approval_id": escalation},
        )
        action = self.world.desk_on_silent_donor(
            escalation, ctx.now, ESCALATION_SLA, can_resubmit=can_resubmit
        )
        if action is not None:
            self._queue_desk(ctx.unit, row.id, escalation, action, now=ctx.now, about=f"donor-{n}")
        return Goto("donor_escalated", {"escalation": escalation}, at=due)

    async def donor_deadline(self, ctx: StepContext) -> Goto | Sleep:
        approval = await self._settled(ctx, ctx.row.data["escalation"])
        if isinstance(approval, Sleep):
            return approval
        return self._after_donor_silence(ctx.unit, ctx.row, approval)

    def _after_donor_silence(self, unit: UnitOfWork, row: Row, approval: Approval) -> Goto:
        """Resubmit (a person approved, and a submission is left) or give up; giving up tells
        the donor, so an answer it sends later is not acted on by either side."""
        resubmit = approval.status in ("approved", "edited")
        if resubmit and row.data["submission"] < MAX_SUBMISSIONS:
            return Goto("validated", {"resubmit_by": approval.decided_by})
        self._withdraw_from_donor(unit, row, "the donor did not answer")
        via = "sla_fallback" if approval.status == "expired" else "person"
        return Goto(
            "rejected", {"reason": "donor_no_answer", "by": approval.decided_by, "via": via}
        )

    # --- cutover ----------------------------------------------------------------------------

    async def await_slot(self, ctx: StepContext) -> Goto | Sleep:
        slot = datetime.fromisoformat(ctx.row.data["cutover_at"])
        if ctx.now < slot:
            return Sleep(slot, "cutover slot")
        return Goto("cutting_over", {"cutover_started": ctx.now.isoformat()})

    async def cut_over(self, ctx: StepContext) -> Goto:
        """The gate, then the saga. Its result and the allow are committed with the move."""
        row, data = ctx.row, ctx.row.data
        req, n = data["request"], data.get("cutover_attempt", 1)
        inputs = {
            "hour_utc": ctx.now.hour,
            "donor_ref": data.get("donor_ref"),
            "number": req["number"],
            "attempt": n,
        }
        decision = await CUTOVER_GATE.check(
            self.store,
            action="cutover",
            principal=AGENT,
            subject=row.id,
            inputs=inputs,
            now=ctx.now,
        )
        if not isinstance(decision, GateAllow):
            if decision.gate != "policy":
                raise RuntimeError(f"the cutover gate refused {row.id}: {decision.reason}")
            later = next_window(ctx.now)
            ctx.unit.append_event(
                MACHINE.stream(row.id),
                "cutover_deferred",
                {"rule": decision.rule, "reason": decision.reason, "until": later},
            )
            return Goto("scheduled", {"cutover_at": later.isoformat(), "deferred": True}, at=later)
        saga_id = f"{self.run_id(data['customer'])}/cutover-{n}"
        saga_input = {
            "port": row.id,
            "number": req["number"],
            "donor": req["donor"],
            "donor_ref": data["donor_ref"],
            "iccid": self.world.iccid(data["customer"]),
        }
        result = await self.saga.run(
            saga_id, saga_input, store=self.store, clock=self.runtime.clock
        )
        CUTOVER_GATE.allow_into(ctx.unit, decision, inputs)
        if isinstance(result, SagaCompleted):
            key = f"{row.id}:cutover"
            done = {"saga": saga_id, "number": req["number"], "donor_ref": data["donor_ref"]}
            ctx.unit.record_commit(key, done, run_id=self.job, boundary="cutover")
            ctx.unit.append_event(OUTBOX, "port_completed", done, idempotency_key=key)
            return Goto("completed", {"completed_at": ctx.now.isoformat(), "saga": saga_id})
        if isinstance(result, SagaCompensated):
            if n < MAX_CUTOVERS:
                later = next_window(ctx.now)
                return Goto(
                    "scheduled",
                    {"cutover_at": later.isoformat(), "cutover_attempt": n + 1},
                    at=later,
                )
            self._withdraw_from_donor(ctx.unit, row, "the cutover failed twice")
            return Goto("rejected", {"reason": "cutover_failed", "saga": saga_id})
        if isinstance(result, SagaNeedsHuman):
            return Goto("cutover_stuck", {"saga_escalation": result.approval_id})
        raise RuntimeError(f"cutover {result.why}")

    # --- the outside parties ----------------------------------------------------------------

    async def deliver(self, ctx: StepContext) -> Goto:
        """Apply one message from the donor, the customer or the desk to its port row."""
        message = ctx.row.data
        port = await self.store.get_row(message["port"])
        if port is None:
            return Goto("ignored", {"why": "no such port"})
        handle = {
            "donor_answer": self._donor_answer,
            "customer_cancel": self._customer_cancel,
            "desk_decision": self._desk_decision,
            "desk_reschedule": self._desk_reschedule,
        }[message["type"]]
        why = await handle(ctx, port, message)
        if why is not None:
            return Goto("ignored", {"why": why, "port_state": port.state})
        return Goto("delivered", {"port_state": port.state})

    async def _donor_answer(self, ctx: StepContext, port: Row, m: Mapping[str, Any]) -> str | None:
        current = port.data.get("submission")
        if (
            port.state not in ("submitted_to_donor", "donor_escalated")
            or current != m["submission"]
        ):
            return f"answers submission {m['submission']}; the port is {port.state} at {current}"
        if port.state == "donor_escalated":  # late, but still the answer we wait for
            why = f"{m['from']} answered after the timeout ({m['verdict']})"
            if not await self._withdraw_escalation(ctx.unit, port.data["escalation"], why):
                return "a person already decided the escalation; their decision stands"
        if m["verdict"] == "reject":
            patch = {"reason": m["reason"], "rejected_by": m["from"]}
            return self._move(ctx, port, "rejected", patch, actor=m["from"])
        slot = datetime.fromisoformat(m["cutover_at"])
        patch = {
            "donor_ref": m["donor_ref"],
            "cutover_at": m["cutover_at"],
            "answered_at": ctx.now.isoformat(),
        }
        moved = self._move(ctx, port, "scheduled", patch, actor=m["from"], at=slot)
        resched = self.world.desk_reschedule(port.data["customer"], ctx.now, slot)
        if moved is None and resched is not None:
            at, who, new = resched
            body = {"from": who, "cutover_at": new.isoformat()}
            self._queue(ctx.unit, port.id, "desk_reschedule", body, at=at, now=ctx.now)
        return moved

    async def _customer_cancel(
        self, ctx: StepContext, port: Row, m: Mapping[str, Any]
    ) -> str | None:
        if port.state not in CANCELLABLE:
            return f"too late to cancel: the port is {port.state}"
        if port.data.get("escalation"):
            await self._withdraw_escalation(ctx.unit, port.data["escalation"], "customer cancelled")
        self._withdraw_from_donor(ctx.unit, port, "the customer cancelled")
        patch = {"reason": "customer_cancelled", "cancelled_at": ctx.now.isoformat()}
        return self._move(ctx, port, "cancelled", patch, actor="customer")

    async def _desk_decision(self, ctx: StepContext, port: Row, m: Mapping[str, Any]) -> str | None:
        """A person settles an escalation and moves the row by hand (a manual override: the
        row's own SLA timer then fires as a no-op)."""
        who = m["from"]
        decided = await decide_approval(
            self.store,
            m["escalation"],
            principal=who,
            decision=m["decision"],
            reason=m["reason"],
            edited=m.get("edited"),
        )
        approval = await self.store.get_approval(m["escalation"])
        if approval is None or isinstance(decided, NotAuthorised):
            return f"escalation {m['escalation']} cannot be decided by {who}"
        if isinstance(decided, NotPending) and approval.decided_by != who:
            return f"escalation already settled ({approval.status} by {approval.decided_by})"
        if port.data.get("escalation") != m["escalation"]:
            return f"the port is {port.state}; that escalation is no longer its question"
        if port.state == "intake_review":
            goto = self._after_intake(port, approval, ctx.now)
        elif port.state == "donor_escalated":
            goto = self._after_donor_silence(ctx.unit, port, approval)
        else:
            return f"the port is {port.state}; nothing to decide"
        return self._move(ctx, port, goto.target, goto.patch, actor=who)

    async def _desk_reschedule(
        self, ctx: StepContext, port: Row, m: Mapping[str, Any]
    ) -> str | None:
        if port.state != "scheduled":
            return f"the port is {port.state}; no slot to move"
        slot = datetime.fromisoformat(m["cutover_at"])
        patch = {"cutover_at": m["cutover_at"], "rescheduled_by": m["from"]}
        return self._move(ctx, port, "scheduled", patch, actor=m["from"], at=slot)

    # --- helpers ----------------------------------------------------------------------------

    def _move(
        self,
        ctx: StepContext,
        port: Row,
        target: str,
        patch: Mapping[str, Any],
        *,
        actor: str,
        at: datetime | None = None,
    ) -> str | None:
        """Add a move of ``port`` (and its next step) to this step's unit; None when legal,
        else why not."""
        proposal = TransitionProposal.model_validate(
            {"from": port.state, "to": target, "if_version": port.version, "patch": dict(patch)}
        )
        rejected = MACHINE.check(port, proposal)
        if rejected is not None:
            return f"{port.state} -> {target} refused: {rejected.reason_code}"
        MACHINE.add_transition(
            ctx.unit, port, proposal, actor=actor, at=ctx.now, causation_id=ctx.timer.id
        )
        delay = None if at is None else max(timedelta(0), at - ctx.now)
        self.workflow.schedule_entry(
            ctx.unit, port.id, target, port.version + 1, ctx.now, delay=delay
        )
        if target in MACHINE.terminal:
            self.on_terminal(target)
        return None

    def _counted(
        self, handler: Callable[[StepContext], Awaitable[Goto | Sleep]]
    ) -> Callable[[StepContext], Awaitable[Goto | Sleep]]:
        """``handler``, reporting the ports it ends to ``on_terminal`` (for progress bars)."""

        async def step(ctx: StepContext) -> Goto | Sleep:
            decision = await handler(ctx)
            if isinstance(decision, Goto) and decision.target in MACHINE.terminal:
                self.on_terminal(decision.target)
            return decision

        return step

    async def _settled(self, ctx: StepContext, approval_id: str) -> Approval | Sleep:
        """The escalation, decided by a person or, past its SLA, by its fallback."""
        approval = await self.store.get_approval(approval_id)
        if approval is None:
            raise RuntimeError(f"escalation {approval_id} of {ctx.row.id} is missing")
        if approval.status != "pending":
            return approval
        if approval.due_at is not None and approval.due_at > ctx.now:
            return Sleep(approval.due_at, "escalation SLA")
        await expire_overdue(self.store, ctx.now, limit=100_000)
        settled = await self.store.get_approval(approval_id)
        if settled is None or settled.status == "pending":
            raise RuntimeError(f"escalation {approval_id} is past its SLA but did not expire")
        return settled

    async def _withdraw_escalation(self, unit: UnitOfWork, approval_id: str, why: str) -> bool:
        """Close our own pending escalation in ``unit`` (the question no longer stands).
        False when a person or the SLA settled it already."""
        approval = await self.store.get_approval(approval_id)
        if approval is None or approval.status != "pending":
            return False
        unit.decide_approval(
            approval_id,
            status="rejected",
            decided_by=AGENT,
            decision={"decision": "withdrawn", "reason": why},
        )
        unit.audit(
            actor=AGENT, action="withdraw", subject=approval_id, decision="withdrawn", reason=why
        )
        unit.append_event(f"approval:{approval_id}", "withdrawn", {"by": AGENT, "reason": why})
        return True

    def _withdraw_from_donor(self, unit: UnitOfWork, port: Row, why: str) -> None:
        """Tell the donor the port is off (once per port), if it was ever submitted."""
        if not port.data.get("submissions"):
            return
        key = f"{port.id}:withdraw"
        unit.record_commit(key, {"why": why}, run_id=self.job, boundary="donor-submission")
        unit.append_event(
            OUTBOX, "port_withdrawn", {"port": port.id, "why": why}, idempotency_key=key
        )

    def _queue(
        self,
        unit: UnitOfWork,
        port: str,
        type: str,
        body: Mapping[str, Any],
        *,
        at: datetime,
        now: datetime,
        suffix: str = "1",
    ) -> None:
        message = f"{port}:msg:{type}:{suffix}"
        INBOX.create(unit, message, {"port": port, "type": type, **body}, actor=str(body["from"]))
        self.inbox.schedule_entry(
            unit, message, "queued", 1, now, delay=max(timedelta(0), at - now)
        )

    def _queue_desk(
        self,
        unit: UnitOfWork,
        port: str,
        escalation: str,
        action: DeskAction,
        *,
        now: datetime,
        about: str,
    ) -> None:
        body = {
            "from": action.principal,
            "escalation": escalation,
            "decision": action.decision,
            "reason": action.reason,
            "edited": dict(action.edited) if action.edited else None,
        }
        self._queue(unit, port, "desk_decision", body, at=action.at, now=now, suffix=about)
