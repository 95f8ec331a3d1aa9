"""The scanner: a P3 consumer of the billing log that turns anomalies into credits.

For each event of ``billing:<scope>``, in log order, with a durable offset:

1. the deterministic rules (:mod:`._detect`) look for anomalies, given only what the log said
   before this event;
2. for each anomaly, unless the customer's cycle is already credited up to the cap, the model
   proposes a credit through the boundary (:mod:`._credit`), keyed by the anomaly;
3. the gate (P4: role, the versioned policy again with the ledger as it stands now, the
   scan's token budget) allows or denies issuing it;
4. an allowed credit is issued as a saga (P2): post it to the ledger (the gate's allow is
   audited in that same transaction), then notify the customer; a failed notice reverses the
   credit.

Every decision is published to ``credits:<scope>`` under a key derived from the anomaly, and
every effect is keyed too, so a redelivered event (after a crash, or by a consumer that lost
its offset) finds the boundary's recorded ending and the saga's recorded outcome and issues
nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pydantic

from seamline.boundary import Committed, Escalated, Policy, PolicyVerifier, Runtime
from seamline.budget import Budget, Decline
from seamline.clock import Clock
from seamline.errors import SeamlineError
from seamline.models import Model
from seamline.patterns import (
    CompensationContext,
    Consumer,
    Gate,
    GateAllow,
    GateDeny,
    Saga,
    SagaCompensated,
    SagaCompleted,
    SagaNeedsHuman,
    SagaResult,
    SagaStep,
    SagaStepContext,
    publish,
    saga_step_key,
)
from seamline.store import Duplicate, Event, Store, UnitOfWork
from seamline.workloads.billing._credit import (
    CreditCase,
    CreditProposal,
    credit_boundary,
    default_policy,
    monthly_cap,
    policy_inputs,
)
from seamline.workloads.billing._detect import Anomaly, History, detect
from seamline.workloads.billing._effects import Ledger, ModelIdentity, Notifier
from seamline.workloads.billing._events import (
    FORK_MARKER,
    MODEL_DERIVED,
    REGISTRY,
    AnomalyDetected,
    CreditCompensated,
    CreditDenied,
    CreditEscalated,
    CreditIssued,
    CreditNeedsHuman,
    CreditNotice,
    CreditPosted,
    CreditProposed,
    CreditReversed,
    decisions_stream,
    log_stream,
)

__all__ = ["CONSUMER", "PRINCIPAL", "BillingError", "CreditScanner"]

CONSUMER = "billing-scanner"
PRINCIPAL = "billing-scanner"
ISSUE = "issue_credit"


class BillingError(SeamlineError):
    """The scanner cannot go on with an event; it is redelivered when the scan runs again."""


class CreditScanner:
    """Scans ``billing:<scope>`` from its durable offset and decides a credit per anomaly.

    ``replay=True`` marks a recovery replay on a fork: the boundary fails instead of
    escalating when attempts run out, so a branch never puts work in a person's queue.
    """

    def __init__(
        self,
        store: Store,
        *,
        scope: str,
        model: Model,
        clock: Clock,
        notifier: Notifier,
        policy: Policy | None = None,
        token_budget: int = 2_000_000,
        attempts: int = 3,
        replay: bool = False,
        consumer: str = CONSUMER,
        batch: int = 100,
    ) -> None:
        self.store, self.scope, self.clock, self.notifier = store, scope, clock, notifier
        self.policy = policy or default_policy()
        self.cap = monthly_cap(self.policy)
        self.replay = replay
        self.runtime = Runtime(store, clock)
        # Tokens, not money: a recorded model costs nothing, and a replay must meet the
        # same budget line as the run it replays.
        self.budget = Budget(scope, max_tokens=token_budget, alert_at=1.0, on_alert=Decline())
        self.boundary = credit_boundary(model, self.policy, attempts=attempts, replay=replay)
        self.gate = Gate(
            "billing-credits",
            roles={ISSUE: frozenset({PRINCIPAL})},
            policy=PolicyVerifier(self.policy, name=f"policy:{self.policy.policy}"),
            budget=self.budget,
        )
        self.ledger = Ledger(store, scope)
        self.saga = Saga(
            "billing-credit",
            [
                SagaStep("post_credit", self._post_credit, self._reverse_credit),
                SagaStep("notify_customer", self._notify, self._nothing_to_undo),
            ],
            compensation_attempts=3,
            backoff_initial_s=0.5,
            backoff_max_s=5.0,
        )
        self.consumer = Consumer(store, consumer, log_stream(scope), self._handle, batch=batch)
        self._history = History()
        self._folded = 0

    async def poll(self) -> int:
        """Handle up to ``batch`` events from the offset; returns how many were handled."""
        return await self.consumer.poll()

    async def drain(self) -> int:
        """Handle every event not handled yet; returns how many were handled."""
        return await self.consumer.drain()

    # --- the log -----------------------------------------------------------------------------

    async def _handle(self, event: Event, unit: UnitOfWork) -> None:
        if event.type == FORK_MARKER:
            return
        await self._catch_up(event.stream_seq - 1)
        fact = REGISTRY.decode(event)
        for anomaly in detect(self._history, fact):
            await self._decide(anomaly, event.stream_seq)
        # Folded only once every decision is published: an event that raised is redelivered
        # and must then be judged on the history before it, again.
        self._history.record(fact)
        self._folded = event.stream_seq

    async def _catch_up(self, upto: int) -> None:
        """Fold the log's facts up to position ``upto`` into the history (another instance of
        this consumer may have handled some, or this one started at a saved offset)."""
        if upto < self._folded:
            self._history, self._folded = History(), 0
        while self._folded < upto:
            page = await self.store.read_stream(
                log_stream(self.scope), after=self._folded, limit=min(1000, upto - self._folded)
            )
            if not page:
                break
            for e in page:
                if e.type != FORK_MARKER:
                    self._history.record(REGISTRY.decode(e))
                self._folded = e.stream_seq

    # --- one anomaly -------------------------------------------------------------------------

    async def _decide(self, a: Anomaly, position: int) -> None:
        await self._emit(
            a.id,
            AnomalyDetected(
                anomaly_id=a.id,
                type=a.type,
                customer_id=a.customer_id,
                cycle=a.cycle,
                amount=a.amount,
                evidence=a.evidence,
                log_position=position,
            ),
        )
        credited = await self.ledger.credited(a.customer_id, a.cycle, excluding=a.id)
        if credited >= self.cap:  # the fast deny: no model call can change this
            reason = (
                f"customer {a.customer_id} was already credited {credited} for cycle {a.cycle}; "
                f"the cap is {self.cap} (policy {self.policy.version})"
            )
            denied = CreditDenied(
                anomaly_id=a.id, stage="scanner", rule="credit.monthly_cap", reason=reason
            )
            await self._emit(a.id, denied)
            return
        case = CreditCase(
            anomaly_id=a.id,
            anomaly_type=a.type,
            customer_id=a.customer_id,
            cycle=a.cycle,
            anomalous_amount=a.amount,
            evidence=a.evidence,
            monthly_cap=self.cap,
            credited_this_cycle=credited,
            policy_version=self.policy.version,
        )
        result = await self.boundary.run(
            case, runtime=self.runtime, run_id=self.scope, budget=self.budget
        )
        identity, attempts = await self._proposals(result.key)
        if isinstance(result, Escalated):
            escalated = CreditEscalated(
                anomaly_id=a.id, approval_id=result.approval_id, reason=result.reason
            )
            await self._emit(a.id, escalated, identity)
            return
        if not isinstance(result, Committed):
            if self.replay and result.reason_code == "attempts_exhausted":
                # The live run escalated here; a branch records that it would have.
                reason = f"{result.message} (replay: a person would be asked)"
                held = CreditEscalated(anomaly_id=a.id, approval_id=None, reason=reason)
                await self._emit(a.id, held, identity)
                return
            denied = CreditDenied(
                anomaly_id=a.id, stage="boundary", rule=result.reason_code, reason=result.message
            )
            await self._emit(a.id, denied, identity)
            return
        assert identity is not None  # a committed proposal always has an accepted event
        proposal = CreditProposal.model_validate(result.result)
        await self._emit(
            a.id,
            CreditProposed(
                anomaly_id=a.id,
                amount=proposal.amount,
                reason_code=proposal.reason_code,
                explanation=proposal.explanation,
                attempts=attempts,
                flags=result.flags,
                model=identity.model,
                simulated=identity.simulated,
            ),
            identity,
        )
        outcome = await self._issue(a, proposal, credited, identity)
        if outcome is not None:
            await self._record(a, proposal, outcome, identity)

    async def _issue(
        self, a: Anomaly, proposal: CreditProposal, credited: Decimal, identity: ModelIdentity
    ) -> SagaResult | None:
        """Through the gate, then the saga. A saga that exists already (this anomaly was
        handled before a crash or by another consumer) is resumed, never started again."""
        saga_id = f"{self.scope}:{a.id}"
        if await self.store.get_row(f"saga:{saga_id}") is not None:
            return await self.saga.resume(saga_id, store=self.store, clock=self.clock)
        inputs: dict[str, Any] = {
            **policy_inputs(proposal, credited),
            "customer_id": a.customer_id,
            "cycle": a.cycle,
        }
        decision = await self.gate.check(
            self.store,
            action=ISSUE,
            principal=PRINCIPAL,
            subject=a.id,
            inputs=inputs,
            now=self.clock.now(),
        )
        if isinstance(decision, GateDeny):
            denied = CreditDenied(
                anomaly_id=a.id, stage="gate", rule=decision.rule, reason=decision.reason
            )
            await self._emit(a.id, denied, identity)
            return None
        saga_input = {
            "anomaly": {
                "id": a.id,
                "customer_id": a.customer_id,
                "cycle": a.cycle,
            },
            "credit": proposal.model_dump(mode="json"),
            "model": {
                "model": identity.model,
                "model_version": identity.model_version,
                "prompt_hash": identity.prompt_hash,
                "simulated": identity.simulated,
            },
            "allow": {"policy_version": decision.policy_version, "flags": list(decision.flags)},
            "gate_inputs": inputs,
        }
        return await self.saga.run(saga_id, saga_input, store=self.store, clock=self.clock)

    async def _record(
        self, a: Anomaly, p: CreditProposal, outcome: SagaResult, identity: ModelIdentity
    ) -> None:
        event: pydantic.BaseModel
        if isinstance(outcome, SagaCompleted):
            event = CreditIssued(
                anomaly_id=a.id,
                customer_id=a.customer_id,
                cycle=a.cycle,
                amount=p.amount,
                reason_code=p.reason_code,
                saga_id=outcome.saga_id,
                policy_version=self.policy.version,
            )
        elif isinstance(outcome, SagaCompensated):
            event = CreditCompensated(
                anomaly_id=a.id,
                amount=p.amount,
                failed_step=outcome.failed_step,
                reason=outcome.reason,
                undone=outcome.compensated_steps,
            )
        elif isinstance(outcome, SagaNeedsHuman):
            event = CreditNeedsHuman(
                anomaly_id=a.id, approval_id=outcome.approval_id, reason=outcome.reason
            )
        else:
            raise BillingError(
                f"{outcome.why}; the event stays unhandled and is redelivered on the next scan"
            )
        await self._emit(a.id, event, identity)

    # --- the saga's steps --------------------------------------------------------------------

    async def _post_credit(self, ctx: SagaStepContext) -> dict[str, Any]:
        anomaly, credit, allow = ctx.input["anomaly"], ctx.input["credit"], ctx.input["allow"]
        posting = CreditPosted(
            credit_id=anomaly["id"],
            customer_id=anomaly["customer_id"],
            cycle=anomaly["cycle"],
            amount=credit["amount"],
            reason_code=credit["reason_code"],
        )
        # The gate's allow is audited in the transaction that posts the credit: never an
        # audited allow without its effect, nor an effect without its allow.
        decision = GateAllow(
            ISSUE, PRINCIPAL, anomaly["id"], allow["policy_version"], tuple(allow["flags"])
        )
        unit = self.gate.allow_into(UnitOfWork(), decision, ctx.input["gate_inputs"])
        identity = _identity_of(ctx.input["model"])
        await self.ledger.post(posting, key=ctx.key, identity=identity, unit=unit)
        return {"posted": anomaly["id"], "amount": credit["amount"]}

    async def _reverse_credit(self, ctx: CompensationContext) -> dict[str, Any]:
        anomaly, credit = ctx.input["anomaly"], ctx.input["credit"]
        step_key = saga_step_key(ctx.saga_id, ctx.step)
        if ctx.effect == "unknown" and not await self.ledger.posted(step_key):
            return {"reversed": None}  # the posting never landed: nothing to undo
        reversal = CreditReversed(
            credit_id=anomaly["id"],
            customer_id=anomaly["customer_id"],
            cycle=anomaly["cycle"],
            amount=credit["amount"],
            reason="the credit's saga failed at a later step",
        )
        identity = _identity_of(ctx.input["model"])
        await self.ledger.reverse(reversal, key=ctx.key, identity=identity)
        return {"reversed": anomaly["id"], "amount": credit["amount"]}

    async def _notify(self, ctx: SagaStepContext) -> Mapping[str, Any]:
        anomaly, credit = ctx.input["anomaly"], ctx.input["credit"]
        notice = CreditNotice(
            credit_id=anomaly["id"],
            customer_id=anomaly["customer_id"],
            amount=credit["amount"],
            message=credit["explanation"],
        )
        identity = _identity_of(ctx.input["model"])
        return await self.notifier.notify(notice, scope=self.scope, key=ctx.key, identity=identity)

    async def _nothing_to_undo(self, ctx: CompensationContext) -> None:
        # Notifying is the last step, so no later step can fail after it; a notice that
        # timed out (effect unknown) cannot be unsent either.
        return None

    # --- records -----------------------------------------------------------------------------

    async def _emit(
        self, anomaly_id: str, event: pydantic.BaseModel, identity: ModelIdentity | None = None
    ) -> None:
        name = REGISTRY.name_of(event)
        if name in MODEL_DERIVED and identity is None:
            raise BillingError(f"{name} for {anomaly_id} carries model output but no identity")
        outcome = await publish(
            self.store,
            REGISTRY,
            decisions_stream(self.scope),
            event,
            idempotency_key=f"{self.scope}:{anomaly_id}:{name}",
            from_model=identity is not None,
            model_version=identity.model_version if identity else None,
            prompt_hash=identity.prompt_hash if identity else None,
        )
        if not isinstance(outcome, int | Duplicate):
            raise BillingError(f"publishing {name} for {anomaly_id} gave {outcome}")

    async def _proposals(self, key: str) -> tuple[ModelIdentity | None, int]:
        """The model and prompt behind the accepted proposal (or the last one, if none was
        accepted), and how many proposals were made, read from the boundary's record — the
        same whether this run made them or found its ending recorded."""
        events = await self.store.read_stream(self.boundary.stream_for(key))
        proposed = [e for e in events if e.type == "proposed"]
        accepted = next((e for e in events if e.type == "accepted"), None)
        source = accepted or (proposed[-1] if proposed else None)
        if source is None or not proposed or not source.model_version or not source.prompt_hash:
            return None, len(proposed)
        last = proposed[-1].payload
        identity = ModelIdentity(
            last["model"], source.model_version, source.prompt_hash, bool(last["simulated"])
        )
        return identity, len(proposed)


def _identity_of(raw: Mapping[str, Any]) -> ModelIdentity:
    return ModelIdentity(
        raw["model"], raw["model_version"], raw["prompt_hash"], bool(raw["simulated"])
    )
