"""The P5 runner: state-machine transitions per second, and memory with many suspended instances.

**Throughput.** A three-step workflow (``open -> triaged -> resolved -> closed``, every handler
returning ``Goto`` at once) is started for ``--instances`` instances, then
``Runner(...).run_until_idle()`` drives all of them to the end in virtual time: three
transitions each. Beside the runner, two plain-driver floors run on a twin database migrated to
the same schema, one transaction per operation:

- the *CAS floor* is bench/store.py's ``CAS transition`` floor (its ``Floor`` class, imported):
  one ``UPDATE ... WHERE id = ? AND version = ?`` per transaction;
- the *step floor* issues the statements the runner issues per transition (counted from
  ``_engine.py``): the timer claim (one per ``--batch`` timers, in its own transaction), the row
  read, then one transaction with the kill-switch check, the row CAS, the timer settlement, the
  next state's timer, the event-counter bump, the stream-head read and the event insert.

The runner runs twice per repeat: with ``--concurrency`` steps in flight (its default, 50) and
with one, which is the like-for-like comparison with the step floor. Method as bench/store.py:
a warm-up, then repeats; the floors run in chunks *between the runner's steps* (from its
``on_step`` hook, timed apart), so both sides see the same disk; rates are medians over the
repeats and each ratio (runner time per transition / floor time per operation) is the median of
the per-repeat ratios.

**Memory.** For each count in ``--memory``, that many instances of an approval workflow are
started in a fresh database; the runner moves each one from ``submitted`` to
``awaiting_approval``, a state with no handler, where it stays suspended. That run happens in
a child process, which reports the tracemalloc peak during ``run_until_idle`` and its resident
set size before and at peak (``/proc/self/status``). The claim under test: the runner's memory
does not grow with the number of suspended instances, because they live in the store.

    python bench/patterns.py                          # both backends, defaults (~2 min)
    python bench/patterns.py --backend sqlite --instances 2000 --memory 1000,5000
    python bench/patterns.py --pg-instances 10000 --repeats 1 --memory none --json out.json

``main(["--instances", "200", "--pg-instances", "100", "--serial-instances", "50", "--repeats",
"1", "--floor-n", "50", "--memory", "100", "--pg-memory", "100", "--quiet"])`` runs it
in-process in about ten seconds (a smoke test) and returns the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seamline.clock import VirtualClock
from seamline.patterns import Goto, Runner, StateMachine, StepContext, Workflow
from seamline.store import SqlStore, UnitOfWork, open_store

HERE = Path(__file__).resolve()


def _load_store_bench() -> ModuleType:
    """bench/store.py, for its CAS floor: the same code measures the same floor."""
    name = "seamline_bench_store"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE.with_name("store.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


store_bench = _load_store_bench()
BenchError = store_bench.BenchError


class Steps(Protocol):
    """bench/store.py's progress steps (``store_bench.Steps``)."""

    def start(self, description: str) -> None: ...
    def done(self) -> None: ...


Backend = Literal["sqlite", "postgresql"]

START = datetime(2026, 1, 1, tzinfo=UTC)
"""Virtual time of every run: all steps are due at once, so the clock never has to move."""
STAMP = START.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
"""START as the store writes timestamps (fixed-width UTC text)."""
SEED_UNIT = 500
"""Instances started per unit of work when seeding (untimed)."""
CAS_ROWS = 64


# --- the workflows ------------------------------------------------------------------------

TICKET = StateMachine(
    kind="ticket",
    initial="open",
    transitions={
        "open": frozenset({"triaged"}),
        "triaged": frozenset({"resolved"}),
        "resolved": frozenset({"closed"}),
    },
    terminal=frozenset({"closed"}),
)
NEXT = {"open": "triaged", "triaged": "resolved", "resolved": "closed"}
STEPS_PER_TICKET = len(NEXT)


async def _advance(ctx: StepContext) -> Goto:
    return Goto(NEXT[ctx.row.state])


TICKETS = Workflow(TICKET, handlers=dict.fromkeys(NEXT, _advance))

