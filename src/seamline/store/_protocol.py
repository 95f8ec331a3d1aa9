"""The store protocol: one atomic write entry point and the reads the runtime needs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from seamline.store._records import (
    Approval,
    ApprovalStatus,
    AuditEntry,
    CommitRecord,
    Event,
    Row,
    RunRecord,
    RunStats,
    SpanCount,
    SpanRecord,
    Timer,
    UsageTotals,
)
from seamline.store._unit import Outcome, UnitOfWork

__all__ = ["SchemaStatus", "Store"]


class SchemaStatus(Protocol):
    current: int
    latest: int


@runtime_checkable
class Store(Protocol):
    """Durable state for the runtime. ``apply`` is the only way to write."""

    @property
    def url(self) -> str:
        """The store URL with any password hidden."""
        ...

    async def apply(self, unit: UnitOfWork) -> Outcome:
        """Write all of ``unit`` in one transaction, or none of it and return the conflict."""
        ...

    async def get_row(self, id: str) -> Row | None: ...

    async def list_rows(
        self,
        *,
        kind: str | None = None,
        state: str | None = None,
        after_id: str = "",
        limit: int = 100,
    ) -> list[Row]: ...

    async def read_stream(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[Event]:
        """Events of ``stream`` with per-stream sequence above ``after``, in order."""
        ...

    async def read_events(
        self, *, after_seq: int = 0, limit: int = 1000, stream_prefix: str | None = None
    ) -> list[Event]:
        """Events with global sequence above ``after_seq``, in order; only streams starting
        with ``stream_prefix`` when it is given."""
        ...

    async def event_by_key(self, idempotency_key: str) -> Event | None: ...

    async def get_offset(self, consumer: str, stream: str) -> int: ...

    async def get_commit(self, key: str) -> CommitRecord | None: ...

    async def get_timer(self, id: str) -> Timer | None: ...

    async def due_timers(self, now: datetime, *, limit: int = 100) -> list[Timer]:
        """Pending timers due at or before ``now``, earliest first."""
        ...

    async def next_timer_due(self, *, kinds: Sequence[str] | None = None) -> datetime | None:
        """The earliest pending timer (on rows of ``kinds`` when given)."""
        ...

    async def get_approval(self, id: str) -> Approval | None: ...

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[Approval]: ...

    async def audit_entries(
        self, *, subject: str | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]: ...

    async def list_runs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        run_id: str | None = None,
        limit: int = 1000,
    ) -> list[RunRecord]:
        """Boundary endings, newest first, filtered by workflow kind, status, the ending time
        in ``[since, until)`` and a caller's run id (with its ``run_id/...`` sub-runs)."""
        ...

    async def get_run(self, id: str) -> RunRecord | None: ...

    async def run_kinds(self) -> list[str]:
        """Every workflow kind that has an ending recorded."""
        ...

    async def spans(
        self, *, trace_id: str | None = None, run_id: str | None = None, limit: int = 10_000
    ) -> list[SpanRecord]:
        """Kept spans of one trace, or of every trace that touched ``run_id`` (or one of its
        sub-runs), oldest first."""
        ...

    async def run_stats(
        self,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> RunStats:
        """Counts, spend and nearest-rank p95s of the endings in ``[since, until)``."""
        ...

    async def run_events(
        self,
        type: str,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100_000,
    ) -> list[Event]:
        """Events of ``type`` on the streams (``sdb:{boundary}:{id}``) of the boundary
        instances whose ending is in ``[since, until)``, oldest first."""
        ...

    async def audit_window(
        self,
        *,
        actor_prefix: str = "",
        decision: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100_000,
    ) -> list[AuditEntry]:
        """Audit entries in ``[since, until)`` by actors starting with ``actor_prefix``; with
        ``kind``, only those whose subject is a row or boundary instance of that kind."""
        ...

    async def span_counts(
        self,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SpanCount]:
        """Kept spans ending in ``[since, until)`` counted by (name, status)."""
        ...

    async def usage_totals(self, run_id: str, *, include_children: bool = False) -> UsageTotals:
        """Spend of ``run_id`` (and, with ``include_children``, of its ``run_id/...`` sub-runs)."""
        ...

    async def claim_due_timers(
        self,
        now: datetime,
        *,
        owner: str,
        lease_s: float = 60.0,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> list[Timer]:
        """Lease due, pending timers to ``owner`` for ``lease_s`` seconds; timers leased to
        another owner are skipped until their lease runs out (a dead runner's work returns).
        A runner restarted under the same owner id takes its own leases back at once."""
        ...

    async def next_lease_expiry(
        self, now: datetime, *, kinds: Sequence[str] | None = None
    ) -> datetime | None:
        """When the earliest lease on a due, pending timer runs out (None: none is leased)."""
        ...

    async def kills(self) -> list[tuple[str, str, str, datetime]]:
        """Stopped scopes: (scope, killed_by, reason, at)."""
        ...

    async def schema_version(self) -> int: ...

    async def close(self) -> None: ...
