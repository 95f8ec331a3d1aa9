"""The SQL layer's shared parts: the DB-API shapes, the two dialects, timestamps, and the base
every query class builds on (``_x`` runs one ``?``-placeholder statement in the dialect)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from seamline.store._records import Approval, Event, Row, Timer
from seamline.store._unit import Outcome


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...
    def cursor(self) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    placeholder: str
    autoid: str
    for_update: str
    """Row-lock suffix for a read-then-write inside a transaction (SQLite's BEGIN IMMEDIATE
    already holds the database's write lock)."""
    skip_locked: str
    """Claim suffix: skip rows another transaction is claiming (SQLite: writers are serial)."""
    bytewise: str
    """Collation suffix under which text orders byte by byte (SQLite's default already does;
    PostgreSQL's database collation need not), for prefix ranges an index can serve."""
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, text: str) -> str:
        cached = self._cache.get(text)
        if cached is None:
            cached = text.replace("?", self.placeholder) if self.placeholder != "?" else text
            self._cache[text] = cached
        return cached


SQLITE = Dialect("sqlite", "?", "INTEGER PRIMARY KEY AUTOINCREMENT", "", "", "")
POSTGRES = Dialect(
    "postgresql",
    "%s",
    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    " FOR UPDATE",
    " FOR UPDATE SKIP LOCKED",
    ' COLLATE "C"',
)


class Rollback(Exception):
    """Raised inside a transaction to roll the unit back and return ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.kind)
        self.outcome = outcome


def ts(value: datetime) -> str:
    """Fixed-width UTC text: sorts as text in the same order as the instants."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _opt_ts(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)


class SqlBase:
    """One dialect's statements; stateless apart from the translated-statement cache."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect

    def _x(self, conn: Connection, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return cast(Cursor, conn.execute(self.d.sql(sql), tuple(params)))

    def _run_and_children(self, run_id: str, column: str = "run_id") -> tuple[str, list[Any]]:
        """``column`` is ``run_id`` or one of its sub-runs (``run_id/...``), as two index
        ranges: ``'/'`` is followed by ``'0'`` byte-wise, so the children are [id/, id0)."""
        c = f"{column}{self.d.bytewise}"
        return f"({c} = ? OR ({c} >= ? AND {c} < ?))", [run_id, run_id + "/", run_id + "0"]

    # Column lists and row mappers every query class reads with.

    _ROW = "SELECT id, kind, state, version, data, created_at, updated_at FROM seamline_rows"
    _EVENT = (
        "SELECT seq, stream, stream_seq, type, payload, model_version, prompt_hash, "
        "causation_id, idempotency_key, recorded_at FROM seamline_events"
    )
    _COMMIT = (
        "SELECT key, run_id, boundary, status, result, created_at, completed_at "
        "FROM seamline_commits"
    )
    _TIMER = (
        "SELECT id, row_id, row_version, name, due_at, payload, status, settled_at "
        "FROM seamline_timers"
    )
    _APPROVAL = (
        "SELECT id, kind, run_id, row_id, status, reason, request, decision, requested_by, "
        "decided_by, created_at, due_at, decided_at FROM seamline_approvals"
    )
    _AUDIT = (
        "SELECT seq, at, actor, action, subject, decision, policy_version, reason, details "
        "FROM seamline_audit"
    )

    @staticmethod
    def _row(r: Any) -> Row:
        return Row(r[0], r[1], r[2], int(r[3]), r[4], parse_ts(r[5]), parse_ts(r[6]))

    @staticmethod
    def _event(r: Any) -> Event:
        return Event(int(r[0]), r[1], int(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], parse_ts(r[9]))

    @staticmethod
    def _timer(r: Any) -> Timer:
        return Timer(r[0], r[1], int(r[2]), r[3], parse_ts(r[4]), r[5], r[6], _opt_ts(r[7]))

    @staticmethod
    def _approval(r: Any) -> Approval:
        return Approval(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            parse_ts(r[10]),
            _opt_ts(r[11]),
            _opt_ts(r[12]),
        )
