"""P5, the shared state machine: the spine of long-running workflows.

A workflow kind is a literal transition table plus guards, terminal states and, per state,
what to do when its step fails. Each instance is one durable, versioned row. A move is a
proposal ``{from, to, if_version, patch}`` checked by a pure function against the table, then
applied by compare-and-swap in the same unit of work as its ``transitioned`` event, so the
audit stream and the row never disagree. A stale or illegal proposal is a typed reject, never
an exception: the proposer (a model through a boundary, a person, a timer) re-reads and tries
again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import pydantic

from seamline.boundary import Accept, Reject, Verdict, VerifyContext
from seamline.errors import ConfigError
from seamline.store import Applied, Killed, Row, StaleVersion, Store, UnitOfWork
from seamline.telemetry import span

__all__ = [
    "DeadLetter",
    "EscalateOnFailure",
    "FailToCaller",
    "FailurePolicy",
    "Moved",
    "Retry",
    "StateMachine",
    "TransitionProposal",
    "TransitionRejected",
    "apply_transition",
]

Guard = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]
"""(the row's data, the proposed patch) -> may this move happen?"""


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the failed step again, ``times`` in all, backing off; then take ``then``."""

    times: int = 3
    backoff: timedelta = timedelta(minutes=1)
    then: Literal["escalate", "dead_letter", "fail"] = "escalate"
    kind: Literal["retry"] = "retry"


@dataclass(frozen=True, slots=True)
class EscalateOnFailure:
    """Suspend the instance at the failed state and ask a person; resuming re-enters it."""

    kind: Literal["escalate"] = "escalate"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Park the instance at the failed state with a ``dead_lettered`` event for inspection."""

    kind: Literal["dead_letter"] = "dead_letter"


@dataclass(frozen=True, slots=True)
class FailToCaller:
    """Report the failure to whoever drives the runner; the instance stays where it is."""

    kind: Literal["fail"] = "fail"


FailurePolicy = Retry | EscalateOnFailure | DeadLetter | FailToCaller


class TransitionProposal(pydantic.BaseModel):
    """A proposed move, as a worker or a model proposes it."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = pydantic.Field(alias="from", min_length=1, max_length=100)
    target: str = pydantic.Field(alias="to", min_length=1, max_length=100)
    if_version: int = pydantic.Field(ge=1)
    patch: dict[str, Any] = pydantic.Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TransitionRejected:
    """The move did not happen. ``retryable``: re-read the row and propose again."""

    row_id: str
    reason_code: Literal[
        "unknown_row",
        "wrong_source",
        "stale_version",
        "illegal_transition",
        "guard_failed",
        "terminal_state",
        "unknown_state",
        "killed",
    ]
    message: str
    hint: str
    retryable: bool
    kind: Literal["transition_rejected"] = "transition_rejected"


@dataclass(frozen=True, slots=True)
class Moved:
    row_id: str
    source: str
    target: str
    version: int
    kind: Literal["moved"] = "moved"


@dataclass(frozen=True)
class StateMachine:
    """A workflow kind's transition table. The console, the docs and the tests read it too."""

    kind: str
    initial: str
    transitions: Mapping[str, frozenset[str]]
    terminal: frozenset[str] = frozenset()
    guards: Mapping[tuple[str, str], Guard] = field(default_factory=dict)
    on_failure: Mapping[str, FailurePolicy] = field(default_factory=dict)
    default_failure: FailurePolicy = field(default_factory=Retry)

    def __post_init__(self) -> None:
        states = self.states
        if self.initial not in states:
            raise ConfigError(f"{self.kind}: initial state {self.initial!r} is not in the table")
        for source, targets in self.transitions.items():
            unknown = set(targets) - states
            if unknown:
                raise ConfigError(
                    f"{self.kind}: {source!r} -> {sorted(unknown)} names states "
                    "that are neither sources nor terminal"
                )
            if source in self.terminal and targets:
                raise ConfigError(f"{self.kind}: terminal state {source!r} has moves out")
        for source, target in self.guards:
            if target not in self.transitions.get(source, frozenset()):
                raise ConfigError(
                    f"{self.kind}: guard on {source!r} -> {target!r}, which is "
                    "not an allowed transition"
                )

    @property
    def states(self) -> frozenset[str]:
        return frozenset(self.transitions) | self.terminal

    def stream(self, row_id: str) -> str:
        """The event stream of one instance."""
        return f"wf:{self.kind}:{row_id}"

    def failure_policy(self, state: str) -> FailurePolicy:
        return self.on_failure.get(state, self.default_failure)

    def check(
        self, row: Row | None, proposal: TransitionProposal, row_id: str = ""
    ) -> TransitionRejected | None:
        """Pure: may ``proposal`` be applied to ``row``? None means yes."""
        rid = row.id if row is not None else row_id

        def no(code: Any, message: str, hint: str, retryable: bool) -> TransitionRejected:
            return TransitionRejected(rid, code, message, hint, retryable)

        if row is None:
            return no("unknown_row", f"no {self.kind} instance {rid!r}", "check the id", False)
        if row.version != proposal.if_version:
            return no(
                "stale_version",
                f"proposal is for version {proposal.if_version}, the row is at {row.version}",
                "re-read the row and propose again",
                True,
            )
        if row.state != proposal.source:
            return no(
                "wrong_source",
                f"proposal moves from {proposal.source!r}, the row is in {row.state!r}",
                "re-read the row and propose again",
                True,
            )
        if row.state in self.terminal:
            return no("terminal_state", f"{row.state!r} is terminal", "nothing can move it", False)
        if proposal.target not in self.states:
            return no(
                "unknown_state",
                f"{proposal.target!r} is not a state of {self.kind}",
                f"choose one of {sorted(self.transitions.get(row.state, ()))}",
                True,
            )
        allowed = self.transitions.get(row.state, frozenset())
        if proposal.target not in allowed:
            return no(
                "illegal_transition",
                f"{row.state!r} -> {proposal.target!r} is not allowed",
                f"from {row.state!r} choose one of {sorted(allowed)}",
                True,
            )
        guard = self.guards.get((row.state, proposal.target))
        if guard is not None and not guard(row.data, proposal.patch):
            return no(
                "guard_failed",
                f"the guard on {row.state!r} -> {proposal.target!r} refused this patch",
                "change the patch or choose another move",
                True,
            )
        return None

    def verifier(self, current: Callable[[VerifyContext[Any]], Row | None]) -> _MachineVerifier:
        """A boundary verifier: checks a model's :class:`TransitionProposal` against the row
        ``current(ctx)`` returns (typically read just before the boundary runs)."""
        return _MachineVerifier(self, current)

    def add_transition(
        self,
        unit: UnitOfWork,
        row: Row,
        proposal: TransitionProposal,
        *,
        actor: str,
        at: datetime | None = None,
        causation_id: str | None = None,
        model_version: str | None = None,
        prompt_hash: str | None = None,
    ) -> UnitOfWork:
        """Add the CAS move and its event to ``unit`` (call :meth:`check` first)."""
        data = {**(row.data or {}), **proposal.patch}
        version = row.version + 1
        unit.require_alive("all", f"kind:{self.kind}", f"run:{row.id}")
        unit.transition(row.id, expect_version=row.version, to=proposal.target, data=data)
        unit.append_event(
            self.stream(row.id),
            "transitioned",
            {
                "from": row.state,
                "to": proposal.target,
                "version": version,
                "patch": proposal.patch,
                "actor": actor,
                "at": at,
            },
            model_version=model_version,
            prompt_hash=prompt_hash,
            causation_id=causation_id,
            idempotency_key=f"{self.stream(row.id)}:v{version}",
        )
        return unit

    def create(
        self, unit: UnitOfWork, row_id: str, data: Mapping[str, Any], *, actor: str
    ) -> UnitOfWork:
        """Add a new instance in the initial state, with its ``created`` event."""
        unit.create_row(row_id, kind=self.kind, state=self.initial, data=dict(data))
        unit.append_event(
            self.stream(row_id),
            "created",
            {"state": self.initial, "version": 1, "actor": actor},
            idempotency_key=f"{self.stream(row_id)}:v1",
        )
        return unit


@dataclass(frozen=True)
class _MachineVerifier:
    machine: StateMachine
    current: Callable[[VerifyContext[Any]], Row | None]

    @property
    def name(self) -> str:
        return f"transitions:{self.machine.kind}"

    def verify(self, candidate: TransitionProposal, ctx: VerifyContext[Any]) -> Verdict:
        rejected = self.machine.check(self.current(ctx), candidate)
        if rejected is None:
            return Accept(self.name)
        return Reject(
            self.name,
            f"transition.{rejected.reason_code}",
            rejected.reason_code,
            rejected.message,
            rejected.hint,
            rejected.retryable,
            field="to",
        )


async def apply_transition(
    store: Store,
    machine: StateMachine,
    row_id: str,
    proposal: TransitionProposal,
    *,
    actor: str,
    unit: UnitOfWork | None = None,
    causation_id: str | None = None,
) -> Moved | TransitionRejected:
    """Check and apply one proposal; ``unit`` may carry writes that must land with it."""
    attributes = {
        "seamline.row_id": row_id,
        "seamline.transition.to": proposal.target,
        "seamline.actor": actor,
    }
    with span(f"transition {machine.kind}", attributes) as current:
        result = await _apply_transition(
            store, machine, row_id, proposal, actor, unit, causation_id
        )
        if isinstance(result, Moved):
            current.set_attribute("seamline.transition.from", result.source)
            current.set_attribute("seamline.transition.version", result.version)
            current.set_attribute("seamline.transition.outcome", "moved")
        else:
            current.set_attribute("seamline.transition.outcome", result.reason_code)
        return result


async def _apply_transition(
    store: Store,
    machine: StateMachine,
    row_id: str,
    proposal: TransitionProposal,
    actor: str,
    unit: UnitOfWork | None,
    causation_id: str | None,
) -> Moved | TransitionRejected:
    row = await store.get_row(row_id)
    rejected = machine.check(row, proposal, row_id)
    if rejected is not None:
        return rejected
    assert row is not None
    work = machine.add_transition(
        unit or UnitOfWork(), row, proposal, actor=actor, causation_id=causation_id
    )
    outcome = await store.apply(work)
    if isinstance(outcome, Applied):
        return Moved(row_id, row.state, proposal.target, row.version + 1)
    if isinstance(outcome, StaleVersion):
        return TransitionRejected(
            row_id,
            "stale_version",
            f"the row moved to version {outcome.actual} first",
            "re-read the row and propose again",
            True,
        )
    if isinstance(outcome, Killed):
        return TransitionRejected(
            row_id,
            "killed",
            f"{outcome.scope} was stopped by {outcome.killed_by}: {outcome.reason}",
            "wait until the scope is revived",
            False,
        )
    return TransitionRejected(
        row_id,
        "stale_version",
        f"the move conflicted: {outcome}",
        "re-read the row and propose again",
        True,
    )
