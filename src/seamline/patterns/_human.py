"""P6, human in the loop: four planes on one audit trail.

- **Kill switch**: an authorised principal stops a run (``run:R``), a workflow kind
  (``kind:K``) or everything (``all``). Commits check the stopped scopes inside their own
  transaction (``UnitOfWork.require_alive``), so an in-flight commit either lands before the
  kill or never starts — there is no half-done side effect — and the next commit after the kill
  is refused, which is as fast as the stop can be.
  Workflow moves, saga steps and boundary commits all check their scopes this way
  (:func:`kill_scopes`); compensations and the recording of an effect already under way are
  not stopped, so a kill never leaves a side effect half-recorded.
- **Escalation**: a durable suspend with a reason and a record a person can act on days later,
  from another process (the instance is a row; nothing waits in memory). Resuming answers it:
  the escalation is settled, with who and why, in the same unit of work as the resume.
- **Approval**: a request under an SLA; past it, the declared fallback is applied (deny unless
  declared otherwise); people approve, reject or edit with a reason; who decided is audited.
  A waiting instance reads its answer with :func:`approval_answer`, which applies the fallback
  itself once the SLA has passed, so the instance takes the fallback path without a sweeper.
- **Throttling**: per-minute, per-tenant-per-hour and money-per-day caps as exact fixed-window
  quotas in the store, so they hold across processes; every cap must admit a unit (the
  tightest wins) and a refused unit takes nothing from any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import pydantic

from seamline.boundary._boundary import kill_scopes as boundary_scopes
from seamline.errors import ConfigError
from seamline.store import Applied, Approval, NotPending, Store, UnitOfWork
from seamline.telemetry import span

__all__ = [
    "ApprovalAnswer",
    "ApprovalDecided",
    "ControlConfig",
    "KillSwitch",
    "NotAuthorised",
    "Stopped",
    "Throttle",
    "ThrottlePolicy",
    "approval_answer",
    "decide_approval",
    "expire_approval",
    "expire_overdue",
    "kill_scopes",
    "request_approval",
    "settle_escalation_into",
    "set_throttle",
    "throttle_row_id",
]


# --- kill switch ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stopped:
    scope: str
    principal: str
    kind: Literal["stopped"] = "stopped"


@dataclass(frozen=True, slots=True)
class NotAuthorised:
    """The principal may not do this; the refusal was audited."""

    subject: str
    principal: str
    reason: str
    kind: Literal["not_authorised"] = "not_authorised"


def _scope_ok(scope: str) -> bool:
    return scope == "all" or (
        scope.split(":", 1)[0] in ("kind", "run") and ":" in scope and bool(scope.split(":", 1)[1])
    )


def kill_scopes(kind: str, run_id: str, *extra: str) -> tuple[str, ...]:
    """The scopes a unit of work of workflow ``kind`` in run ``run_id`` runs under: ``all``,
    ``kind:KIND``, ``run:ID`` and ``run:`` of every parent of a sub-run (``a/b`` is also under
    ``a``), then ``extra`` (e.g. the workflow instance that started a saga)."""
    scopes = (*boundary_scopes(kind, run_id), *extra)
    bad = [s for s in scopes if not _scope_ok(s)]
    if bad:
        raise ConfigError(f"kill scopes {bad} are not 'all', 'kind:NAME' or 'run:ID'")
    return tuple(dict.fromkeys(scopes))


class KillSwitch:
    """Stops and revives scopes, for the principals allowed to."""

    def __init__(self, store: Store, authorised: Mapping[str, frozenset[str]]) -> None:
        self.store, self.authorised = store, authorised

    def may(self, principal: str, scope: str) -> bool:
        patterns = self.authorised.get(principal, frozenset())
        kind = scope.split(":", 1)[0]
        return "all" in patterns or scope in patterns or f"{kind}:*" in patterns

    async def kill(self, scope: str, *, principal: str, reason: str) -> Stopped | NotAuthorised:
        return await self._act("kill", scope, principal, reason)

    async def revive(self, scope: str, *, principal: str, reason: str) -> Stopped | NotAuthorised:
        return await self._act("revive", scope, principal, reason)

    async def _act(
        self, action: Literal["kill", "revive"], scope: str, principal: str, reason: str
    ) -> Stopped | NotAuthorised:
        attributes = {"seamline.principal": principal, "seamline.subject": scope}
        with span(f"human {action}", attributes) as current:
            result = await self._act_untraced(action, scope, principal, reason)
            current.set_attribute(
                "seamline.decision", "deny" if isinstance(result, NotAuthorised) else "allow"
            )
            return result

    async def _act_untraced(
        self, action: Literal["kill", "revive"], scope: str, principal: str, reason: str
    ) -> Stopped | NotAuthorised:
        if not _scope_ok(scope):
            raise ConfigError(f"kill scope {scope!r} is not 'all', 'kind:NAME' or 'run:ID'")
        unit = UnitOfWork()
        if not self.may(principal, scope):
            why = f"{principal!r} is not authorised to {action} {scope!r}"
            await self.store.apply(
                unit.audit(
                    actor=principal, action=action, subject=scope, decision="deny", reason=why
                )
            )
            return NotAuthorised(scope, principal, why)
        if action == "kill":
            unit.kill(scope, by=principal, reason=reason)
        else:
            unit.revive(scope)
        unit.audit(actor=principal, action=action, subject=scope, decision="allow", reason=reason)
        unit.append_event(
            "control:kill", action, {"scope": scope, "principal": principal, "reason": reason}
        )
        await self.store.apply(unit)
        return Stopped(scope, principal)


# --- approvals -----------------------------------------------------------------------------


async def request_approval(
    store: Store,
    *,
    id: str,
    reason: str,
    request: Mapping[str, Any],
    requested_by: str,
    now: datetime,
    sla: timedelta,
    fallback: Literal["deny", "approve"] = "deny",
    run_id: str | None = None,
    row_id: str | None = None,
) -> str:
    """Ask a person to decide within ``sla``; past it, ``fallback`` is applied."""
    unit = UnitOfWork().open_approval(
        id=id,
        kind="approval",
        reason=reason,
        request={**request, "fallback_on_timeout": fallback},
        requested_by=requested_by,
        run_id=run_id,
        row_id=row_id,
        due_at=now + sla,
    )
    unit.append_event(
        f"approval:{id}", "requested", {"reason": reason, "due_at": now + sla, "fallback": fallback}
    )
    await store.apply(unit)
    return id


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    approval_id: str
    status: Literal["approved", "rejected", "edited", "expired"]
    decided_by: str
    kind: Literal["decided"] = "decided"


async def decide_approval(
    store: Store,
    approval_id: str,
    *,
    principal: str,
    decision: Literal["approve", "reject", "edit"],
    reason: str,
    edited: Mapping[str, Any] | None = None,
    approvers: frozenset[str] | None = None,
) -> ApprovalDecided | NotPending | NotAuthorised:
    """Record a person's decision, with who and why, once. ``edit`` needs ``edited``."""
    attributes = {"seamline.principal": principal, "seamline.subject": approval_id}
    with span(f"human {decision}", attributes) as current:
        result = await _decide_approval(
            store, approval_id, principal, decision, reason, edited, approvers
        )
        outcome = result.status if isinstance(result, ApprovalDecided) else result.kind
        current.set_attribute("seamline.decision", outcome)
        return result


