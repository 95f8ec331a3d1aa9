"""A unit of work: several writes the store applies atomically, and what came of it.

A unit is a plain value built in memory (``UnitOfWork``), then handed to ``Store.apply``,
which either writes all of it in one transaction or none of it. Payloads are encoded while
the unit is built, so a value that cannot be persisted fails before the store is touched.

Conflicts are outcomes, not exceptions: a compare-and-swap against a moved row, a key that
was already used, a timer or approval that is no longer pending, a consumer offset that moved.
The first conflict rolls the whole unit back and is returned.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from seamline import codec
from seamline.errors import ConfigError
from seamline.store._records import CommitRecord, Event, RunRecord, SpanRecord

__all__ = [
    "Applied",
    "Duplicate",
    "Killed",
    "NotPending",
    "Outcome",
    "StaleOffset",
    "StaleVersion",
    "Throttled",
    "UnitOfWork",
]

COST_SCALE = Decimal("0.000001")
"""Money is stored as whole micro-units so sums in SQL are exact."""


# --- operations (internal: built by UnitOfWork, executed by the engine) -------------------


@dataclass(frozen=True, slots=True)
class CreateRow:
    kind: Literal["create_row"]
    id: str
    row_kind: str
    state: str
    data_json: str


@dataclass(frozen=True, slots=True)
class Transition:
    kind: Literal["transition"]
    id: str
    expect_version: int
    state: str
    data_json: str | None


@dataclass(frozen=True, slots=True)
class AppendEvent:
    kind: Literal["append_event"]
    stream: str
    type: str
    payload_json: str
    model_version: str | None
    prompt_hash: str | None
    causation_id: str | None
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class AdvanceOffset:
    kind: Literal["advance_offset"]
    consumer: str
    stream: str
    expect_position: int
    position: int


@dataclass(frozen=True, slots=True)
class RecordCommit:
    kind: Literal["record_commit"]
    key: str
    run_id: str | None
    boundary: str | None
    pending: bool
    result_json: str | None


@dataclass(frozen=True, slots=True)
class CompleteCommit:
    kind: Literal["complete_commit"]
    key: str
    result_json: str


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    kind: Literal["schedule_timer"]
    id: str
    row_id: str
    row_version: int
    name: str
    due_at: datetime
    payload_json: str


@dataclass(frozen=True, slots=True)
class SettleTimer:
    kind: Literal["settle_timer"]
    id: str
    status: Literal["fired", "noop", "cancelled"]


@dataclass(frozen=True, slots=True)
class OpenApproval:
    kind: Literal["open_approval"]
    id: str
    approval_kind: Literal["approval", "escalation"]
    run_id: str | None
    row_id: str | None
    reason: str
    request_json: str
    requested_by: str
    due_at: datetime | None


@dataclass(frozen=True, slots=True)
class DecideApproval:
    kind: Literal["decide_approval"]
    id: str
    status: Literal["approved", "rejected", "edited", "expired"]
    decided_by: str
    decision_json: str | None


@dataclass(frozen=True, slots=True)
class WriteAudit:
    kind: Literal["audit"]
    actor: str
    action: str
    subject: str
    decision: str
    policy_version: str | None
    reason: str
    details_json: str


@dataclass(frozen=True, slots=True)
class RecordUsage:
    kind: Literal["usage"]
    run_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    latency_ms: float


@dataclass(frozen=True, slots=True)
class RecordRun:
    kind: Literal["run"]
    record: RunRecord


@dataclass(frozen=True, slots=True)
class RecordSpans:
    kind: Literal["spans"]
    spans: tuple[SpanRecord, ...]


@dataclass(frozen=True, slots=True)
class TakeTokens:
    kind: Literal["take_tokens"]
    bucket: str
    amount: float
    rate_per_s: float
    burst: float


@dataclass(frozen=True, slots=True)
class TakeQuota:
    kind: Literal["take_quota"]
    key: str
    amount: float
    limit: float
    window_end: datetime


@dataclass(frozen=True, slots=True)
class Kill:
    kind: Literal["kill"]
    scope: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Revive:
    kind: Literal["revive"]
    scope: str


@dataclass(frozen=True, slots=True)
class RequireAlive:
    kind: Literal["require_alive"]
    scopes: tuple[str, ...]


Op = (
    TakeTokens
    | TakeQuota
    | Kill
    | Revive
    | RequireAlive
    | CreateRow
    | Transition
    | AppendEvent
    | AdvanceOffset
    | RecordCommit
    | CompleteCommit
    | ScheduleTimer
    | SettleTimer
    | OpenApproval
    | DecideApproval
    | WriteAudit
    | RecordUsage
    | RecordRun
    | RecordSpans
)


# --- outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """Every write of the unit is durable. ``versions`` maps each row written to its new
    version; ``event_seqs`` are the global positions of the appended events, in order."""

    versions: Mapping[str, int] = field(default_factory=dict)
    event_seqs: tuple[int, ...] = ()
    kind: Literal["applied"] = "applied"


@dataclass(frozen=True, slots=True)
class StaleVersion:
    """A compare-and-swap found the row at another version (``actual`` None: no such row)."""

    row_id: str
    expected: int
    actual: int | None
    kind: Literal["stale_version"] = "stale_version"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A key was already used. For a commit, ``existing`` is the first result; for an event,
    the event already appended under that idempotency key."""

    what: Literal["row", "event", "commit", "timer", "approval"]
    key: str
    existing: CommitRecord | Event | None = None
    kind: Literal["duplicate"] = "duplicate"


