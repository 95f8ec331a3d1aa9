"""P2 scatter-gather and saga: parallel fan-out with bounded concurrency, and side effects on
several systems that are undone, in reverse, when one of them fails.

Use :func:`scatter_gather` to call many things at once without flooding them (a customer's
usage, network, billing and support signals): each branch ends as a typed :class:`BranchOk`
or :class:`BranchFailed`, never as an exception. Use :class:`Saga` when a workflow changes
systems that share no transaction (provision a plan, credit an account, send a message) and
a failure part-way must not leave some of those changes behind ("scattered commitment").

Why it is built this way:

* **The saga is one durable row** (kind ``saga``) moved by compare-and-swap through
  :data:`SAGA_TRANSITIONS`, its data listing every step's status. Each write is one unit: the
  row, the commit-ledger entry and the event on stream ``saga:<id>`` land together or not at
  all, so row, ledger and trace never disagree. The row's version also keeps one runner per
  saga: a run that finds it moved by another stops with :class:`SagaPreempted`.
* **A step registers its compensation before it runs**: the unit that marks it ``started``
  (its effect now *unknown*) and writes its ledger intent lands before the action is called,
  so after a crash the pending intent says the step may have happened.
* **Resuming re-performs, never guesses.** A step found ``started`` is performed again with
  its same idempotency key (steps must be idempotent on it, as payment and messaging APIs
  are); a compensation found in flight is called again with its same key. Nothing recorded as
  done runs again, and the ledger keeps one result per key.
* **What to undo is a pure function** (:func:`plan_compensation`): every step whose effect is
  done or unknown and not yet compensated, last declared first. A step that raised did nothing
  (its action must be atomic at the receiver), except on a timeout, which may have landed.
* **Compensations retry, then escalate.** Each is retried with exponential backoff on the
  clock; one that still fails stays pending in the ledger, the others still run, and one
  escalation shows a person what was done, what was undone, what was not, and the options.
  The saga rests in ``compensation_failed``: never half-committed in silence. A person's
  retry (``resume(..., retry_compensations=True, principal=, reason=)``) settles that
  escalation in the same unit of work as the move back to ``compensating``.
* **The kill switch stops forward steps, not compensations.** The unit that marks a step
  ``started`` checks the saga's scopes (``all``, ``kind:<saga name>``, ``run:<saga id>`` and
  its parents, and any ``kill_scopes`` given at start) in the same transaction, so a step
  either started before the kill or is never called; the run then ends
  :class:`SagaPreempted` with ``killed`` set and the saga resumes where it stopped once the
  scope is revived. A step already called still records its outcome, and compensations still
  run after a kill: stopping them would leave the saga half-committed, which is what the kill
  switch must never do.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

import tenacity

from seamline import codec
from seamline.clock import Clock, SystemClock
from seamline.errors import CodecError, ConfigError, SeamlineError
from seamline.patterns._human import kill_scopes as scopes_for
from seamline.patterns._human import settle_escalation_into
from seamline.store import Applied, Duplicate, Killed, Row, StaleVersion, Store, UnitOfWork

__all__ = [
    "SAGA_TRANSITIONS",
    "BranchFailed",
    "BranchOk",
    "CompensationContext",
    "Gathered",
    "Parallel",
    "Saga",
    "SagaCompensated",
    "SagaCompleted",
    "SagaError",
    "SagaNeedsHuman",
    "SagaPreempted",
    "SagaRecord",
    "SagaResult",
    "SagaStep",
    "SagaStepContext",
    "SagaStepRecord",
    "compensation_key",
    "plan_compensation",
    "saga_trace",
    "scatter_gather",
    "saga_step_key",
]

T = TypeVar("T")
MAX_CONCURRENCY = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SagaError(SeamlineError):
    """A saga was misused, or its record contradicts its definition (a failing step is not an
    error: it is a result)."""


def _bounded(what: str, value: float, low: float, high: float, *, above: bool = False) -> None:
    """Refuse ``value`` outside ``[low, high]`` (``(low, high]`` when ``above``)."""
    if value > high or value < low or (above and value == low):
        raise ConfigError(
            f"{what} must be within {'(' if above else '['}{low}, {high}], got {value}"
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- scatter-gather -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BranchOk(Generic[T]):
    label: str
    value: T
    latency_ms: float
    kind: Literal["ok"] = "ok"


@dataclass(frozen=True, slots=True)
class BranchFailed:
    """A branch raised or timed out; ``exception`` is kept for the caller, never persisted."""

    label: str
    error: str
    timed_out: bool
    latency_ms: float
    exception: Exception | None = field(default=None, repr=False, compare=False)
    kind: Literal["failed"] = "failed"


@dataclass(frozen=True, slots=True)
class Gathered(Generic[T]):
    """Every branch's result in the order the calls were given; ``max_in_flight`` is the most
    branches that ran at once."""

    branches: tuple[BranchOk[T] | BranchFailed, ...]
    max_in_flight: int
    kind: Literal["gathered"] = "gathered"

    @property
    def values(self) -> dict[str, T]:
        return {b.label: b.value for b in self.branches if isinstance(b, BranchOk)}

    @property
    def failures(self) -> tuple[BranchFailed, ...]:
        return tuple(b for b in self.branches if isinstance(b, BranchFailed))


async def scatter_gather(
    calls: Mapping[str, Callable[[], Awaitable[T]]],
    *,
    max_concurrency: int = 8,
    timeout_s: float | None = None,
) -> Gathered[T]:
    """Run every call with at most ``max_concurrency`` in flight, each bounded by ``timeout_s``
    of wall time once started, and gather a typed result per label. Only cancellation escapes."""
    _bounded("max_concurrency", max_concurrency, 1, MAX_CONCURRENCY)
    if timeout_s is not None:
        _bounded("timeout_s", timeout_s, 0, 86_400, above=True)
    items = list(calls.items())
    results: list[BranchOk[T] | BranchFailed | None] = [None] * len(items)
    cursor = in_flight = peak = 0

    async def one(label: str, call: Callable[[], Awaitable[T]]) -> BranchOk[T] | BranchFailed:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                value = await call()
        except Exception as exc:  # a branch's failure is its result, never the caller's
            ms = (time.perf_counter() - started) * 1000
            if isinstance(exc, TimeoutError):
                return BranchFailed(label, f"no answer within {timeout_s} s", True, ms, exc)
            return BranchFailed(label, _describe(exc), False, ms, exc)
        return BranchOk(label, value, (time.perf_counter() - started) * 1000)

    async def worker() -> None:
        # Workers pull the next call, so a large fan-out holds max_concurrency tasks, not N.
        nonlocal cursor, in_flight, peak
        while cursor < len(items):
            index, cursor = cursor, cursor + 1
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                results[index] = await one(*items[index])
            finally:
                in_flight -= 1

    async with asyncio.TaskGroup() as group:
        for _ in range(min(max_concurrency, len(items))):
            group.create_task(worker())
    return Gathered(tuple(r for r in results if r is not None), peak)


# --- the saga's values ----------------------------------------------------------------------

SAGA_TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "running": frozenset({"running", "completed", "compensating"}),
        "compensating": frozenset({"compensating", "compensated", "compensation_failed"}),
        "compensation_failed": frozenset({"compensating"}),  # a person asked to retry
        "completed": frozenset(),
        "compensated": frozenset(),
    }
)
"""The saga row's legal moves; a state moving to itself records a step's progress."""

StepStatus = Literal[
    "pending", "started", "done", "failed", "compensating", "compensated", "compensation_failed"
]
Effect = Literal["none", "unknown", "done"]


def saga_step_key(saga_id: str, step: str) -> str:
    """The idempotency key (and commit-ledger key) a step's action runs under."""
    return f"saga:{saga_id}:step:{step}"


