"""The schema, as an ordered list of migrations recorded in ``seamline_schema``.

One text serves both backends; the few words that differ are placeholders filled per dialect.
Timestamps are fixed-width ISO-8601 UTC text on both, so they sort as text and compare equal
across backends; JSON is the codec's text, so it reads back byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "latest_version"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_INITIAL = (
    """CREATE TABLE seamline_rows (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        version BIGINT NOT NULL CHECK (version >= 1),
        data TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX seamline_rows_kind_state ON seamline_rows (kind, state, id)",
    # One counter row per sequence. Taking the row lock to bump it serialises appenders until
    # they commit, which keeps the global event sequence gapless and in commit order: a
    # consumer that reads "seq > offset" can never skip an event that commits late.
    """CREATE TABLE seamline_counters (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )""",
    "INSERT INTO seamline_counters (name, value) VALUES ('event_seq', 0)",
    """CREATE TABLE seamline_events (
        seq BIGINT PRIMARY KEY,
        stream TEXT NOT NULL,
        stream_seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        model_version TEXT,
        prompt_hash TEXT,
        causation_id TEXT,
        idempotency_key TEXT UNIQUE,
        recorded_at TEXT NOT NULL,
        UNIQUE (stream, stream_seq)
    )""",
    """CREATE TABLE seamline_offsets (
        consumer TEXT NOT NULL,
        stream TEXT NOT NULL,
        position BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (consumer, stream)
    )""",
    """CREATE TABLE seamline_commits (
        key TEXT PRIMARY KEY,
        run_id TEXT,
        boundary TEXT,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
        result TEXT,
        created_at TEXT NOT NULL,
        completed_at TEXT
    )""",
    "CREATE INDEX seamline_commits_run ON seamline_commits (run_id)",
    """CREATE TABLE seamline_timers (
        id TEXT PRIMARY KEY,
        row_id TEXT NOT NULL,
        row_version BIGINT NOT NULL,
        name TEXT NOT NULL,
        due_at TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'fired', 'noop', 'cancelled')),
        settled_at TEXT
    )""",
    "CREATE INDEX seamline_timers_due ON seamline_timers (status, due_at)",
    "CREATE INDEX seamline_timers_row ON seamline_timers (row_id)",
    """CREATE TABLE seamline_approvals (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('approval', 'escalation')),
        run_id TEXT,
        row_id TEXT,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'rejected', 'edited', 'expired')),
        reason TEXT NOT NULL,
        request TEXT NOT NULL,
        decision TEXT,
        requested_by TEXT NOT NULL,
        decided_by TEXT,
        created_at TEXT NOT NULL,
        due_at TEXT,
        decided_at TEXT
    )""",
    "CREATE INDEX seamline_approvals_status ON seamline_approvals (status, created_at)",
    """CREATE TABLE seamline_audit (
        seq {autoid},
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        decision TEXT NOT NULL,
        policy_version TEXT,
        reason TEXT NOT NULL,
        details TEXT NOT NULL
    )""",
    "CREATE INDEX seamline_audit_subject ON seamline_audit (subject, seq)",
    """CREATE TABLE seamline_usage (
        seq {autoid},
        run_id TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_tokens BIGINT NOT NULL CHECK (prompt_tokens >= 0),
        completion_tokens BIGINT NOT NULL CHECK (completion_tokens >= 0),
        cost_micros BIGINT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX seamline_usage_run ON seamline_usage (run_id)",
)

_BUCKETS = (
    # Token buckets shared by every process on the store: rate limits and throttles that hold
    # across workers. Time is epoch seconds so refill is plain arithmetic on both backends.
    """CREATE TABLE seamline_buckets (
        name TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        updated_s DOUBLE PRECISION NOT NULL
    )""",
)

_CONTROL = (
    # The kill switch: a scope ("all", "kind:K", "run:R") is stopped while its row exists.
    # Commits check it inside their own transaction, so a commit either lands before the kill
    # or never starts.
    """CREATE TABLE seamline_kills (
        scope TEXT PRIMARY KEY,
        killed_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
    # Timer leases: a runner claims due timers for a while; a dead runner's claims expire.
    "ALTER TABLE seamline_timers ADD COLUMN lease_owner TEXT",
    "ALTER TABLE seamline_timers ADD COLUMN lease_until TEXT",
)

_RUNS = (
    # One row per boundary instance (its idempotency key), written in the same transaction as
    # the instance's ending: what metrics and the console's runs list read. A retryable
    # failure followed by a later success overwrites the row with the later ending.
    """CREATE TABLE seamline_runs (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        boundary TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('committed', 'escalated', 'failed')),
        reason TEXT,
        attempts INTEGER NOT NULL,
        rejects INTEGER NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cost_micros BIGINT NOT NULL,
        context_utilisation DOUBLE PRECISION,
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        trace_id TEXT
    )""",
    "CREATE INDEX seamline_runs_kind_ended ON seamline_runs (kind, ended_at)",
    "CREATE INDEX seamline_runs_ended ON seamline_runs (ended_at)",
    "CREATE INDEX seamline_runs_run ON seamline_runs (run_id)",
    # Finished OpenTelemetry spans, kept so a trace can be read back from the store alone.
    """CREATE TABLE seamline_spans (
        span_id TEXT PRIMARY KEY,
        trace_id TEXT NOT NULL,
        parent_id TEXT,
        name TEXT NOT NULL,
        run_id TEXT,
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        status TEXT NOT NULL,
        attributes TEXT NOT NULL
    )""",
    "CREATE INDEX seamline_spans_trace ON seamline_spans (trace_id)",
    "CREATE INDEX seamline_spans_run ON seamline_spans (run_id)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _INITIAL),
    Migration(2, "token buckets", _BUCKETS),
    Migration(3, "kill switch and timer leases", _CONTROL),
    # Claims order by (due_at, id): with id in the index, no sort of every pending timer
    # that shares the earliest due time.
    Migration(
        4,
        "timer claim index",
        (
            "DROP INDEX seamline_timers_due",
            "CREATE INDEX seamline_timers_due ON seamline_timers (status, due_at, id)",
        ),
    ),
    Migration(5, "runs and spans", _RUNS),
    # Sub-run lookups are byte-wise prefix ranges; on PostgreSQL the index must use the same
    # collation as the query for the planner to use it.
    Migration(
        6,
        "byte-wise run id indexes",
        (
            "DROP INDEX seamline_usage_run",
            "CREATE INDEX seamline_usage_run ON seamline_usage (run_id{bytewise})",
            "DROP INDEX seamline_runs_run",
            "CREATE INDEX seamline_runs_run ON seamline_runs (run_id{bytewise})",
            "DROP INDEX seamline_spans_run",
            "CREATE INDEX seamline_spans_run ON seamline_spans (run_id{bytewise})",
        ),
    ),
)


def latest_version() -> int:
    return MIGRATIONS[-1].version
