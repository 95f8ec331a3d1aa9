"""SQL shared by both backends: applying a unit of work and the read queries.

Everything here is synchronous and runs against one DB-API connection inside a transaction
the backend opened; the backends own threads, pools and transaction boundaries. SQL is
written once with ``?`` placeholders and translated per dialect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from seamline.store._migrations import MIGRATIONS, latest_version
from seamline.store._records import (
    Approval,
    AuditEntry,
    CommitRecord,
    Event,
    Row,
    Timer,
)
from seamline.store._runs_sql import RunQueries
from seamline.store._sql import (
    POSTGRES,
    SQLITE,
    Connection,
    Cursor,
    Dialect,
    Rollback,
    _opt_ts,
    parse_ts,
    ts,
)
from seamline.store._unit import (
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

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Connection",
    "Cursor",
    "Dialect",
    "Engine",
    "Rollback",
    "parse_ts",
    "ts",
]


class Engine(RunQueries):
    """One dialect's SQL for units of work and reads (runs and spans: :class:`RunQueries`)."""

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
                self._x(
                    conn,
                    statement.replace("{autoid}", self.d.autoid).replace(
                        "{bytewise}", self.d.bytewise
                    ),
                )
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
                if op.spans:
                    # one statement for the batch (psycopg pipelines it), not one per span
                    conn.cursor().executemany(
                        self.d.sql(
                            "INSERT INTO seamline_spans (span_id, trace_id, parent_id, name, "
                            "run_id, started_at, ended_at, status, attributes) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (span_id) DO NOTHING"
                        ),
                        [
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
                            )
                            for span in op.spans
                        ],
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
