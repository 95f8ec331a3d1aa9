"""The async store both backends share; a backend only runs work on its connections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, TypeVar

from seamline.clock import Clock, SystemClock
from seamline.store._engine import Connection, Engine
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

T = TypeVar("T")


class Backend(Protocol):
    engine: Engine
    display_url: str

    async def write(self, fn: Callable[[Connection], T]) -> T: ...
    async def read(self, fn: Callable[[Connection], T]) -> T: ...
    async def close(self) -> None: ...


class SqlStore:
    """A :class:`~seamline.store.Store` over a SQL backend. Make one with ``open_store``."""

    def __init__(self, backend: Backend, *, clock: Clock | None = None) -> None:
        self._b = backend
        self._e = backend.engine
        self._clock = clock or SystemClock()

    @property
    def url(self) -> str:
        return self._b.display_url

    @property
    def backend(self) -> str:
        return self._e.d.name

    def __repr__(self) -> str:
        return f"<SqlStore {self.url}>"

    async def __aenter__(self) -> SqlStore:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def apply(self, unit: UnitOfWork) -> Outcome:
        ops, now = tuple(unit.ops), self._clock.now()
        return await self._b.write(lambda c: self._e.apply(c, ops, now))

    async def get_row(self, id: str) -> Row | None:
        return await self._b.read(lambda c: self._e.get_row(c, id))

    async def list_rows(
        self,
        *,
        kind: str | None = None,
        state: str | None = None,
        after_id: str = "",
        limit: int = 100,
    ) -> list[Row]:
        return await self._b.read(lambda c: self._e.list_rows(c, kind, state, after_id, limit))

    async def read_stream(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[Event]:
        return await self._b.read(lambda c: self._e.read_stream(c, stream, after, limit))

    async def read_events(
        self, *, after_seq: int = 0, limit: int = 1000, stream_prefix: str | None = None
    ) -> list[Event]:
        return await self._b.read(lambda c: self._e.read_events(c, after_seq, limit, stream_prefix))

    async def event_by_key(self, idempotency_key: str) -> Event | None:
        return await self._b.read(lambda c: self._e.event_by_key(c, idempotency_key))

    async def get_offset(self, consumer: str, stream: str) -> int:
        return await self._b.read(lambda c: self._e.get_offset(c, consumer, stream))

    async def get_commit(self, key: str) -> CommitRecord | None:
        return await self._b.read(lambda c: self._e.get_commit(c, key))

    async def get_timer(self, id: str) -> Timer | None:
        return await self._b.read(lambda c: self._e.get_timer(c, id))

    async def due_timers(self, now: datetime, *, limit: int = 100) -> list[Timer]:
        return await self._b.read(lambda c: self._e.due_timers(c, now, limit))

    async def next_timer_due(self, *, kinds: Sequence[str] | None = None) -> datetime | None:
        return await self._b.read(lambda c: self._e.next_timer_due(c, kinds))

    async def get_approval(self, id: str) -> Approval | None:
        return await self._b.read(lambda c: self._e.get_approval(c, id))

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[Approval]:
        return await self._b.read(lambda c: self._e.list_approvals(c, status, limit))

    async def audit_entries(
        self, *, subject: str | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        return await self._b.read(lambda c: self._e.audit_entries(c, subject, after_seq, limit))

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
        return await self._b.read(
            lambda c: self._e.list_runs(c, kind, status, since, until, run_id, limit)
        )

    async def get_run(self, id: str) -> RunRecord | None:
        return await self._b.read(lambda c: self._e.get_run(c, id))

    async def run_kinds(self) -> list[str]:
        return await self._b.read(self._e.run_kinds)

    async def spans(
        self, *, trace_id: str | None = None, run_id: str | None = None, limit: int = 10_000
    ) -> list[SpanRecord]:
        return await self._b.read(lambda c: self._e.spans(c, trace_id, run_id, limit))

    async def run_stats(
        self,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> RunStats:
        return await self._b.read(lambda c: self._e.run_stats(c, kind, since, until))

    async def run_events(
        self,
        type: str,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100_000,
    ) -> list[Event]:
        return await self._b.read(lambda c: self._e.run_events(c, type, kind, since, until, limit))

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
        return await self._b.read(
            lambda c: self._e.audit_window(c, actor_prefix, decision, kind, since, until, limit)
        )

    async def span_counts(
        self,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SpanCount]:
        return await self._b.read(lambda c: self._e.span_counts(c, kind, since, until))

    async def usage_totals(self, run_id: str, *, include_children: bool = False) -> UsageTotals:
        return await self._b.read(lambda c: self._e.usage_totals(c, run_id, include_children))

    async def claim_due_timers(
        self,
        now: datetime,
        *,
        owner: str,
        lease_s: float = 60.0,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> list[Timer]:
        until = now + timedelta(seconds=lease_s)
        return await self._b.write(
            lambda c: self._e.claim_due_timers(c, now, owner, until, limit, kinds)
        )

    async def next_lease_expiry(
        self, now: datetime, *, kinds: Sequence[str] | None = None
    ) -> datetime | None:
        return await self._b.read(lambda c: self._e.next_lease_expiry(c, now, kinds))

    async def kills(self) -> list[tuple[str, str, str, datetime]]:
        return await self._b.read(self._e.kills)

    async def schema_version(self) -> int:
        return await self._b.read(self._e.schema_version)

    async def close(self) -> None:
        await self._b.close()