def compensation_key(saga_id: str, step: str) -> str:
    """The idempotency key (and commit-ledger key) a step's compensation runs under."""
    return f"saga:{saga_id}:compensate:{step}"


@dataclass(frozen=True, slots=True)
class SagaStepContext:
    """What an action is given: pass ``key`` to the receiving system. ``resumed``: a crash
    left the step possibly done and it is performed again with the same key."""

    saga_id: str
    step: str
    key: str
    input: Any
    results: Mapping[str, Any]
    resumed: bool
    kind: Literal["step"] = "step"


@dataclass(frozen=True, slots=True)
class CompensationContext:
    """What a compensation is given. With ``effect`` ``unknown`` the step may or may not have
    happened (``result`` is None), so undoing must tolerate finding nothing to undo."""

    saga_id: str
    step: str
    key: str
    input: Any
    result: Any
    effect: Literal["unknown", "done"]
    attempt: int
    kind: Literal["compensation"] = "compensation"


@dataclass(frozen=True, slots=True)
class SagaStep:
    """A side-effecting action and the compensation that undoes it, both idempotent on the key
    they are given."""

    name: str
    action: Callable[[SagaStepContext], Awaitable[Any]]
    compensate: Callable[[CompensationContext], Awaitable[Any]]
    kind: Literal["step"] = "step"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(f"step name {self.name!r}: use 1-64 letters, digits, '_.-'")


