"""The P5 runner: drives workflow instances through their states on timers.

Every step of an instance is triggered by a timer attached to the row at a version. The runner
leases due timers from the store (so several runners can share the work, and a dead runner's
timers return after its lease), loads the row, and:

- if the row has moved since the timer was set, settles the timer as a recorded no-op — a
  manual override or another worker won, and acting on the stale view would be wrong;
- otherwise runs the state's handler, which returns where to go (``Goto``) or when to look
  again (``Sleep``), and writes the move, its event, the handler's own store writes, the
  timer's settlement and the next state's timer in **one** unit of work. A crash anywhere
  before that commit re-runs the step; nothing of it was committed, so nothing is done twice.

A failing handler is handled by its state's declared policy (retry with backoff, escalate to a
person, dead-letter, or report to the caller); the instance stays at the failed state and is
re-entered there, never re-run from scratch. Suspended instances cost no memory: they are rows.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from seamline import codec
from seamline.clock import Clock, SystemClock, VirtualClock, advance_to_next_timer
from seamline.errors import ConfigError
from seamline.patterns._human import settle_escalation_into
from seamline.patterns._statemachine import (
    DeadLetter,
    EscalateOnFailure,
    FailToCaller,
    Moved,
    Retry,
    StateMachine,
    TransitionProposal,
    TransitionRejected,
    apply_transition,
)
from seamline.store import Applied, Killed, Row, Store, Throttled, Timer, UnitOfWork
from seamline.telemetry import span

__all__ = ["Goto", "Runner", "RunnerReport", "Sleep", "StepContext", "Workflow", "resume"]


@dataclass(frozen=True, slots=True)
class Goto:
    """Move to ``target`` with ``patch`` merged into the row's data. ``at`` sets when the
    target state's step runs (default: the workflow's ``enter_after`` for that state)."""

    target: str
    patch: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    kind: Literal["goto"] = "goto"


@dataclass(frozen=True, slots=True)
class Sleep:
    """Stay in this state and run its handler again at ``until`` (waiting on the world)."""

    until: datetime
    reason: str = ""
    kind: Literal["sleep"] = "sleep"


@dataclass
class StepContext:
    """What a handler sees. Store writes added to ``unit`` commit atomically with the move."""

    row: Row
    timer: Timer
    attempt: int
    now: datetime
    store: Store
    unit: UnitOfWork


Handler = Callable[[StepContext], Awaitable[Goto | Sleep]]


@dataclass(frozen=True)
class Workflow:
    """A state machine plus a handler per state that acts on its own. A state without a
    handler waits for an outside move (a person, an approval, another process)."""

    machine: StateMachine
    handlers: Mapping[str, Handler]
    enter_after: Mapping[str, timedelta] = field(default_factory=dict)
    """How long after entering a state its handler runs (default: at once)."""

    def __post_init__(self) -> None:
        unknown = set(self.handlers) - set(self.machine.transitions)
        if unknown:
            raise ConfigError(
                f"{self.machine.kind}: handlers for {sorted(unknown)}, which are "
                "not non-terminal states of the machine"
            )

    def schedule_entry(
        self,
        unit: UnitOfWork,
        row_id: str,
        state: str,
        version: int,
        now: datetime,
        *,
        attempt: int = 1,
        delay: timedelta | None = None,
    ) -> None:
        """Add the timer that will run ``state``'s handler for this row version."""
        if state not in self.handlers:
            return
        due = now + (delay if delay is not None else self.enter_after.get(state, timedelta(0)))
        unit.schedule_timer(
            row_id,
            row_version=version,
            name=f"step:{state}",
            due_at=due,
            payload={"attempt": attempt},
            id=f"{row_id}:v{version}:{state}:{attempt}",
        )

    async def move(
        self,
        store: Store,
        row_id: str,
        target: str,
        *,
        actor: str,
        now: datetime,
        patch: Mapping[str, Any] | None = None,
    ) -> Moved | TransitionRejected:
        """Move an instance from outside the runner (a person, an approval) and schedule the
        new state's step, in one unit of work."""
        row = await store.get_row(row_id)
        proposal = TransitionProposal.model_validate(
            {
                "from": row.state if row else "?",
                "to": target,
                "if_version": row.version if row else 1,
                "patch": dict(patch or {}),
            }
        )
        unit = UnitOfWork()
        if row is not None and self.machine.check(row, proposal) is None:
            self.schedule_entry(unit, row_id, target, row.version + 1, now)
        return await apply_transition(store, self.machine, row_id, proposal, actor=actor, unit=unit)

    def start(
        self, unit: UnitOfWork, row_id: str, data: Mapping[str, Any], now: datetime, *, actor: str
    ) -> UnitOfWork:
        """Create an instance in the initial state and schedule its first step."""
        self.machine.create(unit, row_id, data, actor=actor)
        self.schedule_entry(unit, row_id, self.machine.initial, 1, now)
        return unit


