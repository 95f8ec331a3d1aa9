"""P4, supervisor and gate: bounded control around every side effect.

A :class:`Gate` stands before a side effect and answers allow or deny. It checks the cheapest
things first — the role table (may this principal do this action?), then versioned policy as
code, then the run's budget (a store read) — so a deny is fast. Every decision is audited with
the policy version, the principal, the inputs and the reason. An allow is audited in the same
unit of work as the side effect it guards (call :meth:`Gate.allow_into`), so there is never an
audited allow without its effect, nor an effect without its allow.

A :class:`Supervisor` keeps a worker coroutine running: when it crashes it is restarted after
an exponential backoff, up to a restart limit within a window; past that it escalates to a
person and stops, instead of crash-looping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from seamline.boundary import PolicyVerifier, Reject, VerifyContext
from seamline.budget import Budget
from seamline.clock import Clock, SystemClock
from seamline.errors import ConfigError
from seamline.store import Store, UnitOfWork
from seamline.telemetry import span

__all__ = ["Gate", "GateAllow", "GateDecision", "GateDeny", "Supervised", "Supervisor"]


@dataclass(frozen=True, slots=True)
class GateAllow:
    action: str
    principal: str
    subject: str
    policy_version: str | None
    flags: tuple[str, ...] = ()
    kind: Literal["allow"] = "allow"


@dataclass(frozen=True, slots=True)
class GateDeny:
    """The side effect must not happen. ``gate`` says which check refused it."""

    action: str
    principal: str
    subject: str
    gate: Literal["role", "policy", "budget"]
    rule: str
    reason: str
    policy_version: str | None
    kind: Literal["deny"] = "deny"


GateDecision = GateAllow | GateDeny


@dataclass(frozen=True)
class Gate:
    """Role, policy and budget checks before a side effect, each decision audited."""

    name: str
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """action -> principals allowed to trigger it; an action not listed is open to all."""
    policy: PolicyVerifier | None = None
    budget: Budget | None = None

    async def check(
        self,
        store: Store,
        *,
        action: str,
        principal: str,
        subject: str,
        inputs: Mapping[str, Any],
        now: datetime,
        tenant: str | None = None,
    ) -> GateDecision:
        """Decide, and audit a deny at once (an allow is audited with its effect)."""
        attributes = {"seamline.action": action, "seamline.principal": principal}
        with span(f"gate {self.name}", attributes) as current:
            decision = await self._decide(store, action, principal, subject, inputs, now, tenant)
            current.set_attribute("seamline.gate.decision", decision.kind)
            if decision.policy_version is not None:
                current.set_attribute("seamline.policy_version", decision.policy_version)
            if isinstance(decision, GateDeny):
                current.set_attribute("seamline.gate.rule", decision.rule)
                current.set_attribute("seamline.gate.check", decision.gate)
                await store.apply(self._audit(UnitOfWork(), decision, inputs))
            return decision

    def allow_into(
        self, unit: UnitOfWork, decision: GateAllow, inputs: Mapping[str, Any]
    ) -> UnitOfWork:
        """Audit an allow inside the unit that performs the side effect it allowed."""
        return self._audit(unit, decision, inputs)

    async def _decide(
        self,
        store: Store,
        action: str,
        principal: str,
        subject: str,
        inputs: Mapping[str, Any],
        now: datetime,
        tenant: str | None,
    ) -> GateDecision:
        version = self.policy.policy.version if self.policy else None
        allowed = self.roles.get(action)
        if allowed is not None and principal not in allowed:
            return GateDeny(
                action,
                principal,
                subject,
                "role",
                f"role:{action}",
                f"{principal!r} may not {action}; allowed: {sorted(allowed)}",
                version,
            )
        flags: tuple[str, ...] = ()
        if self.policy is not None:
            ctx: VerifyContext[Any] = VerifyContext(self.name, subject, inputs, 0, now, tenant)
            verdict = self.policy.verify(dict(inputs), ctx)
            if isinstance(verdict, Reject):
                return GateDeny(
                    action, principal, subject, "policy", verdict.rule_id, verdict.message, version
                )
            flags = verdict.flags
        if self.budget is not None:
            totals = await store.usage_totals(self.budget.run_id, include_children=True)
            status = self.budget.check(totals.total_tokens, totals.cost)
            if status.level == "exhausted":
                return GateDeny(
                    action,
                    principal,
                    subject,
                    "budget",
                    "budget.cap",
                    f"run {self.budget.run_id} spent {status.share:.0%} of its budget",
                    version,
                )
        return GateAllow(action, principal, subject, version, flags)

    def _audit(
        self, unit: UnitOfWork, decision: GateDecision, inputs: Mapping[str, Any]
    ) -> UnitOfWork:
        reason = decision.reason if isinstance(decision, GateDeny) else "all gate checks passed"
        return unit.audit(
            actor=f"gate:{self.name}",
            action=decision.action,
            subject=decision.subject,
            decision=decision.kind,
            reason=reason,
            policy_version=decision.policy_version,
            details={
                "principal": decision.principal,
                "inputs": dict(inputs),
                "gate": decision.gate if isinstance(decision, GateDeny) else None,
                "rule": decision.rule if isinstance(decision, GateDeny) else None,
                "flags": list(decision.flags) if isinstance(decision, GateAllow) else [],
            },
        )


@dataclass(frozen=True, slots=True)
class Supervised:
    """How a supervised worker ended."""

    name: str
    outcome: Literal["finished", "escalated", "cancelled"]
    restarts: int
    last_error: str | None
    approval_id: str | None = None


class Supervisor:
    """Restarts a crashing worker with exponential backoff, up to ``max_restarts`` within
    ``window``; then escalates to a person and stops."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        max_restarts: int = 5,
        window: timedelta = timedelta(minutes=10),
        backoff_initial: timedelta = timedelta(seconds=1),
        backoff_max: timedelta = timedelta(minutes=1),
    ) -> None:
        if max_restarts < 0 or backoff_initial <= timedelta(0):
            raise ConfigError("supervisor needs max_restarts >= 0 and a positive backoff")
        self.store, self.clock = store, clock or SystemClock()
        self.max_restarts, self.window = max_restarts, window
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max

    async def supervise(self, name: str, worker: Callable[[], Awaitable[None]]) -> Supervised:
        crashes: list[datetime] = []
        restarts = 0
        while True:
            try:
                await worker()
                return Supervised(name, "finished", restarts, None)
            except asyncio.CancelledError:
                return Supervised(name, "cancelled", restarts, None)
            except Exception as exc:
                now = self.clock.now()
                crashes = [c for c in crashes if now - c < self.window] + [now]
                error = f"{type(exc).__name__}: {exc}"
                if len(crashes) > self.max_restarts:
                    approval = await self._escalate(name, error, len(crashes))
                    return Supervised(name, "escalated", restarts, error, approval)
                delay = min(self.backoff_max, self.backoff_initial * 2 ** (len(crashes) - 1))
                await self.store.apply(
                    UnitOfWork().append_event(
                        f"supervisor:{name}",
                        "restarting",
                        {
                            "error": error,
                            "crashes_in_window": len(crashes),
                            "backoff_s": delay.total_seconds(),
                        },
                    )
                )
                await self.clock.sleep(delay.total_seconds())
                restarts += 1

    async def _escalate(self, name: str, error: str, crashes: int) -> str:
        approval_id = f"esc:supervisor:{name}:{self.clock.now().isoformat()}"
        await self.store.apply(
            UnitOfWork()
            .open_approval(
                id=approval_id,
                kind="escalation",
                reason=f"worker {name} crashed {crashes} times within {self.window}: {error}",
                request={
                    "worker": name,
                    "last_error": error,
                    "crashes": crashes,
                    "decision_needed": f"restart {name} or leave it stopped",
                    "options": [
                        {"option": "restart", "expected_impact": "the worker runs again"},
                        {
                            "option": "leave stopped",
                            "expected_impact": "its work waits in the store",
                        },
                    ],
                },
                requested_by="supervisor",
            )
            .append_event(f"supervisor:{name}", "escalated", {"error": error, "crashes": crashes})
        )
        return approval_id
