"""What the store holds, as frozen values.

JSON columns are kept as the codec's text and decoded on demand, so a record read back is
exactly what was written, and callers choose the type to decode into (``payload_as``).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

from seamline import codec

__all__ = [
    "Approval",
    "ApprovalStatus",
    "AuditEntry",
    "CommitRecord",
    "CommitStatus",
    "Event",
    "Row",
    "RunRecord",
    "RunStats",
    "RunStatus",
    "SpanCount",
    "SpanRecord",
    "Timer",
    "TimerStatus",
    "UsageEntry",
    "UsageTotals",
]

T = TypeVar("T")

CommitStatus = Literal["pending", "done"]
TimerStatus = Literal["pending", "fired", "noop", "cancelled"]
ApprovalStatus = Literal["pending", "approved", "rejected", "edited", "expired"]


def _maybe(text: str | None) -> Any:
    return None if text is None else codec.decode(text)


@dataclass(frozen=True, slots=True)
class Row:
    """One workflow instance: a durable, versioned row changed only by compare-and-swap."""

    id: str
    kind: str
    state: str
    version: int
    data_json: str
    created_at: datetime
    updated_at: datetime

    @property
    def data(self) -> Any:
        return codec.decode(self.data_json)

    def data_as(self, type_: type[T]) -> T:
        return codec.decode(self.data_json, type_)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the append-only log, with its global and per-stream position."""

    seq: int
    stream: str
    stream_seq: int
    type: str
    payload_json: str
    model_version: str | None
    prompt_hash: str | None
    causation_id: str | None
    idempotency_key: str | None
    recorded_at: datetime

    @property
    def payload(self) -> Any:
        return codec.decode(self.payload_json)

    def payload_as(self, type_: builtins.type[T]) -> T:
        return codec.decode(self.payload_json, type_)


@dataclass(frozen=True, slots=True)
class CommitRecord:
    """A commit-ledger entry: the one result of the side effect behind an idempotency key."""

    key: str
    run_id: str | None
    boundary: str | None
    status: CommitStatus
    result_json: str | None
    created_at: datetime
    completed_at: datetime | None

    @property
    def result(self) -> Any:
        return _maybe(self.result_json)


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer attached to a row at the version it was scheduled at."""

    id: str
    row_id: str
    row_version: int
    name: str
    due_at: datetime
    payload_json: str
    status: TimerStatus
    settled_at: datetime | None

    @property
    def payload(self) -> Any:
        return codec.decode(self.payload_json)


@dataclass(frozen=True, slots=True)
class Approval:
    """A request for a person: an approval (a yes/no under an SLA) or an escalation."""

    id: str
    kind: Literal["approval", "escalation"]
    run_id: str | None
    row_id: str | None
    status: ApprovalStatus
    reason: str
    request_json: str
    decision_json: str | None
    requested_by: str
    decided_by: str | None
    created_at: datetime
    due_at: datetime | None
    decided_at: datetime | None

    @property
    def request(self) -> Any:
        return codec.decode(self.request_json)

    @property
    def decision(self) -> Any:
        return _maybe(self.decision_json)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who or what decided what, under which policy version, and why."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    decision: str
    policy_version: str | None
    reason: str
    details_json: str

    @property
    def details(self) -> Any:
        return codec.decode(self.details_json)


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One model call's tokens, price and latency, charged to a run."""

    seq: int
    run_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    latency_ms: float
    at: datetime


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What a run has spent so far."""

    run_id: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


RunStatus = Literal["committed", "escalated", "failed"]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """How one boundary instance ended: the row metrics and the runs list read.

    ``id`` is the instance's idempotency key; ``run_id`` the caller's run it belongs to;
    ``kind`` the workflow kind it serves. ``latency_ms`` is wall time from the start of the
    run that ended it to its ending; ``context_utilisation`` the largest prompt of any
    attempt as a share of the proposer's context window (None: no model call).
    """

    id: str
    run_id: str
    boundary: str
    kind: str
    status: RunStatus
    reason: str | None
    attempts: int
    rejects: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    context_utilisation: float | None
    started_at: datetime
    ended_at: datetime
    latency_ms: float
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """A finished trace span as the store keeps it (ids in lower-case hex)."""

    span_id: str
    trace_id: str
    parent_id: str | None
    name: str
    run_id: str | None
    started_at: datetime
    ended_at: datetime
    status: str
    attributes_json: str

    @property
    def attributes(self) -> dict[str, Any]:
        value: dict[str, Any] = codec.decode(self.attributes_json)
        return value


@dataclass(frozen=True, slots=True)
class RunStats:
    """Aggregates over the runs table for one window (and kind): what metrics read.

    Percentiles are nearest-rank (the value at rank ``ceil(0.95 * n)`` of the sorted
    samples), so they are a recorded value and identical on every backend.
    ``context_utilisation_sum`` is rounded to 9 places for the same reason.
    """

    runs: int
    committed: int
    escalated: int
    failed: int
    attempts: int
    rejects: int
    cost: Decimal
    latency_p95_ms: float | None
    context_samples: int
    context_utilisation_sum: float
    context_utilisation_p95: float | None


@dataclass(frozen=True, slots=True)
class SpanCount:
    """How many kept spans of one name ended with one status."""

    name: str
    status: str
    count: int