@dataclass
class RunnerReport:
    """What the runner did, by outcome: moved, slept, noop, retried, escalated, dead_lettered,
    failed, killed, conflicts."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def merge(self, other: RunnerReport) -> None:
        self.counts.update(other.counts)
        self.failures.extend(other.failures)


async def resume(
    store: Store,
    workflow: Workflow,
    row_id: str,
    now: datetime,
    *,
    principal: str,
    reason: str,
    approval_id: str | None = None,
) -> bool:
    """A person re-enters a suspended instance at its current state, from any process, at any
    later time. The escalation that suspended it (``approval_id``, or else the instance's latest
    one) is settled as answered ``resume`` by ``principal`` in the same unit of work as the new
    step's timer, so the queue never shows a resumed instance as still waiting. False when the
    row is missing or terminal, or the escalation was answered meanwhile."""
    if not reason.strip():
        raise ConfigError("a resume needs a reason a later reader can understand")
    row = await store.get_row(row_id)
    if row is None or row.state in workflow.machine.terminal:
        return False
    stream = workflow.machine.stream(row_id)
    approval_id = approval_id or await _latest_escalation(store, stream)
    approval = await store.get_approval(approval_id) if approval_id else None
    if approval_id and (approval is None or approval.row_id != row_id):
        raise ConfigError(f"{approval_id!r} is not an escalation of {row_id!r}")
    unit = UnitOfWork()
    if approval is not None and approval.status == "pending":
        settle_escalation_into(
            unit, approval.id, principal=principal, answer="resume", reason=reason
        )
    else:
        unit.audit(
            actor=principal, action="resume", subject=row_id, decision="allow", reason=reason
        )
    stamp = uuid.uuid4().hex[:8]
    unit.schedule_timer(
        row_id,
        row_version=row.version,
        name=f"step:{row.state}",
        due_at=now,
        payload={"attempt": 1, "resumed": True},
        id=f"{row_id}:v{row.version}:{row.state}:resume-{stamp}",
    )
    unit.append_event(
        stream,
        "resumed",
        {
            "state": row.state,
            "version": row.version,
            "by": principal,
            "reason": reason,
            "approval_id": approval_id,
        },
    )
    return isinstance(await store.apply(unit), Applied)


async def _latest_escalation(store: Store, stream: str) -> str | None:
    """The id of the last escalation the runner opened for this instance (its stream says)."""
    found, after = None, 0
    while page := await store.read_stream(stream, after=after):
        for e in page:
            if e.type == "step_failed" and isinstance(e.payload, dict):
                found = e.payload.get("approval_id") or found
        after = page[-1].stream_seq
    return found


class Runner:
    """Drives instances of one or more workflows. Safe to run in many processes at once."""

    def __init__(
        self,
        store: Store,
        workflows: Sequence[Workflow],
        *,
        clock: Clock | None = None,
        owner: str | None = None,
        lease_s: float = 60.0,
        batch: int = 200,
        concurrency: int = 50,
        tick: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.owner = owner or f"runner-{uuid.uuid4().hex[:8]}"
        self.lease_s, self.batch = lease_s, batch
        self.tick = tick
        """In virtual time, how far past the next due timer one jump goes: timers due within
        a tick run together (each still at its own due instant), which lets the store group
        their commits. Zero: one due instant at a time."""
        self._limit = asyncio.Semaphore(concurrency)
        self._by_kind = {w.machine.kind: w for w in workflows}
        self._kinds = tuple(sorted(self._by_kind))  # only these rows' timers are ours
        self._stopping = False
        if len(self._by_kind) != len(workflows):
            raise ConfigError("two workflows share a kind")

    def stop(self) -> None:
        """Finish the step under way, then return from :meth:`run_until_idle` (SIGTERM)."""
        self._stopping = True

    async def step(self) -> RunnerReport:
        """Claim the timers due now and run them; an empty report means nothing was due."""
        report = RunnerReport()
        timers = await self.store.claim_due_timers(
            self.clock.now(),
            owner=self.owner,
            lease_s=self.lease_s,
            limit=self.batch,
            kinds=self._kinds,
        )

        async def one(timer: Timer) -> None:
            async with self._limit:
                report.counts[await self._fire(timer, report)] += 1

        await asyncio.gather(*(one(t) for t in timers))
        return report

    async def run_until_idle(
        self,
        *,
        max_steps: int = 1_000_000,
        on_step: Callable[[RunnerReport], None] | None = None,
        stop: threading.Event | None = None,
    ) -> RunnerReport:
        """Run until no timer is due, or until :meth:`stop` is called or ``stop`` is set (by a
        signal handler, say): the step under way finishes first. On a :class:`VirtualClock`,
        jump to the next timer instead of waiting, so months of workflow run in seconds."""
        total = RunnerReport()
        idle = 0
        for _ in range(max_steps):
            if self._stopping or (stop is not None and stop.is_set()):
                break
            report = await self.step()
            total.merge(report)
            if on_step is not None:
                on_step(report)
            if sum(n for k, n in report.counts.items() if k != "killed"):
                idle = 0
                continue
            if report.counts["killed"] or not isinstance(self.clock, VirtualClock):
                break  # what is due is stopped by the kill switch, or nothing is due now
            before = self.clock.now()
            if await advance_to_next_timer(self.clock, self.store, kinds=self._kinds) is None:
                break
            if self.tick and self.clock.now() > before:
                self.clock.advance(self.tick)
            if self.clock.now() == before:
                # Due, but leased to another runner (perhaps a dead one): in virtual time, go
                # to when the earliest lease runs out.
                idle += 1
                expiry = await self.store.next_lease_expiry(self.clock.now(), kinds=self._kinds)
                if expiry is None or idle > 3:
                    break
                self.clock.advance_to(expiry)
        return total

    # --- one timer ------------------------------------------------------------------------

    async def _fire(self, timer: Timer, report: RunnerReport) -> str:
        row = await self.store.get_row(timer.row_id)
        workflow = self._by_kind.get(row.kind) if row is not None else None
        if row is None or workflow is None or row.version != timer.row_version:
            return await self._noop(timer, row, workflow)
        handler = workflow.handlers.get(row.state)
        if handler is None:
            return await self._noop(timer, row, workflow)
        attempt = int((timer.payload or {}).get("attempt", 1))
        # In virtual time a step happens at its timer's due instant, whatever batch it ran in:
        # decisions are then the same however timers were grouped.
        now = timer.due_at if isinstance(self.clock, VirtualClock) else self.clock.now()
        ctx = StepContext(row, timer, attempt, now, self.store, UnitOfWork())
        try:
            decision = await handler(ctx)
        except Exception as exc:  # the handler failed: the state's declared policy decides
            return await self._failed(workflow, row, timer, attempt, exc, report)
        if isinstance(decision, Sleep):
            unit = ctx.unit.settle_timer(timer.id, "fired")
            unit.require_alive("all", f"kind:{row.kind}", f"run:{row.id}")
            unit.schedule_timer(
                row.id,
                row_version=row.version,
                name=timer.name,
                due_at=decision.until,
                payload={"attempt": 1},
                id=f"{row.id}:v{row.version}:{row.state}:sleep-{timer.id[-8:]}"
                f"-{int(decision.until.timestamp())}",
            )
            return await self._commit(unit, "slept", timer)
        proposal = TransitionProposal.model_validate(
            {
                "from": row.state,
                "to": decision.target,
                "if_version": row.version,
                "patch": dict(decision.patch),
            }
        )
        rejected = workflow.machine.check(row, proposal)
        if rejected is not None:
            error = ValueError(
                f"handler proposed {row.state!r} -> {decision.target!r}: {rejected.message}"
            )
            return await self._failed(workflow, row, timer, attempt, error, report)
        unit = workflow.machine.add_transition(
            ctx.unit, row, proposal, actor=self.owner, at=ctx.now, causation_id=timer.id
        )
        unit.settle_timer(timer.id, "fired")
        delay = None if decision.at is None else max(timedelta(0), decision.at - ctx.now)
        workflow.schedule_entry(
            unit, row.id, decision.target, row.version + 1, ctx.now, delay=delay
        )
        attributes = {
            "seamline.row_id": row.id,
            "seamline.transition.from": row.state,
            "seamline.transition.to": decision.target,
            "seamline.actor": self.owner,
        }
        with span(f"transition {row.kind}", attributes) as current:
            outcome = await self._commit(unit, "moved", timer)
            current.set_attribute("seamline.transition.outcome", outcome)
            if outcome == "moved":
                current.set_attribute("seamline.transition.version", row.version + 1)
            return outcome

    async def _commit(self, unit: UnitOfWork, label: str, timer: Timer | None = None) -> str:
        outcome = await self.store.apply(unit)
        if isinstance(outcome, Applied):
            return label
        if isinstance(outcome, Killed):
            return "killed"  # the timer stays pending; it is looked at again after its lease
        if isinstance(outcome, Throttled) and timer is not None:
            # A quota the step took refused it, and nothing of the step was written: run the
            # step again when the window reopens.
            step_now = timer.due_at if isinstance(self.clock, VirtualClock) else self.clock.now()
            later = max(outcome.available_at or step_now, step_now + timedelta(seconds=1))
            retry = (
                UnitOfWork()
                .settle_timer(timer.id, "fired")
                .schedule_timer(
                    timer.row_id,
                    row_version=timer.row_version,
                    name=timer.name,
                    due_at=later,
                    payload=timer.payload,
                    id=f"{timer.id}:t{int(later.timestamp())}",
                )
            )
            await self.store.apply(retry)
            return "throttled"
        return "conflicts"  # e.g. the row moved during the step: its next timer decides

    async def _noop(self, timer: Timer, row: Row | None, workflow: Workflow | None) -> str:
        unit = UnitOfWork().settle_timer(timer.id, "noop")
        if row is not None and workflow is not None:
            unit.append_event(
                workflow.machine.stream(row.id),
                "timer_noop",
                {
                    "timer": timer.name,
                    "scheduled_at_version": timer.row_version,
                    "row_version": row.version,
                    "state": row.state,
                },
                causation_id=timer.id,
            )
        outcome = await self.store.apply(unit)
        return "noop" if isinstance(outcome, Applied) else "conflicts"

    async def _failed(
        self,
        workflow: Workflow,
        row: Row,
        timer: Timer,
        attempt: int,
        exc: Exception,
        report: RunnerReport,
    ) -> str:
        policy = workflow.machine.failure_policy(row.state)
        error = f"{type(exc).__name__}: {exc}"
        stream = workflow.machine.stream(row.id)
        unit = UnitOfWork().settle_timer(timer.id, "fired")
        action: str = policy.kind
        if isinstance(policy, Retry):
            if attempt < policy.times:
                delay = policy.backoff * (2 ** (attempt - 1))
                workflow.schedule_entry(
                    unit,
                    row.id,
                    row.state,
                    row.version,
                    self.clock.now(),
                    attempt=attempt + 1,
                    delay=delay,
                )
                unit.append_event(
                    stream,
                    "step_failed",
                    {
                        "state": row.state,
                        "attempt": attempt,
                        "error": error,
                        "next": "retry",
                        "retry_in_s": delay.total_seconds(),
                    },
                    causation_id=timer.id,
                )
                return await self._commit(unit, "retried")
            action = policy.then
        approval_id = f"esc:{timer.id}"  # the timer names row, version, state and attempt
        failed: dict[str, Any] = {
            "state": row.state,
            "attempt": attempt,
            "error": error,
            "next": action,
        }
        if action == "escalate":  # resume() finds the escalation to answer from here
            failed["approval_id"] = approval_id
        unit.append_event(stream, "step_failed", failed, causation_id=timer.id)
        if action == "escalate":
            unit.open_approval(
                id=approval_id,
                kind="escalation",
                reason=f"step {row.state!r} of {row.kind} {row.id} failed {attempt} time(s): "
                f"{error}",
                request={
                    "workflow": row.kind,
                    "row_id": row.id,
                    "state": row.state,
                    "version": row.version,
                    "tried": attempt,
                    "error": error,
                    "decision_needed": f"what to do with {row.id}, suspended at {row.state!r}",
                    "options": [
                        {
                            "option": "resume",
                            "expected_impact": f"the {row.state!r} step runs again from this state",
                        },
                        {
                            "option": "move",
                            "expected_impact": "a person moves the instance by hand",
                        },
                        {
                            "option": "abandon",
                            "expected_impact": "the instance stays suspended; nothing more happens",
                        },
                    ],
                    "data": codec.decode(row.data_json),
                },
                requested_by=f"runner:{self.owner}",
                run_id=row.id,
                row_id=row.id,
            )
            return await self._commit(unit, "escalated")
        if action == "dead_letter":
            unit.append_event(stream, "dead_lettered", {"state": row.state, "error": error})
            return await self._commit(unit, "dead_lettered")
        assert isinstance(policy, FailToCaller | Retry | EscalateOnFailure | DeadLetter)
        report.failures.append((row.id, error))
        return await self._commit(unit, "failed")
