"""Write throughput of the seamline store against a plain-driver floor, on SQLite and PostgreSQL.

Three kinds of unit are applied one at a time with sequential awaits: a compare-and-swap
transition of a pre-created row, an event append with an idempotency key, and a commit record
under a fresh key. Each is compared with its *floor*: the same SQL writes issued through the
bare driver (``sqlite3`` / sync ``psycopg``), one transaction per operation, against a second
database migrated to the same schema. An extra row applies the CAS transitions with many units
in flight, which is where the SQLite backend's group commit shows.

The ratio is seamline's time per operation over the floor's; the target is at most 1.5x.
Within a timed repeat the two sides run interleaved in chunks (ABBA order), so both see the
same disk: fsync latency drifts a lot from second to second, especially on a shared machine.
Ops/s are medians over the repeats (after a warm-up); the ratio is the median of the
per-repeat ratios.

    python bench/store.py                          # both backends, default size (~45 s)
    python bench/store.py --backend sqlite --n 200
    python bench/store.py --pg postgresql://postgres@127.0.0.1:5432/test --json out.json

``main(["--n", "50", "--quiet"])`` runs it in-process (a smoke test) and returns the results.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seamline.store import Applied, Outcome, SqlStore, UnitOfWork, open_store

TARGET = 1.5
"""Seamline may take at most this many times the floor's time per operation."""

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PG_POOL_SIZE = 8
STREAMS = 8
BUSY_TIMEOUT_S = 30.0

Backend = Literal["sqlite", "postgresql"]


class BenchError(Exception):
    """A write the benchmark expected to succeed did not: the figures would be meaningless."""


@dataclass(frozen=True, slots=True)
class Config:
    backends: tuple[Backend, ...]
    n: int
    repeats: int
    warmup: int
    concurrency: int
    chunk: int
    pg_url: str
    workdir: str | None


@dataclass(frozen=True, slots=True)
class Result:
    operation: str
    backend: Backend
    ops: int
    """Operations per timed repeat (the concurrent row rounds ``--n`` up to a multiple)."""
    seamline_ops_s: float
    floor_ops_s: float
    floor: str
    """What the floor is, in a few words."""
    seamline_samples: tuple[float, ...]
    floor_samples: tuple[float, ...]

    @property
    def ratio(self) -> float:
        """Seamline's time per operation over the floor's: the median over repeats of each
        repeat's ratio, since the two sides of one repeat ran interleaved on the same disk."""
        pairs = zip(self.seamline_samples, self.floor_samples, strict=True)
        return statistics.median(f / s for s, f in pairs)

    @property
    def passed(self) -> bool:
        return self.ratio <= TARGET


# --- the floor: the store's SQL through the bare driver -----------------------------------