@dataclass(frozen=True, slots=True)
class NotPending:
    """A commit, timer or approval was settled already (or does not exist: ``status`` None)."""

    what: Literal["commit", "timer", "approval"]
    key: str
    status: str | None
    kind: Literal["not_pending"] = "not_pending"


@dataclass(frozen=True, slots=True)
class StaleOffset:
    """A consumer's offset was not where the unit expected it: another consumer moved it."""

    consumer: str
    stream: str
    expected: int
    actual: int
    kind: Literal["stale_offset"] = "stale_offset"


@dataclass(frozen=True, slots=True)
class Throttled:
    """A token bucket had too few tokens; ``retry_after_s`` is when enough will have refilled."""

    bucket: str
    available: float
    retry_after_s: float
    available_at: datetime | None = None
    """When enough will be available: a quota's window end, or now plus the refill time."""
    kind: Literal["throttled"] = "throttled"


@dataclass(frozen=True, slots=True)
class Killed:
    """A scope the unit runs under was stopped by the kill switch; nothing was written."""

    scope: str
    killed_by: str
    reason: str
    kind: Literal["killed"] = "killed"


Conflict = StaleVersion | Duplicate | NotPending | StaleOffset | Throttled | Killed
Outcome = Applied | Conflict


# --- the builder --------------------------------------------------------------------------


def _id() -> str:
    return uuid.uuid4().hex