@dataclass(frozen=True, slots=True)
class Parallel:
    """Steps run at once (at most the saga's ``max_concurrency``); the stage ends when all have
    ended, and if any failed, every step done so far is compensated."""

    steps: tuple[SagaStep, ...]
    kind: Literal["parallel"] = "parallel"


@dataclass(frozen=True, slots=True)
class SagaStepRecord:
    status: StepStatus = "pending"
    effect: Effect = "none"
    result: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """The saga row's data: its input, each step's record, and how it ended."""

    saga: str
    input: Any
    order: tuple[str, ...]
    steps: dict[str, SagaStepRecord]
    failed_step: str | None = None
    reason: str | None = None
    compensated: tuple[str, ...] = ()
    approval_id: str | None = None
    escalations: int = 0
    kill_scopes: tuple[str, ...] = ()
    """Scopes besides its own the saga's steps stop for, e.g. ``run:`` of its workflow row."""


def plan_compensation(record: SagaRecord) -> tuple[str, ...]:
    """The steps still to undo, in the order to undo them: those whose effect is done or
    unknown and that are not compensated yet, last declared first."""
    steps = record.steps
    return tuple(
        n
        for n in reversed(record.order)
        if steps[n].effect != "none" and steps[n].status != "compensated"
    )


def _with_step(record: SagaRecord, name: str, **changes: Any) -> SagaRecord:
    return replace(record, steps={**record.steps, name: replace(record.steps[name], **changes)})


def _failed(name: str, effect: Effect, error: str, record: SagaRecord) -> SagaRecord:
    """The first failure names the saga's failed step; later ones (in a Parallel) only their own."""
    return replace(
        _with_step(record, name, status="failed", effect=effect, error=error),
        failed_step=record.failed_step or name,
        reason=record.reason or f"step {name} failed: {error}",
    )


def _compensated(name: str, record: SagaRecord) -> SagaRecord:
    changed = _with_step(record, name, status="compensated")
    return replace(changed, compensated=(*record.compensated, name))


@dataclass(frozen=True, slots=True)
class SagaCompleted:
    """Every step was done; ``results`` by step name."""

    saga_id: str
    results: Mapping[str, Any]
    replayed: bool = False
    kind: Literal["completed"] = "completed"


@dataclass(frozen=True, slots=True)
class SagaCompensated:
    """A step failed and every effect before it was undone, in ``compensated_steps`` order."""

    saga_id: str
    failed_step: str
    reason: str
    compensated_steps: tuple[str, ...]
    replayed: bool = False
    kind: Literal["compensated"] = "compensated"