# The statements _engine.py executes for these three units, with the same parameters, so the
# floor does the same writes and the same uniqueness checks the store relies on.
_CAS = (
    "UPDATE seamline_rows SET state = ?, version = version + 1, updated_at = ? "
    "WHERE id = ? AND version = ?"
)
_BUMP = "UPDATE seamline_counters SET value = value + ? WHERE name = 'event_seq' RETURNING value"
_HEAD = "SELECT MAX(stream_seq) FROM seamline_events WHERE stream = ?"
_EVENT = (
    "INSERT INTO seamline_events (seq, stream, stream_seq, type, payload, model_version, "
    "prompt_hash, causation_id, idempotency_key, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_COMMIT = (
    "INSERT INTO seamline_commits (key, run_id, boundary, status, result, created_at, "
    "completed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_ROW = (
    "INSERT INTO seamline_rows (id, kind, state, version, data, created_at, updated_at) "
    "VALUES (?, ?, ?, 1, ?, ?, ?)"
)


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class Floor:
    """One plain connection; each method is one ``BEGIN ... COMMIT`` transaction."""

    def __init__(self, conn: Any, *, begin: str, placeholder: str) -> None:
        self._conn = conn
        self._begin = begin

        def sql(text: str) -> str:
            return text.replace("?", placeholder)

        self._cas, self._bump, self._head = sql(_CAS), sql(_BUMP), sql(_HEAD)
        self._event, self._commit, self._row = sql(_EVENT), sql(_COMMIT), sql(_ROW)

    def _tx(self, body: Callable[[Any], None]) -> None:
        conn = self._conn
        conn.execute(self._begin)
        try:
            body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def create_rows(self, ids: Sequence[str]) -> None:
        stamp = _stamp()

        def body(c: Any) -> None:
            for id in ids:
                c.execute(self._row, (id, "bench", "a", _json({}), stamp, stamp))

        self._tx(body)

    def transition(self, id: str, expect: int, to: str) -> None:
        def body(c: Any) -> None:
            if c.execute(self._cas, (to, _stamp(), id, expect)).rowcount != 1:
                raise BenchError(f"floor CAS on {id} at version {expect} matched no row")

        self._tx(body)

    def append_event(self, stream: str, type: str, payload: object, key: str) -> None:
        payload_json, stamp = _json(payload), _stamp()

        def body(c: Any) -> None:
            seq = int(c.execute(self._bump, (1,)).fetchall()[0][0])
            head = int(c.execute(self._head, (stream,)).fetchone()[0] or 0) + 1
            params = (seq, stream, head, type, payload_json, None, None, None, key, stamp)
            if c.execute(self._event, params).rowcount != 1:
                raise BenchError(f"floor event key {key!r} was already used")

        self._tx(body)

    def record_commit(self, key: str, result: object, run_id: str, boundary: str) -> None:
        result_json, stamp = _json(result), _stamp()

        def body(c: Any) -> None:
            params = (key, run_id, boundary, "done", result_json, stamp, stamp)
            if c.execute(self._commit, params).rowcount != 1:
                raise BenchError(f"floor commit key {key!r} was already used")

        self._tx(body)

    def close(self) -> None:
        self._conn.close()


# --- one backend: a store and a floor on twin databases -----------------------------------


@dataclass(frozen=True, slots=True)
class Twin:
    backend: Backend
    store: SqlStore
    connect_floor: Callable[[], Floor]
    floor_workers: int
    """Connections the concurrent floor may use: SQLite has one writer, so 1."""


