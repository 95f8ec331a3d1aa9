"""Queries over boundary runs and spans: recording a run's ending, listing runs and traces,
usage totals, and the window aggregates metrics are computed from."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from seamline.store._records import (
    AuditEntry,
    Event,
    RunRecord,
    RunStats,
    SpanCount,
    SpanRecord,
    UsageTotals,
)
from seamline.store._sql import Connection, SqlBase, parse_ts, ts
from seamline.store._unit import COST_SCALE


class RunQueries(SqlBase):
    """The runs, spans and usage tables."""

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
            clause, more = self._run_and_children(run_id)
            clauses.append(clause)
            params += more
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
            clause, more = self._run_and_children(run_id)
            sql += f" WHERE trace_id IN (SELECT trace_id FROM seamline_spans WHERE {clause})"
            params += more
        rows = self._x(conn, sql + " ORDER BY started_at, span_id LIMIT ?", [*params, limit])
        return [
            SpanRecord(r[0], r[1], r[2], r[3], r[4], parse_ts(r[5]), parse_ts(r[6]), r[7], r[8])
            for r in rows.fetchall()
        ]

    def usage_totals(self, conn: Connection, run_id: str, include_children: bool) -> UsageTotals:
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_micros), 0) "
            "FROM seamline_usage WHERE "
        )
        # index ranges, not substr or LIKE (run ids may contain % or _): a budget checks this
        # before every model call, so it must not scan the whole usage table
        clause, params = (
            self._run_and_children(run_id)
            if include_children
            else (f"run_id{self.d.bytewise} = ?", [run_id])
        )
        r = self._x(conn, sql + clause, params).fetchone()
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