APPROVAL = StateMachine(
    kind="approval",
    initial="submitted",
    transitions={
        "submitted": frozenset({"awaiting_approval"}),
        "awaiting_approval": frozenset({"approved", "rejected"}),
    },
    terminal=frozenset({"approved", "rejected"}),
)


async def _ask(ctx: StepContext) -> Goto:
    return Goto("awaiting_approval")


# "awaiting_approval" has no handler: an instance there waits for a person, as a row.
APPROVALS = Workflow(APPROVAL, handlers={"submitted": _ask})


async def start_instances(store: SqlStore, workflow: Workflow, prefix: str, count: int) -> None:
    """Start ``count`` instances named ``prefix000000...``, in units of SEED_UNIT."""
    for first in range(0, count, SEED_UNIT):
        unit = UnitOfWork()
        for i in range(first, min(count, first + SEED_UNIT)):
            workflow.start(unit, f"{prefix}{i:06d}", {"n": i}, START, actor="bench")
        outcome = await store.apply(unit)
        if outcome.kind != "applied":
            raise BenchError(f"starting instances {prefix}{first:06d}... returned {outcome!r}")


# --- databases ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Database:
    """One fresh, empty database: a SQLite file or a private PostgreSQL schema."""

    backend: Backend
    url: str
    path: Path | None
    schema: str | None
    admin_url: str | None

    def open(self) -> SqlStore:
        return open_store(
            self.url,
            clock=VirtualClock(START),
            pool_size=store_bench.PG_POOL_SIZE,
            busy_timeout_s=store_bench.BUSY_TIMEOUT_S,
        )

    def connect(self) -> Any:
        """A plain driver connection with the store's settings (autocommit, explicit BEGIN)."""
        if self.path is not None:
            timeout = store_bench.BUSY_TIMEOUT_S
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            return conn
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def size(self) -> int:
        """Bytes on disk: the SQLite file and its WAL, or the schema's tables with indexes."""
        if self.path is not None:
            files = (self.path, self.path.with_name(self.path.name + "-wal"))
            return sum(f.stat().st_size for f in files if f.exists())
        import psycopg

        with psycopg.connect(str(self.admin_url), autocommit=True) as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()
        return int(row[0]) if row else 0