@asynccontextmanager
async def sqlite_twin(workdir: str | None) -> AsyncIterator[Twin]:
    folder = Path(tempfile.mkdtemp(prefix="seamline-bench-", dir=workdir))
    try:
        floor_path = folder / "floor.db"
        await open_store(f"sqlite:///{floor_path}").close()  # same schema, via the migrations

        def connect() -> Floor:
            conn = sqlite3.connect(floor_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            return Floor(conn, begin="BEGIN IMMEDIATE", placeholder="?")

        store = open_store(f"sqlite:///{folder / 'seamline.db'}", busy_timeout_s=BUSY_TIMEOUT_S)
        try:
            yield Twin("sqlite", store, connect, floor_workers=1)
        finally:
            await store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@asynccontextmanager
async def postgres_twin(base: str) -> AsyncIterator[Twin]:
    import psycopg

    tag = uuid.uuid4().hex[:10]
    store_schema, floor_schema = f"bench_{tag}_seamline", f"bench_{tag}_floor"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {store_schema}")
        admin.execute(f"CREATE SCHEMA {floor_schema}")
    try:
        floor_url = _schema_url(base, floor_schema)
        await open_store(floor_url).close()

        def connect() -> Floor:
            conn = psycopg.connect(floor_url, autocommit=True)  # explicit BEGIN, as the store
            return Floor(conn, begin="BEGIN", placeholder="%s")

        store = open_store(_schema_url(base, store_schema), pool_size=PG_POOL_SIZE)
        try:
            yield Twin("postgresql", store, connect, floor_workers=PG_POOL_SIZE)
        finally:
            await store.close()
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {store_schema} CASCADE")
            admin.execute(f"DROP SCHEMA {floor_schema} CASCADE")


# --- the workloads ------------------------------------------------------------------------


def _expect_applied(outcome: Outcome, what: str) -> None:
    if not isinstance(outcome, Applied):
        raise BenchError(f"seamline {what} returned {outcome!r}, expected Applied")


@dataclass(frozen=True, slots=True)
class Workload:
    """``seamline(k)`` and ``floor(k)`` each perform ``k`` operations of one kind."""

    operation: str
    floor_label: str
    seamline: Callable[[int], Awaitable[None]]
    floor: Callable[[int], None]
    rounds_to: int = 1
    """Operation counts are rounded up to a multiple of this."""


class Workloads:
    """The per-backend state the workloads share: row versions and key counters."""

    def __init__(self, twin: Twin, floors: Sequence[Floor], concurrency: int) -> None:
        self.twin, self.store = twin, twin.store
        # One connection per floor worker, all opened before any timing; [0] is the main one.
        self.floors = list(floors)
        self.floor_conn = self.floors[0]
        self.concurrency = concurrency
        self.rows = [f"row-{i:04d}" for i in range(concurrency)]
        self.s_versions = dict.fromkeys(self.rows, 1)
        self.f_versions = dict.fromkeys(self.rows, 1)
        self.s_count = 0
        self.f_count = 0

    async def create_rows(self) -> None:
        unit = UnitOfWork()
        for id in self.rows:
            unit.create_row(id, kind="bench", state="a")
        _expect_applied(await self.store.apply(unit), "create_row")
        self.floor_conn.create_rows(self.rows)

    def all(self) -> list[Workload]:
        seq_floor = "sqlite3 loop" if self.twin.backend == "sqlite" else "psycopg loop"
        if len(self.floors) == 1:
            conc_floor = f"{seq_floor} (one writer)"
        else:
            conc_floor = f"psycopg, {len(self.floors)} threads"
        return [
            Workload("CAS transition", seq_floor, self.s_cas, self.f_cas),
            Workload("event append", seq_floor, self.s_event, self.f_event),
            Workload("commit record", seq_floor, self.s_commit, self.f_commit),
            Workload(
                f"CAS, {self.concurrency} in flight",
                conc_floor,
                self.s_cas_concurrent,
                self.f_cas_concurrent,
                rounds_to=self.concurrency,
            ),
        ]

    # seamline side

    async def _s_transition(self, id: str) -> None:
        v = self.s_versions[id]
        unit = UnitOfWork().transition(id, expect_version=v, to="b" if v % 2 else "a")
        _expect_applied(await self.store.apply(unit), "transition")
        self.s_versions[id] = v + 1

    async def s_cas(self, k: int) -> None:
        rows = self.rows
        for i in range(k):
            await self._s_transition(rows[i % len(rows)])

    async def s_event(self, k: int) -> None:
        for _ in range(k):
            i = self.s_count = self.s_count + 1
            unit = UnitOfWork().append_event(
                f"stream-{i % STREAMS}", "bench.tick", {"i": i}, idempotency_key=f"ev-{i}"
            )
            _expect_applied(await self.store.apply(unit), "append_event")

    async def s_commit(self, k: int) -> None:
        for _ in range(k):
            i = self.s_count = self.s_count + 1
            unit = UnitOfWork().record_commit(
                f"commit-{i}", {"ok": True, "i": i}, run_id="bench", boundary="bench"
            )
            _expect_applied(await self.store.apply(unit), "record_commit")

    async def s_cas_concurrent(self, k: int) -> None:
        per_row = k // self.concurrency

        async def worker(id: str) -> None:
            for _ in range(per_row):
                await self._s_transition(id)

        await asyncio.gather(*(worker(id) for id in self.rows))

    # floor side

    def _f_transition(self, floor: Floor, id: str) -> None:
        v = self.f_versions[id]
        floor.transition(id, v, "b" if v % 2 else "a")
        self.f_versions[id] = v + 1

    def f_cas(self, k: int) -> None:
        rows = self.rows
        for i in range(k):
            self._f_transition(self.floor_conn, rows[i % len(rows)])

    def f_event(self, k: int) -> None:
        for _ in range(k):
            i = self.f_count = self.f_count + 1
            self.floor_conn.append_event(f"stream-{i % STREAMS}", "bench.tick", {"i": i}, f"ev-{i}")

    def f_commit(self, k: int) -> None:
        for _ in range(k):
            i = self.f_count = self.f_count + 1
            self.floor_conn.record_commit(f"commit-{i}", {"ok": True, "i": i}, "bench", "bench")

    def f_cas_concurrent(self, k: int) -> None:
        workers = len(self.floors)
        if workers == 1:
            self.f_cas(k)
            return
        per_row = k // self.concurrency
        shares = [self.rows[w::workers] for w in range(workers)]

        def work(floor: Floor, rows: list[str]) -> None:
            for _ in range(per_row):
                for id in rows:
                    self._f_transition(floor, id)

        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(work, f, rows) for f, rows in zip(self.floors, shares, strict=True)
            ]
            for future in futures:
                future.result()