@dataclass(frozen=True, slots=True)
class SagaNeedsHuman:
    """Some compensations kept failing; escalation ``approval_id`` asks a person to decide."""

    saga_id: str
    approval_id: str
    failed_step: str
    reason: str
    compensated_steps: tuple[str, ...]
    failed_compensations: tuple[str, ...]
    replayed: bool = False
    kind: Literal["needs_human"] = "needs_human"


@dataclass(frozen=True, slots=True)
class SagaPreempted:
    """This run stopped before the saga ended; resume it later. Either another runner moved
    the saga's row, or (``killed`` set) the kill switch stopped a scope the saga runs under
    before its next step started: nothing more was called, and after the scope is revived
    ``resume`` carries on from the same step."""

    saga_id: str
    expected_version: int
    actual_version: int | None
    killed: Killed | None = None
    kind: Literal["preempted"] = "preempted"

    @property
    def why(self) -> str:
        """Why the saga stopped, for an operator: the kill switch, or another runner."""
        if self.killed is not None:
            k = self.killed
            return (
                f"saga {self.saga_id} was stopped by the kill switch on {k.scope} "
                f"({k.killed_by}: {k.reason}); it resumes at the same step once that is revived"
            )
        return (
            f"saga {self.saga_id} is held by another runner (row version "
            f"{self.actual_version}, expected {self.expected_version})"
        )


SagaResult = SagaCompleted | SagaCompensated | SagaNeedsHuman | SagaPreempted

_OPTIONS = {
    "retry the failed compensations": "each is called again with its same idempotency key "
    "(Saga.resume(..., retry_compensations=True)); the saga ends compensated or escalates again",
    "undo by hand": "a person reverses the effects listed as not undone; the saga stays "
    "compensation_failed as the record of what happened",
    "accept the remaining effects": "the effects listed as not undone stay in place for the "
    "customer; nothing else changes",
}


def _escalation_request(saga_id: str, record: SagaRecord, failed: Sequence[str]) -> object:
    """What a person sees: what happened, each step's outcome, what was and was not undone,
    the decision needed and the options with their expected impact."""
    return {
        "saga": record.saga,
        "saga_id": saga_id,
        "what_happened": record.reason,
        "steps": {
            n: {"status": s.status, "effect": s.effect, "result": s.result, "error": s.error}
            for n, s in record.steps.items()
        },
        "undone": list(record.compensated),
        "not_undone": [
            {
                "step": n,
                "step_result": record.steps[n].result,
                "compensation_key": compensation_key(saga_id, n),
                "error": record.steps[n].error,
            }
            for n in failed
        ],
        "decision_needed": "how to settle the effects that could not be undone",
        "options": [{"option": o, "expected_impact": i} for o, i in _OPTIONS.items()],
    }


# --- the runtime ----------------------------------------------------------------------------