@asynccontextmanager
async def database(backend: Backend, label: str, cfg: Config) -> AsyncIterator[Database]:
    """A fresh database migrated by seamline, removed afterwards."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix=f"seamline-bench-{label}-", dir=cfg.workdir))
        path = folder / f"{label}.db"
        try:
            db = Database("sqlite", f"sqlite:///{path}", path, None, None)
            await db.open().close()
            yield db
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}_{label}"
    with psycopg.connect(cfg.pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = store_bench._schema_url(cfg.pg_url, schema)
        db = Database("postgresql", url, None, schema, cfg.pg_url)
        await db.open().close()
        yield db
    finally:
        with psycopg.connect(cfg.pg_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


# --- the step floor: the runner's statements through the bare driver ----------------------

# The SQL _engine.py runs for one runner transition, in the order it runs it (events last).
_CLAIM = (
    "UPDATE seamline_timers SET lease_owner = ?, lease_until = ? WHERE id IN ("
    "SELECT id FROM seamline_timers WHERE status = 'pending' AND due_at <= ? "
    "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at, id LIMIT ?{skip_locked}"
    ") RETURNING id, row_id, row_version, name, due_at, payload, status, settled_at"
)
_GET_ROW = (
    "SELECT id, kind, state, version, data, created_at, updated_at FROM seamline_rows WHERE id = ?"
)
_ALIVE = (
    "SELECT scope, killed_by, reason FROM seamline_kills WHERE scope IN (?, ?, ?) "
    "ORDER BY scope LIMIT 1"
)
_CAS = (
    "UPDATE seamline_rows SET state = ?, version = version + 1, data = ?, updated_at = ? "
    "WHERE id = ? AND version = ?"
)
_SETTLE = (
    "UPDATE seamline_timers SET status = ?, settled_at = ? WHERE id = ? AND status = 'pending'"
)
_TIMER = (
    "INSERT INTO seamline_timers (id, row_id, row_version, name, due_at, payload, status) "
    "VALUES (?, ?, ?, ?, ?, ?, 'pending') ON CONFLICT DO NOTHING"
)
_BUMP = "UPDATE seamline_counters SET value = value + ? WHERE name = 'event_seq' RETURNING value"
_HEAD = "SELECT MAX(stream_seq) FROM seamline_events WHERE stream = ?"
_EVENT = (
    "INSERT INTO seamline_events (seq, stream, stream_seq, type, payload, model_version, "
    "prompt_hash, causation_id, idempotency_key, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class StepFloor:
    """Drives ticket instances one transition per transaction, as the runner's SQL does.

    Plain Python around it: decode the row's data, encode the new data, the event and the
    timer payload with ``json``. The claim leases ``batch`` timers at a time, as the runner's
    ``step`` does, in its own transaction.
    """

    def __init__(self, conn: Any, backend: Backend, *, batch: int) -> None:
        self._conn = conn
        placeholder = "?" if backend == "sqlite" else "%s"
        self._begin = "BEGIN IMMEDIATE" if backend == "sqlite" else "BEGIN"

        def sql(text: str) -> str:
            return text.replace("?", placeholder)

        skip = "" if backend == "sqlite" else " FOR UPDATE SKIP LOCKED"
        self._claim = sql(_CLAIM.format(skip_locked=skip))
        self._get, self._alive, self._cas = sql(_GET_ROW), sql(_ALIVE), sql(_CAS)
        self._settle, self._timer = sql(_SETTLE), sql(_TIMER)
        self._bump, self._head, self._event = sql(_BUMP), sql(_HEAD), sql(_EVENT)
        self._batch = batch
        self._owner = "floor"
        self._lease = (START + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        self._claimed: list[tuple[Any, ...]] = []

    def _claim_batch(self) -> None:
        conn = self._conn
        conn.execute(self._begin)
        try:
            rows = conn.execute(
                self._claim, (self._owner, self._lease, STAMP, STAMP, self._batch)
            ).fetchall()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if not rows:
            raise BenchError("the step floor ran out of due timers: seed more floor instances")
        self._claimed = sorted(rows, key=lambda r: (r[4], r[0]), reverse=True)

    def run(self, k: int) -> None:
        """Make ``k`` transitions."""
        for _ in range(k):
            if not self._claimed:
                self._claim_batch()
            self._transition(self._claimed.pop())

    def _transition(self, timer: tuple[Any, ...]) -> None:
        conn = self._conn
        timer_id, row_id = timer[0], timer[1]
        row = conn.execute(self._get, (row_id,)).fetchone()
        if row is None or int(row[3]) != int(timer[2]):
            raise BenchError(f"step floor: timer {timer_id} is stale for row {row_id}")
        state, version = row[2], int(row[3])
        target, stream = NEXT[state], f"wf:ticket:{row_id}"
        data = _json(json.loads(row[4]))
        payload = _json(
            {
                "from": state,
                "to": target,
                "version": version + 1,
                "patch": {},
                "actor": self._owner,
                "at": START.isoformat(),
            }
        )
        conn.execute(self._begin)
        try:
            scopes = ("all", "kind:ticket", f"run:{row_id}")
            if conn.execute(self._alive, scopes).fetchone() is not None:
                raise BenchError("step floor: a kill switch is set")
            if conn.execute(self._cas, (target, data, STAMP, row_id, version)).rowcount != 1:
                raise BenchError(f"step floor: CAS on {row_id} at version {version} missed")
            if conn.execute(self._settle, ("fired", STAMP, timer_id)).rowcount != 1:
                raise BenchError(f"step floor: timer {timer_id} was not pending")
            if target in NEXT:  # the runner schedules a step only for a state with a handler
                params = (
                    f"{row_id}:v{version + 1}:{target}:1",
                    row_id,
                    version + 1,
                    f"step:{target}",
                    STAMP,
                    '{"attempt":1}',
                )
                if conn.execute(self._timer, params).rowcount != 1:
                    raise BenchError(f"step floor: timer for {row_id} v{version + 1} exists")
            seq = int(conn.execute(self._bump, (1,)).fetchall()[0][0])
            head = int(conn.execute(self._head, (stream,)).fetchone()[0] or 0) + 1
            key = f"{stream}:v{version + 1}"
            event = (seq, stream, head, "transitioned", payload, None, None, timer_id, key, STAMP)
            if conn.execute(self._event, event).rowcount != 1:
                raise BenchError(f"step floor: event key {key!r} was already used")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class CasFloor:
    """bench/store.py's CAS floor, rotating over CAS_ROWS pre-created rows as it does."""

    def __init__(self, conn: Any, backend: Backend) -> None:
        placeholder = "?" if backend == "sqlite" else "%s"
        begin = "BEGIN IMMEDIATE" if backend == "sqlite" else "BEGIN"
        self._floor = store_bench.Floor(conn, begin=begin, placeholder=placeholder)
        self._rows = [f"cas-{i:04d}" for i in range(CAS_ROWS)]
        self._versions = dict.fromkeys(self._rows, 1)
        self._done = 0
        self._floor.create_rows(self._rows)

    def run(self, k: int) -> None:
        for _ in range(k):
            id = self._rows[self._done % CAS_ROWS]
            v = self._versions[id]
            self._floor.transition(id, v, "b" if v % 2 else "a")
            self._versions[id] = v + 1
            self._done += 1


