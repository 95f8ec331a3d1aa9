"""Durable state: workflow rows, the event log, the commit ledger, timers, approvals, audit
and usage, behind one protocol with SQLite and PostgreSQL implementations."""

from __future__ import annotations

from seamline.clock import Clock
from seamline.store._protocol import Store
from seamline.store._records import (
    Approval,
    ApprovalStatus,
    AuditEntry,
    CommitRecord,
    CommitStatus,
    Event,
    Row,
    RunRecord,
    RunStats,
    RunStatus,
    SpanCount,
    SpanRecord,
    Timer,
    TimerStatus,
    UsageTotals,
)
from seamline.store._sqlstore import SqlStore
from seamline.store._unit import (
    Applied,
    Duplicate,
    Killed,
    NotPending,
    Outcome,
    StaleOffset,
    StaleVersion,
    Throttled,
    UnitOfWork,
)
from seamline.store._url import DEFAULT_STORE_URL, StoreURL, parse_store_url

__all__ = [
    "Applied",
    "Approval",
    "ApprovalStatus",
    "AuditEntry",
    "CommitRecord",
    "CommitStatus",
    "DEFAULT_STORE_URL",
    "Duplicate",
    "Event",
    "Killed",
    "NotPending",
    "Outcome",
    "Row",
    "RunRecord",
    "RunStats",
    "RunStatus",
    "SpanCount",
    "SpanRecord",
    "SqlStore",
    "StaleOffset",
    "StaleVersion",
    "Store",
    "StoreURL",
    "Throttled",
    "Timer",
    "TimerStatus",
    "UnitOfWork",
    "UsageTotals",
    "open_store",
    "parse_store_url",
]


def open_store(
    url: str | None = None,
    *,
    clock: Clock | None = None,
    migrate: bool = True,
    pool_size: int = 8,
    busy_timeout_s: float = 30.0,
) -> SqlStore:
    """Open the store at ``url`` and bring its schema up to date.

    ``url`` is ``sqlite:///PATH``, a bare path, or ``postgresql://...``; ``None`` means the
    default SQLite file ``seamline.db`` in the working directory. ``clock`` stamps what is
    written (pass a :class:`~seamline.clock.VirtualClock` for virtual time). With
    ``migrate=False`` the schema is left as it is (for inspection, e.g. ``seamline doctor``).

    Raises :class:`~seamline.errors.ConfigError` for a malformed URL,
    :class:`~seamline.errors.StoreUnavailableError` when the store cannot be reached or opened,
    and :class:`~seamline.errors.SchemaVersionError` when its schema is newer than this code.
    """
    parsed = parse_store_url(url)
    if parsed.backend == "postgresql":
        from seamline.store._postgres import PostgresBackend

        pg = PostgresBackend(
            parsed.target, display_url=parsed.display, pool_size=pool_size, migrate=migrate
        )
        return SqlStore(pg, clock=clock)
    from seamline.store._sqlite import SqliteBackend

    lite = SqliteBackend(parsed.target, busy_timeout_s=busy_timeout_s, migrate=migrate)
    return SqlStore(lite, clock=clock)
