"""P1 for one turn: the account, eligibility and price quote, looked up in parallel.

Three stateless workers each call one (SIMULATED) system through a hardened tool: the CRM
for the account, the network and contract service for eligibility, billing for the list
prices. Every call passes the lookup gate first (role: who may read customer data), so each
tool call is gated and audited. Workers never retry: the tools make one attempt each and the
orchestrator owns the one retry budget, as P1 asks. A lasting failure of eligibility is
replaced by the conservative answer (no fiber, no downgrade); a lasting failure of the account
or of billing leaves a gap the turn answers with a fallback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from seamline.clock import Clock
from seamline.patterns import (
    Delegated,
    Delegation,
    DelegationResult,
    Failure,
    Gate,
    GateAllow,
    GateDeny,
    Substitute,
    Success,
    Worker,
    WorkerResult,
)
from seamline.store import Store
from seamline.tools import CircuitBreaker, HardenedTool, ToolError
from seamline.workloads.renewal import Customer
from seamline.workloads.support._domain import (
    AccountFacts,
    Eligibility,
    QuoteSheet,
    all_plans,
    draw,
    list_price,
    plan_of,
)

__all__ = [
    "LOOKUP_ACTIONS",
    "AccountLookup",
    "LookupArgs",
    "LookupTask",
    "Lookups",
    "SimulatedSystems",
    "gate_denied",
    "lookup_gate",
    "merged_facts",
]

LOOKUP_ACTIONS: Mapping[str, str] = {
    "account": "lookup_account",
    "eligibility": "check_eligibility",
    "quote": "quote_price",
}
"""Worker name -> the gated action its tool call is."""

READERS = frozenset({"support-assistant", "support-viewer"})
CONSERVATIVE = {"fiber_available": False, "downgrade_allowed": False}


def lookup_gate() -> Gate:
    """Who may read customer data: the assistant and read-only support staff."""
    return Gate("support-lookups", roles=dict.fromkeys(LOOKUP_ACTIONS.values(), READERS))


class LookupArgs(pydantic.BaseModel):
    """One call to an account system. ``request_id`` is unique per call, as APIs ask."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    customer_id: str = pydantic.Field(pattern=r"^\d{4}-[A-Z]{5}$")
    request_id: str = pydantic.Field(min_length=1, max_length=200)


class AccountLookup(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    account: AccountFacts


class SimulatedSystems:
    """The CRM, the network and contract service, and billing: SIMULATED from the cohort.

    Answers are seeded; each call fails with a transient ``ConnectionError`` at
    ``failure_rate``, drawn from the seed and the call's request id, so a run is repeatable.
    """

    def __init__(
        self, customers: Mapping[str, Customer], *, seed: int, failure_rate: float = 0.04
    ) -> None:
        self.customers, self.seed, self.failure_rate = customers, seed, failure_rate

    def _customer(self, system: str, args: LookupArgs) -> Customer:
        if draw(self.seed, system, args.request_id) < self.failure_rate:
            raise ConnectionError(f"{system} did not answer (simulated outage)")
        customer = self.customers.get(args.customer_id)
        if customer is None:
            raise LookupError(f"{system}: no customer {args.customer_id}")
        return customer

    async def account(self, args: LookupArgs) -> AccountLookup:
        c = self._customer("crm", args)
        facts = AccountFacts(
            customer_id=c.customer_id,
            plan=plan_of(c),
            monthly_charges=c.monthly_charges,
            contract=c.contract,
            tenure=c.tenure,
            tenant="seniors" if c.senior_citizen else "standard",
        )
        return AccountLookup(account=facts)

    async def eligibility(self, args: LookupArgs) -> Eligibility:
        c = self._customer("network", args)
        on_fiber = c.internet_service == "Fiber optic"
        return Eligibility(
            fiber_available=on_fiber or draw(self.seed, "fiber", c.customer_id) < 0.75,
            # A two-year contract fixes the service level until its term ends.
            downgrade_allowed=c.contract != "Two year",
        )

    async def quotes(self, args: LookupArgs) -> QuoteSheet:
        self._customer("billing", args)
        return QuoteSheet(quotes={p.id: list_price(p) for p in all_plans()})


@dataclass
class LookupTask:
    """One turn's lookups: whose data, for which turn, on whose authority. ``allows``
    collects the gate's allow decisions, audited with the turn's record."""

    customer_id: str
    turn_key: str
    principal: str
    allows: list[tuple[GateAllow, dict[str, Any]]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)


class Lookups:
    """The orchestrator's side of P1: declared once per job, run once per turn."""

    def __init__(self, store: Store, systems: SimulatedSystems, *, clock: Clock) -> None:
        self.store, self.clock, self.gate = store, clock, lookup_gate()
        self.tools: dict[str, HardenedTool[Any, Any]] = {
            "account": _tool("crm.account", systems.account, AccountLookup),
            "eligibility": _tool("network.eligibility", systems.eligibility, Eligibility),
            "quote": _tool("billing.quotes", systems.quotes, QuoteSheet),
        }
        self.delegation = Delegation(
            "support-lookups",
            workers=[self._worker(name) for name in LOOKUP_ACTIONS],
            on_partial=Substitute(
                defaults={"account": {}, "eligibility": CONSERVATIVE, "quote": {}}
            ),
            retries=3,
            retries_per_worker=2,
            backoff_initial_s=0.05,
            backoff_max_s=0.4,
            max_concurrency=3,
            clock=clock,
        )

    async def run(self, task: LookupTask) -> DelegationResult:
        return await self.delegation.run(dict.fromkeys(LOOKUP_ACTIONS, task))

    def _worker(self, name: str) -> Worker[LookupTask]:
        tool, action = self.tools[name], LOOKUP_ACTIONS[name]

        async def work(task: LookupTask) -> WorkerResult:
            task.calls[name] += 1
            inputs = {"customer_id": task.customer_id, "tool": tool.name}
            decision = await self.gate.check(
                self.store,
                action=action,
                principal=task.principal,
                subject=task.turn_key,
                inputs=inputs,
                now=self.clock.now(),
            )
            if isinstance(decision, GateDeny):
                return Failure("gate_denied", decision.reason, retryable=False)
            task.allows.append((decision, inputs))
            request_id = f"{task.turn_key}:{name}:{task.calls[name]}"
            answer = await tool.call(
                LookupArgs(customer_id=task.customer_id, request_id=request_id)
            )
            if isinstance(answer, ToolError):
                return Failure(answer.code, answer.message, answer.retryable)
            return Success(answer.value)

        return Worker(name, work, timeout_s=5.0)


def gate_denied(result: DelegationResult) -> bool:
    """True when a lookup was refused by the gate (not merely broken)."""
    return any(
        isinstance(r, Failure) and r.reason_code == "gate_denied"
        for r in result.results_by_worker.values()
    )


def merged_facts(result: DelegationResult) -> Mapping[str, Any] | None:
    """The merged lookups when the account and the quotes both arrived, else None."""
    if not isinstance(result, Delegated):
        return None
    merged = result.merged
    if "account" not in merged or "quotes" not in merged:
        return None
    return merged


def _tool(name: str, fn: Any, output: type[pydantic.BaseModel]) -> HardenedTool[Any, Any]:
    # One attempt: the delegation owns the retry budget. The breaker stops hammering a
    # system that keeps failing; at the simulated failure rate it practically never opens.
    return HardenedTool(
        name,
        fn,
        input=LookupArgs,
        output=output,
        attempts=1,
        timeout_s=2.0,
        breaker=CircuitBreaker(threshold=10, reset_after_s=30.0),
    )