# --- throughput ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    backends: tuple[Backend, ...]
    instances: int
    pg_instances: int
    serial_instances: int
    concurrency: int
    batch: int
    repeats: int
    warmup: int | None
    """Tickets run untimed first; None: a tenth of the backend's instances, at least 50."""
    floor_n: int
    chunk: int
    memory: tuple[int, ...]
    pg_memory: tuple[int, ...]
    pg_url: str
    workdir: str | None

    def instances_for(self, backend: Backend) -> int:
        return self.instances if backend == "sqlite" else self.pg_instances

    def warmup_for(self, backend: Backend) -> int:
        if self.warmup is not None:
            return self.warmup
        return max(50, self.instances_for(backend) // 10)

    def memory_for(self, backend: Backend) -> tuple[int, ...]:
        return self.memory if backend == "sqlite" else self.pg_memory

    def throughput_rows(self) -> list[tuple[int, str]]:
        """(steps in flight, which instance count) per runner row."""
        rows = [(self.concurrency, "instances")]
        if self.serial_instances and self.concurrency != 1:
            rows.append((1, "serial"))
        return rows


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    backend: Backend
    in_flight: int
    instances: int
    transitions: int
    """Per timed repeat: STEPS_PER_TICKET per instance."""
    runner_tr_s: float
    cas_floor_ops_s: float
    step_floor_tr_s: float
    runner_samples: tuple[float, ...]
    cas_samples: tuple[float, ...]
    step_samples: tuple[float, ...]

    @property
    def instances_s(self) -> float:
        return self.runner_tr_s / STEPS_PER_TICKET

    @property
    def cas_ratio(self) -> float:
        """Runner time per transition over the CAS floor's time per op (median over repeats)."""
        return _ratio(self.runner_samples, self.cas_samples)

    @property
    def step_ratio(self) -> float:
        """Runner time per transition over the step floor's (median over repeats)."""
        return _ratio(self.runner_samples, self.step_samples)


def _ratio(runner: Sequence[float], floor: Sequence[float]) -> float:
    return statistics.median(f / r for r, f in zip(runner, floor, strict=True))


@dataclass(frozen=True, slots=True)
class Sample:
    runner_tr_s: float
    cas_ops_s: float
    step_tr_s: float


class Floors:
    """The two floors on one connection, run in chunks between the runner's steps."""

    def __init__(self, cas: CasFloor, step: StepFloor, chunk: int) -> None:
        self.cas, self.step, self.chunk = cas, step, chunk
        self.turn = 0

    def run_chunk(self, spent: dict[str, float], done: dict[str, int], k: int) -> None:
        """One chunk of each floor, alternating which goes first (ABBA)."""
        order = ("cas", "step") if self.turn % 2 == 0 else ("step", "cas")
        self.turn += 1
        for side in order:
            start = time.perf_counter()
            (self.cas if side == "cas" else self.step).run(k)
            spent[side] += time.perf_counter() - start
            done[side] += k


async def timed_run(
    store: SqlStore, prefix: str, instances: int, in_flight: int, cfg: Config, floors: Floors
) -> Sample:
    """Start ``instances`` tickets, drive them to the end, and run ``cfg.floor_n`` ops of each
    floor in chunks spread over the runner's steps; rates exclude the other side's time."""
    await start_instances(store, TICKETS, prefix, instances)
    gc.collect()
    transitions = instances * STEPS_PER_TICKET
    chunks = math.ceil(cfg.floor_n / cfg.chunk)
    every = max(1, round(math.ceil(transitions / cfg.batch) / chunks))
    spent = {"cas": 0.0, "step": 0.0, "hook": 0.0}
    done = {"cas": 0, "step": 0}
    steps = 0

    def on_step(_report: object) -> None:
        nonlocal steps
        steps += 1
        if steps % every == 0 and done["step"] < cfg.floor_n:
            start = time.perf_counter()
            floors.run_chunk(spent, done, min(cfg.chunk, cfg.floor_n - done["step"]))
            spent["hook"] += time.perf_counter() - start

    runner = Runner(
        store, [TICKETS], clock=VirtualClock(START), batch=cfg.batch, concurrency=in_flight
    )
    start = time.perf_counter()
    report = await runner.run_until_idle(on_step=on_step)
    runner_s = time.perf_counter() - start - spent["hook"]
    if dict(report.counts) != {"moved": transitions}:
        raise BenchError(
            f"the runner reported {dict(report.counts)} for {instances} tickets, "
            f"expected {{'moved': {transitions}}}"
        )
    while done["step"] < cfg.floor_n:  # the run ended before the floors' share: finish now
        floors.run_chunk(spent, done, min(cfg.chunk, cfg.floor_n - done["step"]))
    return Sample(transitions / runner_s, done["cas"] / spent["cas"], done["step"] / spent["step"])


async def throughput(backend: Backend, cfg: Config, steps: Steps) -> list[ThroughputResult]:
    rows = cfg.throughput_rows()
    counts = {"instances": cfg.instances_for(backend), "serial": cfg.serial_instances}
    async with database(backend, "runner", cfg) as s_db, database(backend, "floor", cfg) as f_db:
        # Enough floor tickets for every floor op of the run, started by seamline (untimed).
        floor_ops = cfg.chunk + cfg.repeats * len(rows) * cfg.floor_n
        seeding = f_db.open()
        try:
            await start_instances(
                seeding, TICKETS, "f", math.ceil(floor_ops / STEPS_PER_TICKET) + cfg.batch
            )
        finally:
            await seeding.close()
        conn = f_db.connect()
        store = s_db.open()
        try:
            floors = Floors(
                CasFloor(conn, backend), StepFloor(conn, backend, batch=cfg.batch), cfg.chunk
            )
            steps.start(f"{backend}: warm-up")
            warm = cfg.chunk
            await start_instances(store, TICKETS, "w", cfg.warmup_for(backend))
            runner = Runner(
                store,
                [TICKETS],
                clock=VirtualClock(START),
                batch=cfg.batch,
                concurrency=cfg.concurrency,
            )
            await runner.run_until_idle()
            floors.run_chunk({"cas": 0.0, "step": 0.0}, {"cas": 0, "step": 0}, warm)
            steps.done()
            samples: dict[int, list[Sample]] = {flight: [] for flight, _ in rows}
            for r in range(cfg.repeats):
                for flight, which in rows:  # rows alternate within a repeat: same drift
                    steps.start(
                        f"{backend}: {counts[which]:,} tickets, {flight} in flight, "
                        f"repeat {r + 1}/{cfg.repeats}"
                    )
                    sample = await timed_run(
                        store, f"r{r}c{flight}-", counts[which], flight, cfg, floors
                    )
                    samples[flight].append(sample)
                    steps.done()
        finally:
            await store.close()
            conn.close()
    results = []
    for flight, which in rows:
        got = samples[flight]
        runner_s = tuple(s.runner_tr_s for s in got)
        cas_s = tuple(s.cas_ops_s for s in got)
        step_s = tuple(s.step_tr_s for s in got)
        results.append(
            ThroughputResult(
                backend,
                flight,
                counts[which],
                counts[which] * STEPS_PER_TICKET,
                statistics.median(runner_s),
                statistics.median(cas_s),
                statistics.median(step_s),
                runner_s,
                cas_s,
                step_s,
            )
        )
    return results


# --- memory -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryResult:
    backend: Backend
    suspended: int
    run_s: float
    """Wall time of run_until_idle in the child, with tracemalloc on (it slows Python down)."""
    tracemalloc_peak: int
    """Peak bytes of Python allocations made during run_until_idle."""
    rss_before: int
    rss_peak: int
    """Peak resident set size during run_until_idle (VmHWM, reset just before the run where
    the kernel allows it), including tracemalloc's own bookkeeping."""
    store_bytes: int


def _rss() -> tuple[int, int]:
    """(current, peak) resident set size of this process, in bytes."""
    try:
        status = Path("/proc/self/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return peak, peak


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # Linux >= 4.0: "5" resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")


async def _memory_child(url: str, batch: int, concurrency: int) -> dict[str, Any]:
    """In a fresh process: drive the started approvals until idle and watch memory."""
    store = open_store(url, clock=VirtualClock(START))
    try:
        runner = Runner(
            store, [APPROVALS], clock=VirtualClock(START), batch=batch, concurrency=concurrency
        )
        gc.collect()
        rss_before, _ = _rss()
        _reset_peak_rss()
        tracemalloc.start()
        start = time.perf_counter()
        report = await runner.run_until_idle()
        run_s = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        _, rss_peak = _rss()
    finally:
        await store.close()
    return {
        "counts": dict(report.counts),
        "run_s": run_s,
        "tracemalloc_peak": peak,
        "rss_before": rss_before,
        "rss_peak": rss_peak,
    }


async def memory(backend: Backend, suspended: int, cfg: Config) -> MemoryResult:
    async with database(backend, f"mem{suspended}", cfg) as db:
        seeding = db.open()
        try:
            await start_instances(seeding, APPROVALS, "a", suspended)
        finally:
            await seeding.close()
        spec = json.dumps({"url": db.url, "batch": cfg.batch, "concurrency": cfg.concurrency})
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE),
            "--memory-child",
            spec,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await child.communicate()
        if child.returncode != 0:
            tail = "\n".join(stderr.decode().strip().splitlines()[-15:])
            raise BenchError(f"the memory child exited with {child.returncode}:\n{tail}")
        got = json.loads(stdout.decode().strip().splitlines()[-1])
        if got["counts"] != {"moved": suspended}:
            raise BenchError(
                f"the runner reported {got['counts']} for {suspended} approvals, "
                f"expected {{'moved': {suspended}}}"
            )
        return MemoryResult(
            backend,
            suspended,
            got["run_s"],
            got["tracemalloc_peak"],
            got["rss_before"],
            got["rss_peak"],
            db.size(),
        )


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Results:
    throughput: list[ThroughputResult]
    memory: list[MemoryResult]


async def run(cfg: Config, *, progress: Progress | None = None) -> Results:
    """Throughput, then memory, on every configured backend; return the results."""
    per_backend = {
        b: 1 + cfg.repeats * len(cfg.throughput_rows()) + len(cfg.memory_for(b))
        for b in cfg.backends
    }
    steps: Steps = store_bench.Steps(progress, sum(per_backend.values()))
    results = Results([], [])
    for backend in cfg.backends:
        results.throughput.extend(await throughput(backend, cfg, steps))
        for n in cfg.memory_for(backend):
            steps.start(f"{backend}: memory, {n:,} suspended")
            results.memory.append(await memory(backend, n, cfg))
            steps.done()
    return results


# --- the command line ---------------------------------------------------------------------


def _counts(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        counts = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated counts such as 1000,10000 (or none), got {text!r}"
        ) from None
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"counts must be at least 1, got {text!r}")
    return counts