async def _decide_approval(
    store: Store,
    approval_id: str,
    principal: str,
    decision: Literal["approve", "reject", "edit"],
    reason: str,
    edited: Mapping[str, Any] | None,
    approvers: frozenset[str] | None,
) -> ApprovalDecided | NotPending | NotAuthorised:
    if not reason.strip():
        raise ConfigError("a decision needs a reason a later reader can understand")
    if decision == "edit" and not edited:
        raise ConfigError("an edit needs the edited values")
    if approvers is not None and principal not in approvers:
        why = f"{principal!r} is not an approver"
        await store.apply(
            UnitOfWork().audit(
                actor=principal, action=decision, subject=approval_id, decision="deny", reason=why
            )
        )
        return NotAuthorised(approval_id, principal, why)
    status: Literal["approved", "rejected", "edited"] = {
        "approve": "approved",
        "reject": "rejected",
        "edit": "edited",
    }[decision]  # type: ignore[assignment]
    unit = (
        UnitOfWork()
        .decide_approval(
            approval_id,
            status=status,
            decided_by=principal,
            decision={
                "decision": decision,
                "reason": reason,
                "edited": dict(edited) if edited else None,
            },
        )
        .audit(
            actor=principal,
            action=decision,
            subject=approval_id,
            decision=status,
            reason=reason,
            details={"edited": dict(edited) if edited else None},
        )
        .append_event(f"approval:{approval_id}", status, {"by": principal, "reason": reason})
    )
    outcome = await store.apply(unit)
    if isinstance(outcome, NotPending):
        return outcome
    return ApprovalDecided(approval_id, status, principal)


