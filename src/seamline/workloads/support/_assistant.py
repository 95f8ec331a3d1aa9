"""The assistant: one conversation, turn by turn.

A turn: look the customer up (P1, every tool call gated), let the model propose one typed
action through the boundary under the turn's latency budget, and, when the accepted action is
``change_plan``, pass the change through the plan-change gate (P4: role, then the versioned
policy again) and commit it. The change, its ledger row (key ``<turn key>:change_plan``), the
outbox event for provisioning, the gate's audited allow and the turn's record land in one
transaction, so a change is made exactly once per conversation turn and never without its
allow. A turn that cannot be answered properly — over its latency budget, no acceptable
proposal, a gate denial, the account systems down — gets a typed, polite fallback backed by an
escalation: the promised follow-up is in the human queue.

There is no workflow row: the conversation is the state. Each turn's record (customer
message, reply, action, quote) is an event on the conversation's stream; a re-run reads the
recorded turns back and rebuilds the conversation from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from seamline.boundary import Committed, Escalated, PolicyVerifier, Runtime
from seamline.errors import SeamlineError
from seamline.models import Model
from seamline.patterns import Gate, GateDeny
from seamline.store import Applied, Store, UnitOfWork
from seamline.workloads.support._chat import Conversation, next_message
from seamline.workloads.support._domain import (
    Action,
    Eligibility,
    Exchange,
    Quote,
    SupportAction,
    TurnInput,
    terms_of,
)
from seamline.workloads.support._lookups import Lookups, LookupTask, gate_denied, merged_facts
from seamline.workloads.support._reply import BOUNDARY, LatencyBudget, reply_boundary, turn_key

__all__ = [
    "ASSISTANT",
    "CHANGES_STREAM",
    "FALLBACK_REPLIES",
    "Answered",
    "FallbackReason",
    "SupportAssistant",
    "TurnFallback",
    "TurnOutcome",
    "change_gate",
]

ASSISTANT = "support-assistant"
CHANGES_STREAM = "support:plan-changes"
"""The outbox provisioning reads: one ``plan_changed`` event per committed change."""

FallbackReason = Literal[
    "latency_budget", "no_valid_proposal", "gate_denied", "systems_unavailable"
]
FALLBACK_REPLIES: dict[str, str] = {
    "latency_budget": "This is taking longer than it should. A colleague will pick up your "
    "request and get back to you shortly.",
    "no_valid_proposal": "I couldn't complete that here. A colleague will follow up with you "
    "shortly.",
    "gate_denied": "I'm not able to make that change from here. A colleague will follow up to "
    "complete it with you.",
    "systems_unavailable": "Our account systems are not answering right now. A colleague will "
    "follow up with you shortly.",
}


def change_gate(policy: PolicyVerifier) -> Gate:
    """Before ``change_plan``: only the support assistant may call it, under the policy."""
    return Gate("plan-change", roles={"change_plan": frozenset({ASSISTANT})}, policy=policy)


@dataclass(frozen=True, slots=True)
class Answered:
    """The turn was answered with a verified action (and, for a change, a committed one)."""

    turn_key: str
    reply: str
    action: Action
    quote: Quote | None
    change_key: str | None
    latency_ms: float
    kind: Literal["answered"] = "answered"


@dataclass(frozen=True, slots=True)
class TurnFallback:
    """The turn got the polite fallback; ``escalation_id`` is the follow-up a person owns.
    Nothing was changed."""

    turn_key: str
    reason: FallbackReason
    reply: str
    escalation_id: str
    latency_ms: float
    kind: Literal["fallback"] = "fallback"


TurnOutcome = Answered | TurnFallback


@dataclass
class SupportAssistant:
    """The orchestrator, bound to one job."""

    store: Store
    runtime: Runtime
    model: Model
    lookups: Lookups
    policy: PolicyVerifier
    job: str
    principal: str
    latency_budget_s: float
    wall_clock: bool

    def __post_init__(self) -> None:
        self.gate = change_gate(self.policy)
        self.budget = LatencyBudget(
            self.model, budget_s=self.latency_budget_s, wall_clock=self.wall_clock
        )
        self.boundary = reply_boundary(self.budget, self.policy)

    def stream(self, conversation_id: str) -> str:
        return f"support:chat:{self.job}:{conversation_id}"

    def run_id(self, conversation_id: str) -> str:
        return f"{self.job}/{conversation_id}"

    async def converse(self, conv: Conversation) -> list[TurnOutcome]:
        """Run (or replay from its recorded turns) one conversation to its end."""
        history: list[Exchange] = []
        pending: Quote | None = None
        message: str | None = conv.opener
        outcomes: list[TurnOutcome] = []
        while message is not None:
            n = len(outcomes) + 1
            outcome = await self.turn(conv, n, message, tuple(history), pending)
            outcomes.append(outcome)
            history.append(Exchange(customer=message, assistant=outcome.reply))
            if isinstance(outcome, Answered):
                pending = outcome.quote
                message = next_message(conv, n, fallback=False, action=outcome.action)
            else:
                message = next_message(conv, n, fallback=True, action=None)
        return outcomes

    async def turn(
        self,
        conv: Conversation,
        n: int,
        message: str,
        history: tuple[Exchange, ...],
        pending: Quote | None,
    ) -> TurnOutcome:
        key = f"{self.job}:{conv.id}:t{n}"
        recorded = await self.store.event_by_key(f"{key}:turn")
        if recorded is not None:
            return outcome_of(recorded.payload)
        record = _TurnRecord(conv, n, message, key)
        task = LookupTask(conv.customer.customer_id, key, self.principal)
        looked = await self.lookups.run(task)
        for decision, inputs in task.allows:
            self.lookups.gate.allow_into(record.unit, decision, inputs)
        facts = merged_facts(looked)
        if facts is None:
            if gate_denied(looked):
                why = f"the lookup gate denied {self.principal!r} (see the audit)"
                return await self._fallback(record, "gate_denied", 0.0, why)
            why = "the account or the price list could not be looked up"
            return await self._fallback(record, "systems_unavailable", 0.0, why)
        turn = TurnInput(
            conversation_id=conv.id,
            turn=n,
            account=facts["account"],
            eligibility=Eligibility(
                fiber_available=facts["fiber_available"],
                downgrade_allowed=facts["downgrade_allowed"],
            ),
            quotes=facts["quotes"],
            history=history,
            pending_quote=pending,
            message=message,
        )
        run_id = self.run_id(conv.id)
        try:
            result = await self.boundary.run(turn, runtime=self.runtime, run_id=run_id, key=key)
        finally:
            timed = self.budget.settle(BOUNDARY, turn_key(turn))
        for late in timed.discarded:  # answered too late and thrown away, but still paid for
            record.unit.record_usage(
                run_id=run_id,
                model=late.model,
                prompt_tokens=late.usage.prompt_tokens,
                completion_tokens=late.usage.completion_tokens,
                cost=self.runtime.prices.cost(late.model, late.usage),
                latency_ms=late.latency_ms,
            )
        latency = round(timed.spent_ms, 3)
        record.model_calls = timed.calls
        if not isinstance(result, Committed):
            over = timed.over or (
                isinstance(result, Escalated) and "latency_budget" in result.reason
            )
            reason: FallbackReason = "latency_budget" if over else "no_valid_proposal"
            if isinstance(result, Escalated):
                return await self._fallback(
                    record, reason, latency, result.reason, result.approval_id
                )
            why = f"{result.reason_code}: {result.message}"
            return await self._fallback(record, reason, latency, why)
        action = SupportAction.model_validate(result.result)
        if action.action != "change_plan":
            quote = None
            if action.action == "quote" and action.plan and action.monthly_price is not None:
                quote = Quote(plan=action.plan, monthly_price=action.monthly_price)
            return await self._record(
                record, Answered(key, action.reply, action.action, quote, None, latency)
            )
        return await self._change(record, turn, action, latency)

    async def _change(
        self, record: _TurnRecord, turn: TurnInput, action: SupportAction, latency: float
    ) -> TurnOutcome:
        """The side effect, behind the gate: the boundary accepted it, the gate decides."""
        assert action.plan is not None and action.monthly_price is not None
        terms = terms_of(action, turn)
        decision = await self.gate.check(
            self.store,
            action="change_plan",
            principal=self.principal,
            subject=record.key,
            inputs=terms,
            now=self.runtime.clock.now(),
            tenant=turn.account.tenant,
        )
        if isinstance(decision, GateDeny):
            why = (
                f"the {decision.gate} gate denied change_plan ({decision.rule}): {decision.reason}"
            )
            return await self._fallback(record, "gate_denied", latency, why)
        change_key = f"{record.key}:change_plan"
        change = {
            "job": self.job,
            "conversation": turn.conversation_id,
            "turn": turn.turn,
            "customer_id": turn.account.customer_id,
            "from_plan": turn.account.plan.id,
            "to_plan": action.plan.id,
            "monthly_price": str(action.monthly_price),
            "principal": self.principal,
            "policy_version": decision.policy_version,
        }
        unit = record.unit
        unit.record_commit(
            change_key, change, run_id=self.run_id(turn.conversation_id), boundary="plan-change"
        )
        unit.append_event(CHANGES_STREAM, "plan_changed", change, idempotency_key=change_key)
        self.gate.allow_into(unit, decision, terms)
        return await self._record(
            record, Answered(record.key, action.reply, "change_plan", None, change_key, latency)
        )

    async def _fallback(
        self,
        record: _TurnRecord,
        reason: FallbackReason,
        latency: float,
        why: str,
        escalation: str | None = None,
    ) -> TurnOutcome:
        if escalation is None:  # the boundary did not open one: the follow-up is opened here
            escalation = f"esc:{record.key}:{reason}"
            record.unit.open_approval(
                id=escalation,
                kind="escalation",
                reason=f"{reason}: {why}",
                request={
                    "conversation": record.conv.id,
                    "turn": record.n,
                    "customer_id": record.conv.customer.customer_id,
                    "message": record.message,
                    "decision_needed": "follow up with the customer as the assistant promised",
                    "options": [
                        {
                            "option": "make the change by hand after the customer confirms it",
                            "expected_impact": "the customer's request is done",
                        },
                        {
                            "option": "explain that no change is possible",
                            "expected_impact": "nothing changes on the account",
                        },
                    ],
                },
                requested_by=f"assistant:{self.principal}",
                run_id=self.run_id(record.conv.id),
            )
        reply = FALLBACK_REPLIES[reason]
        return await self._record(
            record, TurnFallback(record.key, reason, reply, escalation, latency)
        )

    async def _record(self, record: _TurnRecord, outcome: TurnOutcome) -> TurnOutcome:
        budget_ms = self.latency_budget_s * 1000
        payload = {
            "conversation": record.conv.id,
            "turn": record.n,
            "customer_id": record.conv.customer.customer_id,
            "scenario": record.conv.scenario,
            "message": record.message,
            "principal": self.principal,
            "model_calls": record.model_calls,
            "within_budget": outcome.latency_ms <= budget_ms,
            **_outcome_payload(outcome),
        }
        record.unit.append_event(
            self.stream(record.conv.id), "turn", payload, idempotency_key=f"{record.key}:turn"
        )
        applied = await self.store.apply(record.unit)
        if isinstance(applied, Applied):
            return outcome
        # Another run of this job recorded the turn first: what it recorded is the answer.
        existing = await self.store.event_by_key(f"{record.key}:turn")
        if existing is None:
            raise SeamlineError(
                f"turn {record.key}: the store refused its record ({applied}) but holds no "
                "record of it; inspect the conversation's stream"
            )
        return outcome_of(existing.payload)


@dataclass
class _TurnRecord:
    """What one turn writes, gathered into one unit of work."""

    conv: Conversation
    n: int
    message: str
    key: str
    model_calls: int = 0

    def __post_init__(self) -> None:
        self.unit = UnitOfWork()


def _outcome_payload(outcome: TurnOutcome) -> dict[str, Any]:
    if isinstance(outcome, Answered):
        return {
            "kind": "answered",
            "turn_key": outcome.turn_key,
            "reply": outcome.reply,
            "action": outcome.action,
            "quote": outcome.quote.model_dump(mode="json") if outcome.quote else None,
            "change_key": outcome.change_key,
            "latency_ms": outcome.latency_ms,
        }
    return {
        "kind": "fallback",
        "turn_key": outcome.turn_key,
        "reply": outcome.reply,
        "reason": outcome.reason,
        "escalation_id": outcome.escalation_id,
        "latency_ms": outcome.latency_ms,
    }


def outcome_of(payload: Any) -> TurnOutcome:
    """A recorded turn, read back."""
    if payload["kind"] == "answered":
        quote = payload.get("quote")
        return Answered(
            payload["turn_key"],
            payload["reply"],
            payload["action"],
            Quote.model_validate(quote) if quote else None,
            payload.get("change_key"),
            payload["latency_ms"],
        )
    return TurnFallback(
        payload["turn_key"],
        payload["reason"],
        payload["reply"],
        payload["escalation_id"],
        payload["latency_ms"],
    )