_INT_OPTIONS = (  # flag, default, least allowed, help
    ("--instances", 10_000, 1, "tickets per timed run on SQLite"),
    ("--pg-instances", 1_000, 1, "tickets per timed run on PostgreSQL, which is slower"),
    ("--serial-instances", 300, 0, "tickets for the one-in-flight run; 0 skips it"),
    ("--concurrency", 50, 1, "steps in flight, the Runner's concurrency= (its default)"),
    ("--batch", 200, 1, "timers claimed per step, the Runner's batch= (its default)"),
    ("--repeats", 3, 1, "timed repeats; the median is shown"),
    ("--floor-n", 500, 1, "operations of each floor per timed run"),
    ("--chunk", 100, 1, "floor operations per floor between two runner steps"),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python bench/patterns.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The P5 runner on SQLite and PostgreSQL: transitions per second against "
        "two plain-driver floors, and memory as suspended instances pile up in the store.",
        epilog="""what it does:
  throughput  start N three-step tickets, run Runner.run_until_idle() in virtual time
              (3 transitions each), with --concurrency steps in flight and with 1; between
              the runner's steps, time two floors on a twin database, one transaction per op:
                CAS floor   bench/store.py's: one UPDATE ... WHERE id AND version
                step floor  the runner's own SQL per transition: claim (per --batch timers),
                            row read, then kill check, CAS, timer settle, next timer,
                            event counter, stream head, event insert
              ratio = runner time per transition / floor time per op (median of repeats)
  memory      for each count, start that many approvals in a fresh database; a child process
              runs the runner until all of them wait, suspended, in a state with no handler,
              and reports the tracemalloc peak and its RSS before and at peak

examples:
  python bench/patterns.py                                  # the documented run (~2 min)
  python bench/patterns.py --backend sqlite --instances 2000 --memory 1000,5000
  python bench/patterns.py --backend postgresql --pg-instances 10000 --repeats 1 \\
      --serial-instances 0 --pg-memory none                 # PostgreSQL at 10,000 tickets
""",
    )
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    for flag, default, _least, text in _INT_OPTIONS:
        p.add_argument(flag, type=int, default=default, metavar="N", help=f"{text} ({default})")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="N",
        help="tickets run untimed before the repeats (default: a tenth of the backend's "
        "--instances or --pg-instances, at least 50)",
    )
    p.add_argument(
        "--memory",
        type=_counts,
        default=(1_000, 10_000, 50_000),
        metavar="N,N,...",
        help="suspended approvals per memory run on SQLite, or none (1000,10000,50000)",
    )
    p.add_argument(
        "--pg-memory",
        type=_counts,
        default=(1_000, 3_000),
        metavar="N,N,...",
        help="the same on PostgreSQL (1000,3000)",
    )
    p.add_argument(
        "--pg",
        default=os.environ.get("SEAMLINE_BENCH_POSTGRES", store_bench.DEFAULT_PG),
        metavar="URL",
        help="PostgreSQL server; the bench works in private schemas it drops afterwards "
        f"(default: $SEAMLINE_BENCH_POSTGRES or {store_bench.DEFAULT_PG})",
    )
    p.add_argument(
        "--dir",
        default=None,
        metavar="PATH",
        help="folder for the SQLite files (default: the system temp folder)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress and no tables")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return p


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    for flag, _default, least, _text in (*_INT_OPTIONS, ("--warmup", None, 1, "")):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")
    backends: tuple[Backend, ...] = (
        ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    )
    if "postgresql" in backends:
        import psycopg

        try:
            psycopg.connect(args.pg, connect_timeout=3).close()
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            parser.error(
                f"PostgreSQL at {args.pg} is not reachable ({reason}); "
                "pass --pg URL or --backend sqlite"
            )
    return Config(
        backends=backends,
        instances=args.instances,
        pg_instances=args.pg_instances,
        serial_instances=args.serial_instances,
        concurrency=args.concurrency,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        floor_n=args.floor_n,
        chunk=args.chunk,
        memory=args.memory,
        pg_memory=args.pg_memory,
        pg_url=args.pg,
        workdir=args.dir,
    )


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _table(title: str, caption: str, columns: Sequence[str], rows: list[list[str]]) -> Table:
    t = Table(title=title, caption=caption)
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    return t