class UnitOfWork:
    """Collects writes to apply atomically with ``Store.apply``.

    Each method encodes its payload at once (raising :class:`seamline.errors.CodecError` for a
    value that cannot be persisted) and returns the unit, so calls can be chained.
    """

    __slots__ = ("_max_bytes", "ops")

    def __init__(self, *, max_payload_bytes: int = codec.DEFAULT_MAX_BYTES) -> None:
        self.ops: list[Op] = []
        self._max_bytes = max_payload_bytes

    def __len__(self) -> int:
        return len(self.ops)

    def _enc(self, value: object) -> str:
        return codec.encode(value, max_bytes=self._max_bytes)

    def create_row(self, id: str, *, kind: str, state: str, data: object = None) -> UnitOfWork:
        """Insert a new row at version 1; an id already taken is a ``Duplicate`` conflict."""
        self.ops.append(CreateRow("create_row", id, kind, state, self._enc(data or {})))
        return self

    def transition(
        self, id: str, *, expect_version: int, to: str, data: object = None, keep_data: bool = True
    ) -> UnitOfWork:
        """Compare-and-swap: move row ``id`` from ``expect_version`` to state ``to``.

        ``data`` replaces the row's data; ``None`` keeps it (pass ``keep_data=False`` to store
        a literal null). Any other version is a ``StaleVersion`` conflict.
        """
        if expect_version < 1:
            raise ConfigError(
                f"expect_version must be >= 1 (rows start at 1), got {expect_version}"
            )
        data_json = None if data is None and keep_data else self._enc(data)
        self.ops.append(Transition("transition", id, expect_version, to, data_json))
        return self

    def append_event(
        self,
        stream: str,
        type: str,
        payload: object = None,
        *,
        model_version: str | None = None,
        prompt_hash: str | None = None,
        causation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> UnitOfWork:
        """Append to ``stream``. A used ``idempotency_key`` is a ``Duplicate`` conflict that
        carries the event already written."""
        self.ops.append(
            AppendEvent(
                "append_event",
                stream,
                type,
                self._enc(payload),
                model_version,
                prompt_hash,
                causation_id,
                idempotency_key,
            )
        )
        return self

    def advance_offset(self, consumer: str, stream: str, *, expect: int, to: int) -> UnitOfWork:
        """Move a consumer's offset from ``expect`` to ``to`` (0 = nothing consumed yet)."""
        if to < expect:
            raise ConfigError(f"offsets only move forward: {consumer}@{stream} {expect} -> {to}")
        self.ops.append(AdvanceOffset("advance_offset", consumer, stream, expect, to))
        return self

    def record_commit(
        self, key: str, result: object, *, run_id: str | None = None, boundary: str | None = None
    ) -> UnitOfWork:
        """Record a finished commit under ``key`` (for commits that are store writes, in the
        same unit as the write). A used key is a ``Duplicate`` carrying the first result."""
        self.ops.append(
            RecordCommit("record_commit", key, run_id, boundary, False, self._enc(result))
        )
        return self

    def commit_intent(
        self, key: str, *, run_id: str | None = None, boundary: str | None = None
    ) -> UnitOfWork:
        """Record that a side effect under ``key`` is about to run (outbox style); finish it
        with ``complete_commit``."""
        self.ops.append(RecordCommit("record_commit", key, run_id, boundary, True, None))
        return self

    def complete_commit(self, key: str, result: object) -> UnitOfWork:
        """Record the result of a pending commit; one already done is ``NotPending``."""
        self.ops.append(CompleteCommit("complete_commit", key, self._enc(result)))
        return self

    def schedule_timer(
        self,
        row_id: str,
        *,
        row_version: int,
        name: str,
        due_at: datetime,
        payload: object = None,
        id: str | None = None,
    ) -> UnitOfWork:
        """Attach a timer to ``row_id`` as of ``row_version``."""
        if due_at.tzinfo is None:
            raise ConfigError(f"timer {name!r}: due_at must be timezone-aware, got {due_at}")
        self.ops.append(
            ScheduleTimer(
                "schedule_timer", id or _id(), row_id, row_version, name, due_at, self._enc(payload)
            )
        )
        return self

    def settle_timer(self, id: str, status: Literal["fired", "noop", "cancelled"]) -> UnitOfWork:
        """Mark a pending timer fired, a no-op (its row had moved) or cancelled."""
        self.ops.append(SettleTimer("settle_timer", id, status))
        return self

    def open_approval(
        self,
        *,
        kind: Literal["approval", "escalation"],
        reason: str,
        request: object,
        requested_by: str,
        run_id: str | None = None,
        row_id: str | None = None,
        due_at: datetime | None = None,
        id: str | None = None,
    ) -> UnitOfWork:
        """Open a request for a person to decide."""
        self.ops.append(
            OpenApproval(
                "open_approval",
                id or _id(),
                kind,
                run_id,
                row_id,
                reason,
                self._enc(request),
                requested_by,
                due_at,
            )
        )
        return self

    def decide_approval(
        self,
        id: str,
        *,
        status: Literal["approved", "rejected", "edited", "expired"],
        decided_by: str,
        decision: object = None,
    ) -> UnitOfWork:
        """Settle a pending approval; a settled one is ``NotPending``."""
        decision_json = None if decision is None else self._enc(decision)
        self.ops.append(DecideApproval("decide_approval", id, status, decided_by, decision_json))
        return self

    def audit(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        decision: str,
        reason: str,
        policy_version: str | None = None,
        details: object = None,
    ) -> UnitOfWork:
        """Append an audit entry."""
        self.ops.append(
            WriteAudit(
                "audit",
                actor,
                action,
                subject,
                decision,
                policy_version,
                reason,
                self._enc(details or {}),
            )
        )
        return self

    def record_run(self, record: RunRecord) -> UnitOfWork:
        """Record how a boundary instance ended (replacing an earlier, retryable ending)."""
        if record.attempts < 0 or record.rejects < 0 or record.latency_ms < 0:
            raise ConfigError(f"run {record.id}: attempts, rejects and latency cannot be negative")
        self.ops.append(RecordRun("run", record))
        return self

    def record_spans(self, spans: Sequence[SpanRecord]) -> UnitOfWork:
        """Keep finished trace spans; a span already kept is left as it is."""
        self.ops.append(RecordSpans("spans", tuple(spans)))
        return self

    def take_tokens(
        self, bucket: str, *, amount: float = 1.0, rate_per_s: float, burst: float
    ) -> UnitOfWork:
        """Take ``amount`` from a token bucket shared through the store (refilled at
        ``rate_per_s`` up to ``burst``); too few tokens is a ``Throttled`` conflict. Put it in
        the same unit as the work it guards and the two are atomic."""
        if rate_per_s <= 0 or burst <= 0 or amount <= 0 or amount > burst:
            raise ConfigError(
                f"bucket {bucket!r}: need rate_per_s > 0, burst > 0 and 0 < amount <= burst "
                f"(got rate_per_s={rate_per_s}, burst={burst}, amount={amount})"
            )
        self.ops.append(TakeTokens("take_tokens", bucket, amount, rate_per_s, burst))
        return self

    def take_quota(
        self,
        key: str,
        *,
        amount: float | Decimal = 1.0,
        limit: float | Decimal,
        window_end: datetime,
    ) -> UnitOfWork:
        """Count ``amount`` against a fixed-window quota (``key`` names the window, e.g.
        ``"mail:2026-01-01T10:00"``); past ``limit`` it is a ``Throttled`` conflict whose
        ``retry_after_s`` runs to ``window_end``. Exact: a window never exceeds its limit."""
        if limit <= 0 or amount <= 0:
            raise ConfigError(f"quota {key!r}: limit and amount must be positive")
        if window_end.tzinfo is None:
            raise ConfigError(f"quota {key!r}: window_end must be timezone-aware")
        self.ops.append(TakeQuota("take_quota", key, float(amount), float(limit), window_end))
        return self

    def kill(self, scope: str, *, by: str, reason: str) -> UnitOfWork:
        """Stop ``scope`` ("all", "kind:K" or "run:R"). Killing a stopped scope is a no-op."""
        self.ops.append(Kill("kill", scope, by, reason))
        return self

    def revive(self, scope: str) -> UnitOfWork:
        """Lift the kill on ``scope`` (a no-op when it is not stopped)."""
        self.ops.append(Revive("revive", scope))
        return self

    def require_alive(self, *scopes: str) -> UnitOfWork:
        """Make the unit conditional on none of ``scopes`` being stopped: checked inside the
        unit's transaction, so the unit lands before a kill or not at all (``Killed``)."""
        self.ops.append(RequireAlive("require_alive", tuple(scopes)))
        return self

    def record_usage(
        self,
        *,
        run_id: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost: Decimal,
        latency_ms: float,
    ) -> UnitOfWork:
        """Charge one model call to ``run_id``. ``cost`` is kept to six decimal places."""
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ConfigError(
                f"token counts cannot be negative (prompt={prompt_tokens}, "
                f"completion={completion_tokens})"
            )
        micros = int((cost / COST_SCALE).to_integral_value())
        self.ops.append(
            RecordUsage(
                "usage", run_id, model, prompt_tokens, completion_tokens, micros, latency_ms
            )
        )
        return self