# --- measuring ----------------------------------------------------------------------------


def _round_up(k: int, multiple: int) -> int:
    return -(-k // multiple) * multiple


class Steps:
    """Progress through the run: one step per warm-up or timed repeat (silent without Rich)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self._progress = progress
        self._task = None if progress is None else progress.add_task("starting", total=total)

    def start(self, description: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description)

    def done(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)


async def _repeat(work: Workload, n: int, chunk: int) -> tuple[float, float]:
    """One timed repeat: ``n`` operations per side, interleaved in chunks, as ops/s per side.

    The disk's fsync latency drifts by tens of percent over seconds (more on a shared
    machine), so the sides alternate chunk by chunk in ABBA order and each sees the same disk.
    """
    gc.collect()
    spent = {"seamline": 0.0, "floor": 0.0}
    done = turn = 0
    while done < n:
        k = min(chunk, n - done)
        order = ("seamline", "floor") if turn % 2 == 0 else ("floor", "seamline")
        for side in order:
            start = time.perf_counter()
            if side == "seamline":
                await work.seamline(k)
            else:
                work.floor(k)
            spent[side] += time.perf_counter() - start
        done, turn = done + k, turn + 1
    return n / spent["seamline"], n / spent["floor"]


async def measure(twin: Twin, work: Workload, cfg: Config, steps: Steps) -> Result:
    n = _round_up(cfg.n, work.rounds_to)
    # A concurrent chunk gives each worker a few units, so most of it runs at full concurrency.
    chunk = (
        cfg.chunk
        if work.rounds_to == 1
        else _round_up(max(cfg.chunk, 4 * work.rounds_to), work.rounds_to)
    )
    warmup = _round_up(cfg.warmup, work.rounds_to)
    label = f"{twin.backend}: {work.operation}"
    steps.start(f"{label}: warm-up")
    await work.seamline(warmup)
    work.floor(warmup)
    steps.done()
    s_samples: list[float] = []
    f_samples: list[float] = []
    for r in range(cfg.repeats):
        steps.start(f"{label}: repeat {r + 1}/{cfg.repeats}")
        s_rate, f_rate = await _repeat(work, n, chunk)
        s_samples.append(s_rate)
        f_samples.append(f_rate)
        steps.done()
    return Result(
        work.operation,
        twin.backend,
        n,
        statistics.median(s_samples),
        statistics.median(f_samples),
        work.floor_label,
        tuple(s_samples),
        tuple(f_samples),
    )


WORKLOADS_PER_BACKEND = 4


async def run(cfg: Config, *, progress: Progress | None = None) -> list[Result]:
    """Run every workload on every configured backend, in order; return the results."""
    steps = Steps(progress, WORKLOADS_PER_BACKEND * (1 + cfg.repeats) * len(cfg.backends))
    results: list[Result] = []
    for backend in cfg.backends:
        twin_cm = sqlite_twin(cfg.workdir) if backend == "sqlite" else postgres_twin(cfg.pg_url)
        async with twin_cm as twin:
            floors = [twin.connect_floor() for _ in range(twin.floor_workers)]
            try:
                loads = Workloads(twin, floors, cfg.concurrency)
                await loads.create_rows()
                for work in loads.all():
                    results.append(await measure(twin, work, cfg, steps))
            finally:
                for floor in floors:
                    floor.close()
    return results


# --- the command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python bench/store.py",
        description="Store write throughput on SQLite and PostgreSQL against a plain-driver "
        f"floor (target: at most {TARGET}x the floor's time per operation).",
    )
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--n", type=int, default=1000, help="operations per timed repeat (1000)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is shown (5)")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed operations before each measurement (default: n/5, at least 10)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=100,
        help="operations per side before switching sides within a repeat (100)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="units in flight for the concurrent CAS row (64)",
    )
    p.add_argument(
        "--pg",
        default=os.environ.get("SEAMLINE_BENCH_POSTGRES", DEFAULT_PG),
        metavar="URL",
        help="PostgreSQL server; the bench works in private schemas "
        f"it drops afterwards (default: $SEAMLINE_BENCH_POSTGRES or {DEFAULT_PG})",
    )
    p.add_argument(
        "--dir",
        default=None,
        metavar="PATH",
        help="folder for the SQLite files (default: the system temp folder)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress and no table")
    return p


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    for name in ("n", "repeats", "chunk", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup cannot be negative, got {args.warmup}")
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
    warmup = args.warmup if args.warmup is not None else max(10, args.n // 5)
    return Config(
        backends, args.n, args.repeats, warmup, args.concurrency, args.chunk, args.pg, args.dir
    )


def table(results: Sequence[Result], cfg: Config) -> Table:
    t = Table(
        title="seamline store writes vs. plain-driver floor",
        caption=f"ops/s: median of {cfg.repeats} repeats of --n {cfg.n} after {cfg.warmup} "
        f"warm-up ops; ratio = seamline time per op / floor time per op (median of the "
        f"per-repeat ratios); target <= {TARGET}x",
    )
    t.add_column("operation", no_wrap=True)
    t.add_column("backend")
    t.add_column("seamline ops/s", justify="right")
    t.add_column("floor ops/s", justify="right")
    t.add_column("floor")
    t.add_column("ratio", justify="right")
    t.add_column(f"<= {TARGET}x")
    for r in results:
        verdict = "[green]pass[/]" if r.passed else "[red]fail[/]"
        t.add_row(
            r.operation,
            r.backend,
            f"{r.seamline_ops_s:,.0f}",
            f"{r.floor_ops_s:,.0f}",
            r.floor,
            f"{r.ratio:.2f}x",
            verdict,
        )
    return t


def main(argv: Sequence[str] | None = None) -> list[Result]:
    """Parse ``argv``, run the benchmark, print the table (unless ``--quiet``), return results."""
    parser = _parser()
    args = parser.parse_args(argv)
    cfg = _config(args, parser)
    out = Console()
    if not out.is_terminal:  # piped into a file or a doc: do not wrap at 80 columns
        out = Console(width=120)
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
    with progress if progress is not None else nullcontext():
        results = asyncio.run(run(cfg, progress=progress))
    if not args.quiet:
        out.print(table(results, cfg))
    if args.json:
        payload = [{**asdict(r), "ratio": r.ratio, "passed": r.passed} for r in results]
        Path(args.json).write_text(
            json.dumps({"config": asdict(cfg), "results": payload}, indent=2) + "\n"
        )
    return results


if __name__ == "__main__":
    main()