class Saga:
    """Stages (a :class:`SagaStep` or a :class:`Parallel` group) run durably on a store.
    ``run`` starts an instance or continues it; ``resume`` continues one from its row."""

    def __init__(
        self,
        name: str,
        stages: Sequence[SagaStep | Parallel],
        *,
        max_concurrency: int = 4,
        step_timeout_s: float = 60.0,
        compensation_attempts: int = 5,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
        escalation_sla: timedelta | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ConfigError(f"saga name {name!r}: use 1-64 letters, digits, '_.-'")
        steps = [s for st in stages for s in (st.steps if isinstance(st, Parallel) else (st,))]
        if not steps or any(isinstance(st, Parallel) and not st.steps for st in stages):
            raise ConfigError(f"saga {name}: it and every Parallel stage need at least one step")
        self.order = tuple(s.name for s in steps)
        if len(set(self.order)) != len(self.order):
            raise ConfigError(f"saga {name}: step names must be unique, got {list(self.order)}")
        _bounded("max_concurrency", max_concurrency, 1, MAX_CONCURRENCY)
        _bounded("step_timeout_s", step_timeout_s, 0, 86_400, above=True)
        _bounded("compensation_attempts", compensation_attempts, 1, 50)
        _bounded("backoff_initial_s", backoff_initial_s, 0, 3600, above=True)
        _bounded("backoff_max_s", backoff_max_s, backoff_initial_s, 3600)
        self.name, self.stages, self.steps = name, tuple(stages), {s.name: s for s in steps}
        self.max_concurrency, self.step_timeout_s = max_concurrency, step_timeout_s
        self.retrying = partial(
            tenacity.AsyncRetrying,
            stop=tenacity.stop_after_attempt(compensation_attempts),
            wait=tenacity.wait_exponential_jitter(
                multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
            ),
            reraise=True,
        )
        self.compensation_attempts, self.escalation_sla = compensation_attempts, escalation_sla

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={list(self.order)})"

    async def run(
        self,
        saga_id: str,
        input: Any,
        *,
        store: Store,
        clock: Clock | None = None,
        kill_scopes: Sequence[str] = (),
    ) -> SagaResult:
        """Start saga ``saga_id`` on ``input``, or continue it if it exists with that input. An
        ended saga answers its ending, marked ``replayed``, without doing anything.
        ``kill_scopes``: more scopes whose stop halts its steps (kept with the saga), e.g.
        ``("run:<row id>", "kind:<workflow>")`` of the workflow instance that runs it."""
        row_id, plain = f"saga:{saga_id}", codec.decode(codec.encode(input))
        scopes_for(self.name, saga_id, *kill_scopes)  # a bad scope fails before any write
        if await store.get_row(row_id) is None:
            record = SagaRecord(
                self.name,
                plain,
                self.order,
                {n: SagaStepRecord() for n in self.order},
                kill_scopes=tuple(kill_scopes),
            )
            outcome = await store.apply(
                UnitOfWork()
                .create_row(row_id, kind="saga", state="running", data=record)
                .append_event(row_id, "saga_started", {"saga": self.name, "steps": self.order})
            )
            if not isinstance(outcome, Applied | Duplicate):  # Duplicate: another runner won
                raise SagaError(f"saga {saga_id}: the store refused to create it: {outcome}")
        run = await self._load(saga_id, store, clock)
        if codec.encode(run.record.input) != codec.encode(plain):
            raise SagaError(
                f"saga {saga_id} exists with another input; use a new id for new input, or "
                "resume(saga_id) to continue the existing one"
            )
        return await run.drive(retry=None)

    async def resume(
        self,
        saga_id: str,
        *,
        store: Store,
        clock: Clock | None = None,
        retry_compensations: bool = False,
        principal: str | None = None,
        reason: str | None = None,
    ) -> SagaResult:
        """Continue saga ``saga_id`` from its row, in any process, at any later time.
        ``retry_compensations`` is a person's answer to the escalation: a ``compensation_failed``
        saga's failed compensations are called again, and the escalation is settled as answered
        by ``principal`` for ``reason`` in the same unit of work as the saga's move."""
        answer = None
        if retry_compensations:
            if not principal or not reason or not reason.strip():
                raise ConfigError(
                    "retry_compensations answers the escalation: pass principal= (who) and "
                    "reason= (why), both recorded in the audit trail"
                )
            answer = (principal, reason)
        return await (await self._load(saga_id, store, clock)).drive(retry=answer)

    async def _load(self, saga_id: str, store: Store, clock: Clock | None) -> _Run:
        row = await store.get_row(f"saga:{saga_id}")
        if row is None or row.kind != "saga":
            raise SagaError(f"no saga {saga_id!r} in {store.url}; start it with run()")
        run = _Run(self, saga_id, store, clock or SystemClock(), row)
        if run.record.saga != self.name or run.record.order != self.order:
            raise SagaError(
                f"saga {saga_id} was started as {run.record.saga} with steps "
                f"{list(run.record.order)}; this definition is {self.name} with "
                f"{list(self.order)}. Finish it with the definition it started with."
            )
        return run


