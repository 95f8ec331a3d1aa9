"""What a boundary run ends in, and the record of each attempt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

from seamline.boundary._verdicts import Reject, Verdict
from seamline.models import ModelResponse
from seamline.store import UnitOfWork

__all__ = [
    "Attempt",
    "BoundaryResult",
    "Committed",
    "EffectCommit",
    "Escalate",
    "Escalated",
    "Fail",
    "Failed",
    "Fallback",
    "ModelFailure",
    "StoreCommit",
]

C = TypeVar("C")
I = TypeVar("I")  # noqa: E741


@dataclass(frozen=True, slots=True)
class ModelFailure:
    """The proposer failed to answer (a tool failure, not a reject: nothing was proposed)."""

    code: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    prompt_hash: str
    response: ModelResponse | None
    failure: ModelFailure | None = None
    candidate_json: str | None = None
    verdicts: tuple[Verdict, ...] = ()

    @property
    def status(self) -> Literal["accepted", "rejected", "failed"]:
        if self.failure is not None:
            return "failed"
        if not self.verdicts or any(v.kind == "reject" for v in self.verdicts):
            return "rejected"
        return "accepted"

    @property
    def rejects(self) -> tuple[Reject, ...]:
        return tuple(v for v in self.verdicts if isinstance(v, Reject))


@dataclass(frozen=True, slots=True)
class Committed:
    """The action was verified and committed exactly once. ``replayed``: this call found the
    commit already recorded and returned its result without doing anything."""

    boundary: str
    key: str
    result: Any
    attempts: tuple[Attempt, ...] = ()
    replayed: bool = False
    via: Literal["model", "fallback"] = "model"
    flags: tuple[str, ...] = ()
    kind: Literal["committed"] = "committed"


@dataclass(frozen=True, slots=True)
class Escalated:
    """Attempts ran out (or the budget did) and a person was asked to decide."""

    boundary: str
    key: str
    approval_id: str
    reason: str
    attempts: tuple[Attempt, ...] = ()
    replayed: bool = False
    kind: Literal["escalated"] = "escalated"


@dataclass(frozen=True, slots=True)
class Failed:
    """Nothing was committed. ``retryable``: running the boundary again may succeed."""

    boundary: str
    key: str
    reason_code: str
    message: str
    retryable: bool
    attempts: tuple[Attempt, ...] = ()
    replayed: bool = False
    kind: Literal["failed"] = "failed"


BoundaryResult = Committed | Escalated | Failed


@dataclass(frozen=True)
class StoreCommit(Generic[C, I]):
    """The commit is a store write. ``write`` adds it to the unit that also records the
    accept and the commit-ledger row, so all of it lands in one transaction or none does.
    It returns the commit's result (any JSON value)."""

    write: Callable[[C, I, UnitOfWork], Any]
    kind: Literal["store"] = "store"


@dataclass(frozen=True)
class EffectCommit(Generic[C, I]):
    """The commit is a side effect outside the store (an email, an API call).

    Outbox style: the accepted candidate and a pending commit-ledger row are recorded first,
    then ``perform(candidate, input, idempotency_key)`` runs, then its result is recorded.
    After a crash between the two, the next run performs the *recorded* candidate again with
    the same key, so ``perform`` must be idempotent on that key (pass it to the receiving
    system, as payment APIs accept an idempotency key). The ledger holds one result per key.
    """

    perform: Callable[[C, I, str], Awaitable[Any]]
    kind: Literal["effect"] = "effect"


@dataclass(frozen=True)
class Escalate:
    """When attempts run out, open an escalation for a person."""

    decision: str = "choose an action the agent could not produce within policy"
    options: tuple[str, ...] = ("approve an edited proposal", "reject", "take over manually")
    sla: timedelta | None = None
    kind: Literal["escalate"] = "escalate"


@dataclass(frozen=True)
class Fallback(Generic[C, I]):
    """When attempts run out, commit a deterministic fallback candidate (still verified)."""

    produce: Callable[[I], C]
    kind: Literal["fallback"] = "fallback"


@dataclass(frozen=True)
class Fail:
    """When attempts run out, end with a typed failure."""

    kind: Literal["fail"] = "fail"


@dataclass(frozen=True)
class _Recorded:
    """What the event stream says about an instance before this run."""

    end: BoundaryResult | None = None
    accepted_json: str | None = None
    pending_effect: bool = False
    next_attempt: int = 1
    via: Literal["model", "fallback"] = "model"
    flags: tuple[str, ...] = field(default=())