@dataclass(frozen=True, slots=True)
class ApprovalAnswer:
    """Where a request stands for the instance waiting on it. ``granted`` is None while it is
    pending (look again at ``due_at``, when the fallback applies); otherwise whether to take the
    approved path: approved or edited (with ``edited`` values), or expired with fallback
    ``approve``. Rejected, and expired with the default ``deny``, are not granted."""

    approval_id: str
    status: Literal["pending", "approved", "rejected", "edited", "expired"]
    granted: bool | None
    due_at: datetime | None
    edited: Mapping[str, Any] | None = None
    kind: Literal["approval_answer"] = "approval_answer"


async def approval_answer(store: Store, approval_id: str, now: datetime) -> ApprovalAnswer:
    """The answer to ``approval_id`` as of ``now``; past its SLA with nobody deciding, the
    fallback is applied first (recorded and audited as decided by ``sla``), so a waiting
    instance that calls this when it wakes takes the fallback path by itself."""
    approval = await store.get_approval(approval_id)
    if approval is None:
        raise ConfigError(f"no approval {approval_id!r}; request it before waiting on it")
    if approval.status == "pending" and await expire_approval(store, approval, now):
        approval = await store.get_approval(approval_id) or approval
    decision = approval.decision if isinstance(approval.decision, dict) else {}
    granted: bool | None
    if approval.status == "pending":
        granted = None
    elif approval.status == "expired":
        granted = decision.get("decision") == "approve"
    else:
        granted = approval.status in ("approved", "edited")
    edited = decision.get("edited") if approval.status == "edited" else None
    return ApprovalAnswer(approval.id, approval.status, granted, approval.due_at, edited)


def settle_escalation_into(
    unit: UnitOfWork, approval_id: str, *, principal: str, answer: str, reason: str
) -> UnitOfWork:
    """Record, in ``unit``, that ``principal`` answered escalation ``approval_id`` with
    ``answer`` (e.g. ``resume``): the request is settled as approved, audited and logged. Put it
    in the unit that acts on the answer, so the answer and the action land together; a request
    that is no longer pending makes the whole unit ``NotPending``."""
    if not reason.strip():
        raise ConfigError("answering an escalation needs a reason a later reader can understand")
    unit.decide_approval(
        approval_id,
        status="approved",
        decided_by=principal,
        decision={"decision": answer, "reason": reason},
    )
    unit.audit(
        actor=principal,
        action=answer,
        subject=approval_id,
        decision="approved",
        reason=reason,
        details={"answer": answer},
    )
    unit.append_event(
        f"approval:{approval_id}", "approved", {"by": principal, "answer": answer, "reason": reason}
    )
    return unit


async def expire_overdue(store: Store, now: datetime, *, limit: int = 1000) -> list[Approval]:
    """Apply the fallback to every pending approval past its SLA; returns those expired."""
    expired = []
    for approval in await store.list_approvals(status="pending", limit=limit):
        if await expire_approval(store, approval, now):
            expired.append(approval)
    return expired


async def expire_approval(store: Store, approval: Approval, now: datetime) -> bool:
    """Apply the fallback to this one approval if it is pending and past its SLA."""
    if approval.status != "pending" or approval.due_at is None or approval.due_at > now:
        return False
    fallback = (approval.request or {}).get("fallback_on_timeout", "deny")
    unit = (
        UnitOfWork()
        .decide_approval(
            approval.id,
            status="expired",
            decided_by="sla",
            decision={"decision": fallback, "reason": "SLA passed"},
        )
        .audit(
            actor="sla",
            action="expire",
            subject=approval.id,
            decision=fallback,
            reason=f"no decision by {approval.due_at.isoformat()}; fallback {fallback}",
        )
        .append_event(f"approval:{approval.id}", "expired", {"fallback": fallback})
    )
    return isinstance(await store.apply(unit), Applied)


# --- throttling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottlePolicy:
    """Caps, any of them optional; every one must admit a unit."""

    per_minute: int | None = None
    per_tenant_per_hour: int | None = None
    money_per_day: Decimal | None = None