class _Run:
    """One run of one saga instance: it holds the row's version and serialises its writes."""

    def __init__(self, saga: Saga, saga_id: str, store: Store, clock: Clock, row: Row) -> None:
        self.saga, self.saga_id, self.store, self.clock = saga, saga_id, store, clock
        self.row_id = self.stream = row.id
        self.version, self.state, self.record = row.version, row.state, row.data_as(SagaRecord)
        self.lock = asyncio.Lock()
        self.preempted: StaleVersion | None = None
        self.killed: Killed | None = None
        self.scopes = scopes_for(saga.name, saga_id, *self.record.kill_scopes)

    async def save(
        self, to: str | None, change: Callable[[SagaRecord], SagaRecord], unit: UnitOfWork
    ) -> bool:
        """CAS the row to state ``to`` (None: stay) with ``change`` applied to the latest
        record, in one transaction with ``unit``. False: another runner moved the row."""
        async with self.lock:  # parallel steps of one run take turns on the row's version
            if self.preempted is not None:
                return False
            target = to or self.state
            if target not in SAGA_TRANSITIONS[self.state]:
                raise SagaError(f"saga {self.saga_id}: no move from {self.state} to {target}")
            record = change(self.record)
            if target != self.state:
                why = {"failed_step": record.failed_step, "reason": record.reason}
                unit.append_event(
                    self.stream, f"saga_{target}", why if to == "compensating" else {}
                )
            unit.transition(self.row_id, expect_version=self.version, to=target, data=record)
            outcome = await self.store.apply(unit)
            if isinstance(outcome, Killed):  # only a step's start checks: it never began
                self.killed = outcome
                return False
            if not isinstance(outcome, Applied):
                # Whichever write of the unit hit the conflict first (the CAS, or a ledger key
                # another runner settled), a moved row means another runner holds the saga.
                row = await self.store.get_row(self.row_id)
                actual = None if row is None else row.version
                if actual != self.version:
                    self.preempted = StaleVersion(self.row_id, self.version, actual)
                    return False
                raise SagaError(
                    f"saga {self.saga_id}: a write at row version {self.version} was refused "
                    f"with {outcome}; row and ledger disagree, inspect stream {self.stream}"
                )
            self.version, self.state, self.record = outcome.versions[self.row_id], target, record
            return True

    async def drive(self, *, retry: tuple[str, str] | None) -> SagaResult:
        replayed = self.state in ("completed", "compensated", "compensation_failed")
        if retry is not None and self.state == "compensation_failed":
            replayed = False
            unit = UnitOfWork()
            approval_id = self.record.approval_id
            approval = await self.store.get_approval(approval_id) if approval_id else None
            if approval is not None and approval.status == "pending":
                principal, reason = retry
                settle_escalation_into(
                    unit, approval.id, principal=principal, answer="retry", reason=reason
                )
            await self.save("compensating", lambda r: r, unit)
        if self.state == "running":
            await self.forward()
        if self.state == "compensating" and self.preempted is None:
            for name in plan_compensation(self.record):
                await self.compensate(self.saga.steps[name])
            if failed := plan_compensation(self.record):
                await self.escalate(failed)
            else:
                await self.save("compensated", lambda r: r, UnitOfWork())
        return self.result(replayed)

    async def forward(self) -> None:
        for stage in self.saga.stages:
            steps = stage.steps if isinstance(stage, Parallel) else (stage,)
            todo = [s for s in steps if self.record.steps[s.name].status != "done"]
            if len(todo) == 1:
                await self.perform(todo[0])
            elif todo:
                gathered = await scatter_gather(
                    {s.name: partial(self.perform, s) for s in todo},
                    max_concurrency=self.saga.max_concurrency,
                )
                for failure in gathered.failures:  # perform() raises only for store trouble
                    raise failure.exception or SagaError(failure.error)
            if self.state != "running" or self.preempted is not None or self.killed is not None:
                return
        await self.save("completed", lambda r: r, UnitOfWork())

    async def perform(self, step: SagaStep) -> None:
        if self.state != "running" or self.killed is not None:
            return  # a step of this Parallel stage failed, or a scope was stopped: start no more
        name, key = step.name, saga_step_key(self.saga_id, step.name)
        resumed = self.record.steps[name].status == "started"
        unit = UnitOfWork()
        if resumed:
            unit.append_event(self.stream, "step_resumed", {"step": name, "key": key})
        else:  # the compensation is registered, and the effect marked unknown, before the call
            undo = compensation_key(self.saga_id, name)
            unit.commit_intent(key, run_id=self.saga_id, boundary=f"saga:{self.saga.name}")
            payload = {"step": name, "key": key, "compensation_key": undo}
            unit.append_event(self.stream, "step_started", payload)
        # The step starts (or is called again) only if no scope of the saga is stopped, checked
        # in the transaction that records the start: it began before the kill or never does.
        unit.require_alive(*self.scopes)
        if not await self.save(
            None, lambda r: _with_step(r, name, status="started", effect="unknown"), unit
        ):
            if self.killed is not None:
                await self.note_kill(name, self.killed)
            return
        done = {n: s.result for n, s in self.record.steps.items() if s.status == "done"}
        try:
            async with asyncio.timeout(self.saga.step_timeout_s):
                value = await step.action(
                    SagaStepContext(self.saga_id, name, key, self.record.input, done, resumed)
                )
            result = codec.decode(codec.encode(value))
        except Exception as exc:  # the step failed: the saga compensates, nothing escapes
            # A timeout (or a result that cannot be recorded) may hide an effect that landed.
            effect: Effect = "unknown" if isinstance(exc, TimeoutError | CodecError) else "none"
            error = _describe(exc)
            unit = UnitOfWork().complete_commit(
                key, {"ok": False, "error": error, "effect": effect}
            )
            unit.append_event(self.stream, "step_failed", {"step": name, "error": error})
            await self.save("compensating", partial(_failed, name, effect, error), unit)
            return
        unit = UnitOfWork().complete_commit(key, {"ok": True, "result": result})
        unit.append_event(self.stream, "step_done", {"step": name, "result": result})
        await self.save(
            None, lambda r: _with_step(r, name, status="done", effect="done", result=result), unit
        )

    async def note_kill(self, step: str, killed: Killed) -> None:
        """Log, once per row version, that the kill switch refused to start ``step``. Only the
        log is written: the row stays as it was, ready to resume at that step."""
        payload = {
            "step": step,
            "scope": killed.scope,
            "by": killed.killed_by,
            "reason": killed.reason,
        }
        await self.store.apply(
            UnitOfWork().append_event(
                self.stream,
                "step_refused_killed",
                payload,
                idempotency_key=f"{self.row_id}:killed:v{self.version}",
            )
        )

    async def compensate(self, step: SagaStep) -> None:
        name, key = step.name, compensation_key(self.saga_id, step.name)
        before = self.record.steps[name]
        unit = UnitOfWork()
        if before.status in ("compensating", "compensation_failed"):
            # In flight when a crash hit, or given up before: same key, the receiver dedupes.
            unit.append_event(self.stream, "compensation_resumed", {"step": name, "key": key})
        else:
            unit.commit_intent(key, run_id=self.saga_id, boundary=f"saga:{self.saga.name}")
            unit.append_event(self.stream, "compensation_started", {"step": name, "key": key})
        if not await self.save(None, lambda r: _with_step(r, name, status="compensating"), unit):
            return
        effect: Literal["unknown", "done"] = "done" if before.effect == "done" else "unknown"
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            ctx = CompensationContext(
                self.saga_id, name, key, self.record.input, before.result, effect, attempts
            )
            async with asyncio.timeout(self.saga.step_timeout_s):
                return codec.decode(codec.encode(await step.compensate(ctx)))

        async def failed_attempt(state: tenacity.RetryCallState) -> None:
            raised = state.outcome.exception() if state.outcome else None
            error = _describe(raised) if raised else "no exception recorded"
            payload = {"step": name, "attempt": attempts, "error": error}
            await self.store.apply(
                UnitOfWork().append_event(self.stream, "compensation_attempt_failed", payload)
            )

        try:  # backoff sleeps on the saga's clock: no real time under a VirtualClock
            retrying = self.saga.retrying(sleep=self.clock.sleep, after=failed_attempt)
            result: Any = await retrying(attempt)
        except Exception as exc:  # attempts ran out: the intent stays pending, a person decides
            error = _describe(exc)
            payload = {"step": name, "key": key, "attempts": attempts, "error": error}
            unit = UnitOfWork().append_event(self.stream, "compensation_failed", payload)
            await self.save(
                None, lambda r: _with_step(r, name, status="compensation_failed", error=error), unit
            )
            return
        unit = UnitOfWork().complete_commit(key, {"ok": True, "result": result})
        pending = await self.store.get_commit(saga_step_key(self.saga_id, name))
        if pending is not None and pending.status == "pending":
            # A crash had left the step's own outcome unknown; undoing it settles it.
            unit.complete_commit(pending.key, {"ok": None, "effect": "unknown", "undone_by": key})
        payload = {"step": name, "attempts": attempts, "result": result}
        unit.append_event(self.stream, "compensation_done", payload)
        await self.save(None, partial(_compensated, name), unit)

    async def escalate(self, failed: Sequence[str]) -> None:
        n = self.record.escalations + 1
        approval_id, actor = f"esc:{self.row_id}:{n}", f"saga:{self.saga.name}"
        reason = (
            f"{len(failed)} compensation(s) of saga {self.saga.name} still failed after "
            f"{self.saga.compensation_attempts} attempt(s) each: {', '.join(failed)}"
        )
        sla = self.saga.escalation_sla
        unit = UnitOfWork().open_approval(
            id=approval_id,
            kind="escalation",
            reason=reason,
            request=_escalation_request(self.saga_id, self.record, failed),
            requested_by=actor,
            run_id=self.saga_id,
            row_id=self.row_id,
            due_at=self.clock.now() + sla if sla else None,
        )
        details = {"approval_id": approval_id, "not_undone": list(failed)}
        unit.audit(
            actor=actor,
            action="escalate",
            subject=self.row_id,
            decision="needs_human",
            reason=reason,
            details=details,
        )
        unit.append_event(self.stream, "escalated", {"approval_id": approval_id, "steps": failed})
        await self.save(
            "compensation_failed",
            lambda r: replace(r, approval_id=approval_id, escalations=n),
            unit,
        )

    def result(self, replayed: bool) -> SagaResult:
        r = self.record
        if self.preempted is not None:
            return SagaPreempted(self.saga_id, self.preempted.expected, self.preempted.actual)
        if self.killed is not None and self.state == "running":
            return SagaPreempted(self.saga_id, self.version, self.version, self.killed)
        if self.state == "completed":
            return SagaCompleted(self.saga_id, {n: r.steps[n].result for n in r.order}, replayed)
        failed_step, reason, undone = r.failed_step or "", r.reason or "", r.compensated
        if self.state == "compensated":
            return SagaCompensated(self.saga_id, failed_step, reason, undone, replayed)
        if self.state == "compensation_failed" and r.approval_id is not None:
            still = plan_compensation(r)
            return SagaNeedsHuman(
                self.saga_id, r.approval_id, failed_step, reason, undone, still, replayed
            )
        raise SagaError(f"saga {self.saga_id} stopped in state {self.state}; resume it")


async def saga_trace(store: Store, saga_id: str) -> list[str]:
    """The saga's events as readable lines, oldest first: position, event, step, details
    (idempotency keys left out: they follow from the saga id and the step)."""
    lines: list[str] = []
    after = 0
    while page := await store.read_stream(f"saga:{saga_id}", after=after):
        for e in page:
            payload = e.payload if isinstance(e.payload, dict) else {}
            step = payload.pop("step", "")
            shown = {k: v for k, v in payload.items() if v not in (None, "") and k[-3:] != "key"}
            detail = " ".join(f"{k}={v}" for k, v in shown.items())
            lines.append(f"{e.stream_seq:>3} {e.type:<27} {step:<17} {detail}".rstrip())
        after = page[-1].stream_seq
    return lines
