"""SQL shared by both backends: applying a unit of work and the read queries.

Everything here is synchronous and runs against one DB-API connection inside a transaction
the backend opened; the backends own threads, pools and transaction boundaries. SQL is
written once with ``?`` placeholders and translated per dialect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

from seamline.store._migrations import MIGRATIONS, latest_version
from seamline.store._records import (
    Approval,
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
from seamline.store._unit import (
    COST_SCALE,
    AdvanceOffset,
    AppendEvent,
    Applied,
    CompleteCommit,
    CreateRow,
    DecideApproval,
    Duplicate,
    Kill,
    Killed,
    NotPending,
    Op,
    OpenApproval,
    Outcome,
    RecordCommit,
    RecordRun,
    RecordSpans,
    RecordUsage,
    RequireAlive,
    Revive,
    ScheduleTimer,
    SettleTimer,
    StaleOffset,
    StaleVersion,
    TakeQuota,
    TakeTokens,
    Throttled,
    Transition,
    WriteAudit,
)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


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
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, text: str) -> str:
        cached = self._cache.get(text)
        if cached is None:
            cached = text.replace("?", self.placeholder) if self.placeholder != "?" else text
            self._cache[text] = cached
        return cached


SQLITE = Dialect("sqlite", "?", "INTEGER PRIMARY KEY AUTOINCREMENT", "", "")
POSTGRES = Dialect(
    "postgresql",
    "%s",
    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    " FOR UPDATE",
    " FOR UPDATE SKIP LOCKED",
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


class Engine:
    """One dialect's SQL; stateless apart from the translated-statement cache."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect

    def _x(self, conn: Connection, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return cast(Cursor, conn.execute(self.d.sql(sql), tuple(params)))

    # --- schema ---------------------------------------------------------------------------

    def create_schema_table(self, conn: Connection) -> None:
        self._x(
            conn,
            "CREATE TABLE IF NOT EXISTS seamline_schema (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )

    def schema_version(self, conn: Connection) -> int:
        row = self._x(conn, "SELECT MAX(version) FROM seamline_schema").fetchone()
        return int(row[0] or 0)

    def migrate(self, conn: Connection, now: datetime) -> list[int]:
        """Apply the missing migrations; the caller holds the migration lock."""
        current = self.schema_version(conn)
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                self._x(conn, statement.replace("{autoid}", self.d.autoid))
            self._x(
                conn,
                "INSERT INTO seamline_schema (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, ts(now)),
            )
            applied.append(migration.version)
        return applied

    @staticmethod
    def latest_version() -> int:
        return latest_version()

    # --- writes ---------------------------------------------------------------------------

    def apply(self, conn: Connection, ops: Sequence[Op], now: datetime) -> Applied:
        """Execute ``ops`` in the open transaction; raise :class:`Rollback` on a conflict.

        Event appends run last so that, on PostgreSQL, the lock on the event counter is held
        for as short a time as possible before commit.
        """
        stamp = ts(now)
        versions: dict[str, int] = {}
        events: list[AppendEvent] = []
        for op in ops:
            if isinstance(op, AppendEvent):
                events.append(op)
            else:
                self._apply_one(conn, op, stamp, versions)
        seqs = self._append_events(conn, events, stamp) if events else ()
        return Applied(versions=versions, event_seqs=seqs)

    def _apply_one(self, conn: Connection, op: Op, stamp: str, versions: dict[str, int]) -> None:
        match op:
            case CreateRow():
                cur = self._x(
                    conn,
                    "INSERT INTO seamline_rows (id, kind, state, version, data, created_at, "
                    "updated_at) VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (op.id, op.row_kind, op.state, op.data_json, stamp, stamp),
                )
                if cur.rowcount != 1:
                    raise Rollback(Duplicate("row", op.id))
                versions[op.id] = 1
            case Transition():
                if op.data_json is None:
                    cur = self._x(
                        conn,
                        "UPDATE seamline_rows SET state = ?, version = version + 1, "
                        "updated_at = ? WHERE id = ? AND version = ?",
                        (op.state, stamp, op.id, op.expect_version),
                    )
                else:
                    cur = self._x(
                        conn,
                        "UPDATE seamline_rows SET state = ?, version = version + 1, data = ?, "
                        "updated_at = ? WHERE id = ? AND version = ?",
                        (op.state, op.data_json, stamp, op.id, op.expect_version),
                    )
                if cur.rowcount != 1:
                    found = self._x(
                        conn, "SELECT version FROM seamline_rows WHERE id = ?", (op.id,)
                    ).fetchone()
                    actual = None if found is None else int(found[0])
                    raise Rollback(StaleVersion(op.id, op.expect_version, actual))
                versions[op.id] = op.expect_version + 1
            case AdvanceOffset():
                self._advance_offset(conn, op, stamp)
            case RecordCommit():
                cur = self._x(
                    conn,
                    "INSERT INTO seamline_commits (key, run_id, boundary, status, result, "
                    "created_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        op.key,
                        op.run_id,
                        op.boundary,
                        "pending" if op.pending else "done",
                        op.result_json,
                        stamp,
                        None if op.pending else stamp,
                    ),
                )
                if cur.rowcount != 1:
                    raise Rollback(Duplicate("commit", op.key, self.get_commit(conn, op.key)))
            case CompleteCommit():
                cur = self._x(
                    conn,
                    "UPDATE seamline_commits SET status = 'done', result = ?, completed_at = ? "
                    "WHERE key = ? AND status = 'pending'",
                    (op.result_json, stamp, op.key),
                )
                if cur.rowcount != 1:
                    existing = self.get_commit(conn, op.key)
                    raise Rollback(
                        NotPending("commit", op.key, None if existing is None else existing.status)
                    )
            case ScheduleTimer():
                cur = self._x(
                    conn,
                    "INSERT INTO seamline_timers (id, row_id, row_version, name, due_at, payload, "
                    "status) VALUES (?, ?, ?, ?, ?, ?, 'pending') ON CONFLICT DO NOTHING",
                    (op.id, op.row_id, op.row_version, op.name, ts(op.due_at), op.payload_json),
                )
                if cur.rowcount != 1:
                    raise Rollback(Duplicate("timer", op.id))
            case SettleTimer():
                cur = self._x(
                    conn,
                    "UPDATE seamline_timers SET status = ?, settled_at = ? "
                    "WHERE id = ? AND status = 'pending'",
                    (op.status, stamp, op.id),
                )
                if cur.rowcount != 1:
                    found = self._x(
                        conn, "SELECT status FROM seamline_timers WHERE id = ?", (op.id,)
                    ).fetchone()
                    raise Rollback(NotPending("timer", op.id, found and found[0]))
            case OpenApproval():
                cur = self._x(
                    conn,
                    "INSERT INTO seamline_approvals (id, kind, run_id, row_id, status, reason, "
                    "request, requested_by, created_at, due_at) "
                    "VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        op.id,
                        op.approval_kind,
                        op.run_id,
                        op.row_id,
                        op.reason,
                        op.request_json,
                        op.requested_by,
                        stamp,
                        None if op.due_at is None else ts(op.due_at),
                    ),
                )
                if cur.rowcount != 1:
                    raise Rollback(Duplicate("approval", op.id))
            case DecideApproval():
                cur = self._x(
                    conn,
                    "UPDATE seamline_approvals SET status = ?, decision = ?, decided_by = ?, "
                    "decided_at = ? WHERE id = ? AND status = 'pending'",
                    (op.status, op.decision_json, op.decided_by, stamp, op.id),
                )
                if cur.rowcount != 1:
                    found = self._x(
                        conn, "SELECT status FROM seamline_approvals WHERE id = ?", (op.id,)
                    ).fetchone()
                    raise Rollback(NotPending("approval", op.id, found and found[0]))
            case WriteAudit():
                self._x(
                    conn,
                    "INSERT INTO seamline_audit (at, actor, action, subject, decision, "
                    "policy_version, reason, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stamp,
                        op.actor,
                        op.action,
                        op.subject,
                        op.decision,
                        op.policy_version,
                        op.reason,
                        op.details_json,
                    ),
                )
            case RecordUsage():
                self._x(
                    conn,
                    "INSERT INTO seamline_usage (run_id, model, prompt_tokens, "
                    "completion_tokens, cost_micros, latency_ms, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        op.run_id,
                        op.model,
                        op.prompt_tokens,
                        op.completion_tokens,
                        op.cost_micros,
                        op.latency_ms,
                        stamp,
                    ),
                )
            case RecordRun():
                self._record_run(conn, op.record)
            case RecordSpans():
                for span in op.spans:
                    self._x(
                        conn,
                        "INSERT INTO seamline_spans (span_id, trace_id, parent_id, name, run_id, "
                        "started_at, ended_at, status, attributes) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (span_id) DO NOTHING",
                        (
                            span.span_id,
                            span.trace_id,
                            span.parent_id,
                            span.name,
                            span.run_id,
                            ts(span.started_at),
                            ts(span.ended_at),
                            span.status,
                            span.attributes_json,
                        ),
                    )
            case TakeTokens():
                self._take_tokens(conn, op, stamp)
            case TakeQuota():
                self._take_quota(conn, op, stamp)
            case Kill():
                self._x(
                    conn,
                    "INSERT INTO seamline_kills (scope, killed_by, reason, at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (op.scope, op.by, op.reason, stamp),
                )
            case Revive():
                self._x(conn, "DELETE FROM seamline_kills WHERE scope = ?", (op.scope,))
            case RequireAlive():
                if op.scopes:
                    if self.d.name == "postgresql":
                        # Under read committed a unit that checked before a kill committed could
                        # land after it. SHARE mode lets checking units run side by side but
                        # makes a kill's insert wait for every unit that already checked, and
                        # queues later checks behind the kill; the SELECT below then runs on a
                        # fresh snapshot. So once a kill has committed, nothing it stops does.
                        self._x(conn, "LOCK TABLE seamline_kills IN SHARE MODE")
                    marks = ", ".join("?" for _ in op.scopes)
                    found = self._x(
                        conn,
                        "SELECT scope, killed_by, reason FROM seamline_kills "
                        f"WHERE scope IN ({marks}) ORDER BY scope LIMIT 1",
                        op.scopes,
                    ).fetchone()
                    if found is not None:
                        raise Rollback(Killed(found[0], found[1], found[2]))
            case AppendEvent():  # pragma: no cover - routed to _append_events by apply()
                raise AssertionError("events are appended last")

    def _take_tokens(self, conn: Connection, op: TakeTokens, stamp: str) -> None:
        now_s = parse_ts(stamp).timestamp()
        self._x(
            conn,
            "INSERT INTO seamline_buckets (name, tokens, updated_s) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (op.bucket, op.burst, now_s),
        )
        found = self._x(
            conn,
            "SELECT tokens, updated_s FROM seamline_buckets WHERE name = ?" + self.d.for_update,
            (op.bucket,),
        ).fetchone()
        elapsed = max(0.0, now_s - float(found[1]))
        tokens = min(op.burst, float(found[0]) + elapsed * op.rate_per_s)
        if tokens + 1e-9 < op.amount:
            wait = (op.amount - tokens) / op.rate_per_s
            raise Rollback(
                Throttled(
                    op.bucket,
                    round(tokens, 6),
                    # rounded up: a refusal never reports a zero wait
                    max(math.ceil(wait * 1e6) / 1e6, 1e-6),
                    parse_ts(stamp) + timedelta(seconds=wait),
                )
            )
        self._x(
            conn,
            "UPDATE seamline_buckets SET tokens = ?, updated_s = ? WHERE name = ?",
            (tokens - op.amount, max(now_s, float(found[1])), op.bucket),
        )

    def _take_quota(self, conn: Connection, op: TakeQuota, stamp: str) -> None:
        # A fixed-window counter in the bucket table: "tokens" counts what was taken.
        self._x(
            conn,
            "INSERT INTO seamline_buckets (name, tokens, updated_s) VALUES (?, 0, ?) "
            "ON CONFLICT DO NOTHING",
            (op.key, parse_ts(stamp).timestamp()),
        )
        used = float(
            self._x(
                conn,
                "SELECT tokens FROM seamline_buckets WHERE name = ?" + self.d.for_update,
                (op.key,),
            ).fetchone()[0]
        )
        if used + op.amount > op.limit + 1e-9:
            wait = max(0.0, op.window_end.timestamp() - parse_ts(stamp).timestamp())
            raise Rollback(
                Throttled(op.key, round(op.limit - used, 6), round(wait, 6), op.window_end)
            )
        self._x(
            conn,
            "UPDATE seamline_buckets SET tokens = tokens + ? WHERE name = ?",
            (op.amount, op.key),
        )

    @staticmethod
    def _kinds_filter(kinds: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
        if not kinds:
            return "", ()
        marks = ", ".join("?" for _ in kinds)
        return (
            " AND EXISTS (SELECT 1 FROM seamline_rows r WHERE r.id = seamline_timers.row_id "
            f"AND r.kind IN ({marks}))",
            tuple(kinds),
        )

    def claim_due_timers(
        self,
        conn: Connection,
        now: datetime,
        owner: str,
        lease_until: datetime,
        limit: int,
        kinds: Sequence[str] | None = None,
    ) -> list[Timer]:
        """Lease up to ``limit`` due timers nobody holds, whose lease ran out, or that
        ``owner`` itself holds from before a restart; only timers on rows of ``kinds`` when
        given, so runners of different workflows can share a store."""
        stamp = ts(now)
        where, kind_params = self._kinds_filter(kinds)
        rows = self._x(
            conn,
            "UPDATE seamline_timers SET lease_owner = ?, lease_until = ? WHERE id IN ("
            "SELECT id FROM seamline_timers WHERE status = 'pending' AND due_at <= ? "
            "AND (lease_until IS NULL OR lease_until <= ? OR lease_owner = ?)"
            + where
            + " ORDER BY due_at, id LIMIT ?"
            + self.d.skip_locked
            + ") RETURNING id, row_id, row_version, name, due_at, payload, status, settled_at",
            (owner, ts(lease_until), stamp, stamp, owner, *kind_params, limit),
        ).fetchall()
        return sorted((self._timer(r) for r in rows), key=lambda t: (t.due_at, t.id))

    def next_lease_expiry(
        self, conn: Connection, now: datetime, kinds: Sequence[str] | None = None
    ) -> datetime | None:
        """When the earliest lease on a due, pending timer runs out (None: none is leased)."""
        where, params = self._kinds_filter(kinds)
        r = self._x(
            conn,
            "SELECT MIN(lease_until) FROM seamline_timers WHERE status = 'pending' "
            "AND due_at <= ? AND lease_until > ?" + where,
            (ts(now), ts(now), *params),
        ).fetchone()
        return _opt_ts(r[0])

    def kills(self, conn: Connection) -> list[tuple[str, str, str, datetime]]:
        rows = self._x(
            conn, "SELECT scope, killed_by, reason, at FROM seamline_kills ORDER BY scope"
        ).fetchall()
        return [(r[0], r[1], r[2], parse_ts(r[3])) for r in rows]

    def _advance_offset(self, conn: Connection, op: AdvanceOffset, stamp: str) -> None:
        cur = self._x(
            conn,
            "UPDATE seamline_offsets SET position = ?, updated_at = ? "
            "WHERE consumer = ? AND stream = ? AND position = ?",
            (op.position, stamp, op.consumer, op.stream, op.expect_position),
        )
        if cur.rowcount == 1:
            return
        if op.expect_position == 0:
            cur = self._x(
                conn,
                "INSERT INTO seamline_offsets (consumer, stream, position, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (op.consumer, op.stream, op.position, stamp),
            )
            if cur.rowcount == 1:
                return
        actual = self.get_offset(conn, op.consumer, op.stream)
        raise Rollback(StaleOffset(op.consumer, op.stream, op.expect_position, actual))

    def _append_events(
        self, conn: Connection, events: list[AppendEvent], stamp: str
    ) -> tuple[int, ...]:
        top = self._x(
            conn,
            "UPDATE seamline_counters SET value = value + ? WHERE name = 'event_seq' "
            "RETURNING value",
            (len(events),),
        ).fetchall()  # drain RETURNING so the statement is finished before COMMIT
        seq = int(top[0][0]) - len(events)
        heads: dict[str, int] = {}
        seqs = []
        for ev in events:
            head = heads.get(ev.stream)
            if head is None:
                found = self._x(
                    conn,
                    "SELECT MAX(stream_seq) FROM seamline_events WHERE stream = ?",
                    (ev.stream,),
                ).fetchone()
                head = int(found[0] or 0)
            seq += 1
            head += 1
            cur = self._x(
                conn,
                "INSERT INTO seamline_events (seq, stream, stream_seq, type, payload, "
                "model_version, prompt_hash, causation_id, idempotency_key, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    seq,
                    ev.stream,
                    head,
                    ev.type,
                    ev.payload_json,
                    ev.model_version,
                    ev.prompt_hash,
                    ev.causation_id,
                    ev.idempotency_key,
                    stamp,
                ),
            )
            if cur.rowcount != 1:
                key = ev.idempotency_key or ""
                raise Rollback(Duplicate("event", key, self.event_by_key(conn, key)))
            heads[ev.stream] = head
            seqs.append(seq)
        return tuple(seqs)

    # --- reads ----------------------------------------------------------------------------

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

    def get_row(self, conn: Connection, id: str) -> Row | None:
        r = self._x(conn, self._ROW + " WHERE id = ?", (id,)).fetchone()
        return None if r is None else self._row(r)

    def list_rows(
        self, conn: Connection, kind: str | None, state: str | None, after_id: str, limit: int
    ) -> list[Row]:
        sql, params = self._ROW + " WHERE id > ?", list[Any]([after_id])
        if kind is not None:
            sql, params = sql + " AND kind = ?", [*params, kind]
        if state is not None:
            sql, params = sql + " AND state = ?", [*params, state]
        rows = self._x(conn, sql + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
        return [self._row(r) for r in rows]

    def read_stream(self, conn: Connection, stream: str, after: int, limit: int) -> list[Event]:
        rows = self._x(
            conn,
            self._EVENT + " WHERE stream = ? AND stream_seq > ? ORDER BY stream_seq LIMIT ?",
            (stream, after, limit),
        ).fetchall()
        return [self._event(r) for r in rows]

    def read_events(
        self, conn: Connection, after_seq: int, limit: int, stream_prefix: str | None
    ) -> list[Event]:
        params: tuple[Any, ...]
        if stream_prefix is None:
            sql, params = " WHERE seq > ?", (after_seq, limit)
        else:
            sql = " WHERE seq > ? AND substr(stream, 1, ?) = ?"
            params = (after_seq, len(stream_prefix), stream_prefix, limit)
        rows = self._x(conn, self._EVENT + sql + " ORDER BY seq LIMIT ?", params).fetchall()
        return [self._event(r) for r in rows]

    def event_by_key(self, conn: Connection, key: str) -> Event | None:
        r = self._x(conn, self._EVENT + " WHERE idempotency_key = ?", (key,)).fetchone()
        return None if r is None else self._event(r)

    def get_offset(self, conn: Connection, consumer: str, stream: str) -> int:
        r = self._x(
            conn,
            "SELECT position FROM seamline_offsets WHERE consumer = ? AND stream = ?",
            (consumer, stream),
        ).fetchone()
        return 0 if r is None else int(r[0])

    def get_commit(self, conn: Connection, key: str) -> CommitRecord | None:
        r = self._x(conn, self._COMMIT + " WHERE key = ?", (key,)).fetchone()
        if r is None:
            return None
        return CommitRecord(r[0], r[1], r[2], r[3], r[4], parse_ts(r[5]), _opt_ts(r[6]))

    def get_timer(self, conn: Connection, id: str) -> Timer | None:
        r = self._x(conn, self._TIMER + " WHERE id = ?", (id,)).fetchone()
        return None if r is None else self._timer(r)

    def due_timers(self, conn: Connection, now: datetime, limit: int) -> list[Timer]:
        rows = self._x(
            conn,
            self._TIMER + " WHERE status = 'pending' AND due_at <= ? ORDER BY due_at, id LIMIT ?",
            (ts(now), limit),
        ).fetchall()
        return [self._timer(r) for r in rows]

    def next_timer_due(
        self, conn: Connection, kinds: Sequence[str] | None = None
    ) -> datetime | None:
        where, params = self._kinds_filter(kinds)
        r = self._x(
            conn,
            "SELECT MIN(due_at) FROM seamline_timers WHERE status = 'pending'" + where,
            params,
        ).fetchone()
        return _opt_ts(r[0])

    def get_approval(self, conn: Connection, id: str) -> Approval | None:
        r = self._x(conn, self._APPROVAL + " WHERE id = ?", (id,)).fetchone()
        return None if r is None else self._approval(r)

    def list_approvals(self, conn: Connection, status: str | None, limit: int) -> list[Approval]:
        if status is None:
            rows = self._x(
                conn, self._APPROVAL + " ORDER BY created_at, id LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._x(
                conn,
                self._APPROVAL + " WHERE status = ? ORDER BY created_at, id LIMIT ?",
                (status, limit),
            ).fetchall()
        return [self._approval(r) for r in rows]

    def audit_entries(
        self, conn: Connection, subject: str | None, after_seq: int, limit: int
    ) -> list[AuditEntry]:
        sql, params = self._AUDIT + " WHERE seq > ?", list[Any]([after_seq])
        if subject is not None:
            sql, params = sql + " AND subject = ?", [*params, subject]
        rows = self._x(conn, sql + " ORDER BY seq LIMIT ?", [*params, limit]).fetchall()
        return [
            AuditEntry(int(r[0]), parse_ts(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    _RUN_COLUMNS = (
        "id, run_id, boundary, kind, status, reason, attempts, rejects, prompt_tokens, "
        "completion_tokens, cost_micros, context_utilisation, started_at, ended_at, latency_ms, "
        "trace_id"
    )

    def _record_run(self, conn: Connection, r: RunRecord) -> None:
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in self._RUN_COLUMNS.replace(" ", "").split(",")[1:]
        )
        self._x(
            conn,
            f"INSERT INTO seamline_runs ({self._RUN_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}",
            (
                r.id,
                r.run_id,
                r.boundary,
                r.kind,
                r.status,
                r.reason,
                r.attempts,
                r.rejects,
                r.prompt_tokens,
                r.completion_tokens,
                int((r.cost / COST_SCALE).to_integral_value()),
                r.context_utilisation,
                ts(r.started_at),
                ts(r.ended_at),
                r.latency_ms,
                r.trace_id,
            ),
        )

    @staticmethod
    def _run(r: Any) -> RunRecord:
        return RunRecord(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            int(r[6]),
            int(r[7]),
            int(r[8]),
            int(r[9]),
            Decimal(int(r[10])) * COST_SCALE,
            None if r[11] is None else float(r[11]),
            parse_ts(r[12]),
            parse_ts(r[13]),
            float(r[14]),
            r[15],
        )

    def list_runs(
        self,
        conn: Connection,
        kind: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        run_id: str | None,
        limit: int,
    ) -> list[RunRecord]:
        """Endings, newest first, filtered by kind, status, ``[since, until)`` on the ending
        time, and a caller's run id (with its ``run_id/...`` sub-runs)."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", kind), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("ended_at >= ?")
            params.append(ts(since))
        if until is not None:
            clauses.append("ended_at < ?")
            params.append(ts(until))
        if run_id is not None:
            prefix = run_id + "/"
            clauses.append("(run_id = ? OR substr(run_id, 1, ?) = ?)")
            params += [run_id, len(prefix), prefix]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._x(
            conn,
            f"SELECT {self._RUN_COLUMNS} FROM seamline_runs{where} "
            "ORDER BY ended_at DESC, id LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [self._run(r) for r in rows]

    def get_run(self, conn: Connection, id: str) -> RunRecord | None:
        r = self._x(
            conn, f"SELECT {self._RUN_COLUMNS} FROM seamline_runs WHERE id = ?", (id,)
        ).fetchone()
        return None if r is None else self._run(r)

    def run_kinds(self, conn: Connection) -> list[str]:
        rows = self._x(conn, "SELECT DISTINCT kind FROM seamline_runs ORDER BY kind").fetchall()
        return [str(r[0]) for r in rows]

    def spans(
        self, conn: Connection, trace_id: str | None, run_id: str | None, limit: int
    ) -> list[SpanRecord]:
        """Kept spans of one trace or of one run id (with its sub-runs), oldest first."""
        sql = (
            "SELECT span_id, trace_id, parent_id, name, run_id, started_at, ended_at, status, "
            "attributes FROM seamline_spans"
        )
        params: list[Any] = []
        if trace_id is not None:
            sql += " WHERE trace_id = ?"
            params.append(trace_id)
        elif run_id is not None:
            prefix = run_id + "/"
            sql += (
                " WHERE trace_id IN (SELECT trace_id FROM seamline_spans "
                "WHERE run_id = ? OR substr(run_id, 1, ?) = ?)"
            )
            params += [run_id, len(prefix), prefix]
        rows = self._x(conn, sql + " ORDER BY started_at, span_id LIMIT ?", [*params, limit])
        return [
            SpanRecord(r[0], r[1], r[2], r[3], r[4], parse_ts(r[5]), parse_ts(r[6]), r[7], r[8])
            for r in rows.fetchall()
        ]

    def usage_totals(self, conn: Connection, run_id: str, include_children: bool) -> UsageTotals:
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_micros), 0) "
            "FROM seamline_usage WHERE run_id = ?"
        )
        params: tuple[Any, ...] = (run_id,)
        if include_children:
            # substr, not LIKE: run ids may contain % or _
            prefix = run_id + "/"
            sql += " OR substr(run_id, 1, ?) = ?"
            params = (run_id, len(prefix), prefix)
        r = self._x(conn, sql, params).fetchone()
        cost = Decimal(int(r[3])) * COST_SCALE
        return UsageTotals(run_id, int(r[0]), int(r[1]), int(r[2]), cost)

    # --- window aggregates (metrics) ------------------------------------------------------

    @staticmethod
    def _window(
        column: str, since: datetime | None, until: datetime | None
    ) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append(f"{column} >= ?")
            params.append(ts(since))
        if until is not None:
            clauses.append(f"{column} < ?")
            params.append(ts(until))
        return clauses, params

    def _runs_where(
        self, kind: str | None, since: datetime | None, until: datetime | None, alias: str = ""
    ) -> tuple[str, list[Any]]:
        clauses, params = self._window(f"{alias}ended_at", since, until)
        if kind is not None:
            clauses.append(f"{alias}kind = ?")
            params.append(kind)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _nearest_rank(
        self, conn: Connection, column: str, where: str, params: list[Any], n: int, pct: int
    ) -> float | None:
        """The value at rank ceil(pct/100 * n) of ``column`` sorted ascending (None: n = 0)."""
        if n == 0:
            return None
        rank = -(-pct * n // 100)
        r = self._x(
            conn,
            f"SELECT {column} FROM seamline_runs{where} ORDER BY {column} LIMIT 1 OFFSET ?",
            [*params, rank - 1],
        ).fetchone()
        return float(r[0])

    def run_stats(
        self, conn: Connection, kind: str | None, since: datetime | None, until: datetime | None
    ) -> RunStats:
        """Counts, sums and p95s of the endings in ``[since, until)`` (of ``kind``)."""
        where, params = self._runs_where(kind, since, until)
        r = self._x(
            conn,
            "SELECT COUNT(*), "
            "COALESCE(SUM(CASE WHEN status = 'committed' THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN status = 'escalated' THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(attempts), 0), COALESCE(SUM(rejects), 0), "
            "COALESCE(SUM(cost_micros), 0), COUNT(context_utilisation), "
            f"COALESCE(SUM(context_utilisation), 0) FROM seamline_runs{where}",
            params,
        ).fetchone()
        runs, samples = int(r[0]), int(r[7])
        cu_where = where + (" AND " if where else " WHERE ") + "context_utilisation IS NOT NULL"
        return RunStats(
            runs=runs,
            committed=int(r[1]),
            escalated=int(r[2]),
            failed=int(r[3]),
            attempts=int(r[4]),
            rejects=int(r[5]),
            cost=Decimal(int(r[6])) * COST_SCALE,
            latency_p95_ms=self._nearest_rank(conn, "latency_ms", where, params, runs, 95),
            context_samples=samples,
            context_utilisation_sum=round(float(r[8]), 9),
            context_utilisation_p95=self._nearest_rank(
                conn, "context_utilisation", cu_where, params, samples, 95
            ),
        )

    def run_events(
        self,
        conn: Connection,
        type: str,
        kind: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Event]:
        """Events of ``type`` on the streams of boundary instances that ended in the window."""
        where, params = self._runs_where(kind, since, until, alias="r.")
        where = (where + " AND" if where else " WHERE") + " e.type = ?"
        rows = self._x(
            conn,
            "SELECT e.seq, e.stream, e.stream_seq, e.type, e.payload, e.model_version, "
            "e.prompt_hash, e.causation_id, e.idempotency_key, e.recorded_at "
            "FROM seamline_runs r JOIN seamline_events e "
            f"ON e.stream = 'sdb:' || r.boundary || ':' || r.id{where} ORDER BY e.seq LIMIT ?",
            [*params, type, limit],
        ).fetchall()
        return [self._event(r) for r in rows]

    def audit_window(
        self,
        conn: Connection,
        actor_prefix: str,
        decision: str | None,
        kind: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[AuditEntry]:
        """Audit entries by actors starting with ``actor_prefix`` in ``[since, until)``; with
        ``kind``, only those whose subject is a row or a boundary instance of that kind."""
        clauses, params = self._window("at", since, until)
        clauses.append("substr(actor, 1, ?) = ?")
        params += [len(actor_prefix), actor_prefix]
        if decision is not None:
            clauses.append("decision = ?")
            params.append(decision)
        if kind is not None:
            clauses.append(
                "(subject IN (SELECT id FROM seamline_rows WHERE kind = ?) "
                "OR subject IN (SELECT id FROM seamline_runs WHERE kind = ?))"
            )
            params += [kind, kind]
        rows = self._x(
            conn,
            self._AUDIT + " WHERE " + " AND ".join(clauses) + " ORDER BY seq LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [
            AuditEntry(int(r[0]), parse_ts(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def span_counts(
        self, conn: Connection, kind: str | None, since: datetime | None, until: datetime | None
    ) -> list[SpanCount]:
        """Kept spans that ended in the window, counted by name and status; with ``kind``,
        only spans in a trace or run of a boundary instance of that kind."""
        clauses, params = self._window("ended_at", since, until)
        if kind is not None:
            clauses.append(
                "(trace_id IN (SELECT trace_id FROM seamline_runs WHERE kind = ? "
                "AND trace_id IS NOT NULL) OR run_id IN (SELECT run_id FROM seamline_runs "
                "WHERE kind = ?))"
            )
            params += [kind, kind]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._x(
            conn,
            f"SELECT name, status, COUNT(*) FROM seamline_spans{where} GROUP BY name, status",
            params,
        ).fetchall()
        # sorted here, not in SQL: PostgreSQL's collation need not order text as SQLite does
        counts = [SpanCount(str(r[0]), str(r[1]), int(r[2])) for r in rows]
        return sorted(counts, key=lambda c: (c.name, c.status))