def tables(results: Results, cfg: Config) -> list[Table]:
    out = []
    if results.throughput:
        out.append(
            _table(
                "P5 runner transitions vs. plain-driver floors",
                f"median of {cfg.repeats} repeats after a warm-up; each floor runs "
                f"{cfg.floor_n} ops per run, in chunks of {cfg.chunk} between runner steps; "
                "ratio = runner time per transition / floor time per op (median of the "
                f"per-repeat ratios); {STEPS_PER_TICKET} transitions per ticket",
                ("backend", "in flight", "tickets", "runner tr/s", "tickets/s",
                 "CAS floor ops/s", "ratio (CAS)", "step floor tr/s", "ratio (step)"),
                [
                    [r.backend, str(r.in_flight), f"{r.instances:,}", f"{r.runner_tr_s:,.0f}",
                     f"{r.instances_s:,.0f}", f"{r.cas_floor_ops_s:,.0f}", f"{r.cas_ratio:.2f}x",
                     f"{r.step_floor_tr_s:,.0f}", f"{r.step_ratio:.2f}x"]
                    for r in results.throughput
                ],
            )
        )  # fmt: skip
    if results.memory:
        out.append(
            _table(
                "runner memory vs. suspended instances",
                "one child process per row runs run_until_idle, which moves every approval to "
                "a state with no handler; tracemalloc is on during the run (and slows it)",
                ("backend", "suspended", "run s", "tracemalloc peak", "RSS before",
                 "RSS peak", "store size"),
                [
                    [m.backend, f"{m.suspended:,}", f"{m.run_s:.2f}", _mib(m.tracemalloc_peak),
                     _mib(m.rss_before), _mib(m.rss_peak), _mib(m.store_bytes)]
                    for m in results.memory
                ],
            )
        )  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> Results:
    """Parse ``argv``, run the benchmark, print the tables (unless ``--quiet``), return them."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.memory_child is not None:  # internal: one memory measurement, in a fresh process
        spec = json.loads(args.memory_child)
        got = asyncio.run(_memory_child(spec["url"], spec["batch"], spec["concurrency"]))
        print(json.dumps(got))
        return Results([], [])
    cfg = _config(args, parser)
    out = Console()
    if not out.is_terminal:  # piped into a file or a doc: do not wrap at 80 columns
        out = Console(width=140)
    progress = (
        None
        if args.quiet
        else Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    )
    started, load_before = time.perf_counter(), _load()
    with progress if progress is not None else nullcontext():
        results = asyncio.run(run(cfg, progress=progress))
    if not args.quiet:
        for t in tables(results, cfg):
            out.print(t)
        took = time.perf_counter() - started
        out.print(f"took {took:.0f} s; load average before: {load_before}; after: {_load()}")
    if args.json:
        payload = {
            "config": asdict(cfg),
            "throughput": [
                {
                    **asdict(r),
                    "instances_s": r.instances_s,
                    "cas_ratio": r.cas_ratio,
                    "step_ratio": r.step_ratio,
                }
                for r in results.throughput
            ],
            "memory": [asdict(m) for m in results.memory],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