class Throttle:
    """Adds the quota takes for one action to a unit of work."""

    def __init__(self, name: str, policy: ThrottlePolicy) -> None:
        self.name, self.policy = name, policy

    def take_into(
        self,
        unit: UnitOfWork,
        *,
        now: datetime,
        tenant: str | None = None,
        money: Decimal = Decimal(0),
    ) -> UnitOfWork:
        epoch = int(now.astimezone(UTC).timestamp())
        p = self.policy
        if p.per_minute is not None:
            window = epoch // 60
            unit.take_quota(
                f"throttle:{self.name}:minute:{window}",
                limit=p.per_minute,
                window_end=_at((window + 1) * 60),
            )
        if p.per_tenant_per_hour is not None and tenant is not None:
            window = epoch // 3600
            unit.take_quota(
                f"throttle:{self.name}:tenant:{tenant}:hour:{window}",
                limit=p.per_tenant_per_hour,
                window_end=_at((window + 1) * 3600),
            )
        if p.money_per_day is not None and money > 0:
            window = epoch // 86400
            unit.take_quota(
                f"throttle:{self.name}:money:day:{window}",
                amount=money,
                limit=p.money_per_day,
                window_end=_at((window + 1) * 86400),
            )
        return unit

    async def current(self, store: Store) -> Throttle:
        """This throttle with any per-minute override an operator set in the store (see
        :func:`set_throttle`); itself when there is none."""
        row = await store.get_row(throttle_row_id(self.name))
        if row is None or row.data.get("per_minute") is None:
            return self
        policy = ThrottlePolicy(
            per_minute=int(row.data["per_minute"]),
            per_tenant_per_hour=self.policy.per_tenant_per_hour,
            money_per_day=self.policy.money_per_day,
        )
        return Throttle(self.name, policy)


def throttle_row_id(name: str) -> str:
    return f"throttle:{name}"


async def set_throttle(
    store: Store, name: str, *, per_minute: int | None, principal: str, reason: str
) -> int:
    """Override (or with ``None`` clear) a throttle's per-minute cap for every process on the
    store, audited; 0 pauses the action. Returns the override row's new version."""
    attributes = {
        "seamline.principal": principal,
        "seamline.subject": throttle_row_id(name),
        "seamline.throttle.per_minute": per_minute,  # None (a cleared override) is left out
    }
    with span("human throttle", attributes) as current:
        version = await _set_throttle(
            store, name, per_minute=per_minute, principal=principal, reason=reason
        )
        current.set_attribute("seamline.decision", "allow")
        return version


async def _set_throttle(
    store: Store, name: str, *, per_minute: int | None, principal: str, reason: str
) -> int:
    if per_minute is not None and per_minute < 0:
        raise ConfigError(f"throttle {name!r}: per_minute must be >= 0, got {per_minute}")
    if not reason.strip():
        raise ConfigError("a throttle change needs a reason a later reader can understand")
    row_id = throttle_row_id(name)
    data = {"per_minute": per_minute, "by": principal, "reason": reason}
    for _ in range(5):  # CAS: a concurrent change wins and this one is applied after it
        row = await store.get_row(row_id)
        unit = UnitOfWork()
        if row is None:
            unit.create_row(row_id, kind="throttle", state="set", data=data)
        else:
            unit.transition(row_id, expect_version=row.version, to="set", data=data)
        unit.audit(
            actor=principal,
            action="throttle",
            subject=row_id,
            decision="allow",
            reason=reason,
            details={"per_minute": per_minute},
        )
        unit.append_event("control:throttle", "throttle_set", {"name": name, **data})
        outcome = await store.apply(unit)
        if isinstance(outcome, Applied):
            return outcome.versions[row_id]
    raise ConfigError(f"throttle {name!r} kept changing under this update; try again")


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- configuration -------------------------------------------------------------------------


class ControlConfig(pydantic.BaseModel):
    """Who may stop what, who may decide approvals, and the throttles: from a YAML file."""

    model_config = pydantic.ConfigDict(extra="forbid")

    kill_switch: dict[str, list[str]] = pydantic.Field(default_factory=dict)
    approvers: list[str] = pydantic.Field(default_factory=list)
    throttles: dict[str, dict[str, Decimal]] = pydantic.Field(default_factory=dict)

    def kill_authorised(self) -> dict[str, frozenset[str]]:
        return {p: frozenset(scopes) for p, scopes in self.kill_switch.items()}

    def throttle(self, name: str) -> Throttle:
        caps = self.throttles.get(name, {})
        unknown = set(caps) - {"per_minute", "per_tenant_per_hour", "money_per_day"}
        if unknown:
            raise ConfigError(f"throttle {name!r}: unknown caps {sorted(unknown)}")
        return Throttle(
            name,
            ThrottlePolicy(
                per_minute=int(caps["per_minute"]) if "per_minute" in caps else None,
                per_tenant_per_hour=int(caps["per_tenant_per_hour"])
                if "per_tenant_per_hour" in caps
                else None,
                money_per_day=caps.get("money_per_day"),
            ),
        )
