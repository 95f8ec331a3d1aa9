"""What one durable boundary costs over plain Python, and how boundaries fare in flight.

The boundary under test: a simulated model (no errors) proposes an offer as JSON, two
verifiers accept it (a policy-as-code cap on the discount, a ``Rule`` that the offer names the
right customer) and a ``StoreCommit`` writes it. Everything runs on SQLite and on PostgreSQL.

**Per call, one at a time.** With a zero-latency model, ``await boundary.run(...)`` in a loop
is compared with its *floor*: a plain-Python loop that makes the same JSON text, parses and
validates it with the same pydantic model, runs the two checks inline, reads the instance's
stream, then writes the same rows with the same SQL (see ``Floor``) in ONE fsynced
transaction through the bare driver, on a twin database with the same schema. Afterwards
the twins are compared table by table, so "the same writes" is checked, not assumed. Method
as bench/store.py: a warm-up, then repeats in which the sides alternate in chunks (ABBA) so
both see the same disk; medians over repeats; the ratio (target at most 1.5x) is the median
of the per-repeat ratios. Both loops also run against a store and a connection that do
nothing, which shows how much of the gap is each side's own Python.

**In flight.** 1,000 boundaries whose model answers after exactly 50 ms of real sleep, run by
100 workers pulling from one queue. Ideal: 1000 / 100 x 50 ms = 0.5 s; the ratio (target at
most 1.3x) is the median wall time over that. Each repeat also times the same workers doing
only the sleep, and the floor's plain loop doing 1,000 calls back to back with no model
latency at all: what the writes alone take one at a time on this machine.

    python bench/boundary.py                          # both backends, defaults (~55 s)
    python bench/boundary.py --backend sqlite --n 200 --flight-repeats 3
    python bench/boundary.py --concurrency 50 --latency-ms 200 --json out.json

``main(["--n", "40", "--repeats", "1", "--boundaries", "100", "--flight-repeats", "1",
"--quiet"])`` runs it in-process in a few seconds (a smoke test) and returns the results.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import pydantic
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seamline.boundary import (
    Boundary,
    Committed,
    PolicyVerifier,
    Rule,
    Runtime,
    StoreCommit,
    parse_policy,
)
from seamline.clock import SystemClock
from seamline.models import FixedBehaviour, Message, ModelRequest, SimProfile, SimulatedModel
from seamline.store import Applied, Event, Outcome, SqlStore, Store, UnitOfWork, open_store

OVERHEAD_TARGET = 1.5
"""A boundary may take at most this many times the floor's time per call."""
FLIGHT_TARGET = 1.3
"""Boundaries in flight may take at most this many times the ideal wall time."""

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PG_POOL_SIZE = 8
BUSY_TIMEOUT_S = 30.0

Backend = Literal["sqlite", "postgresql"]


class BenchError(Exception):
    """Something the benchmark relies on did not happen: the figures would be meaningless."""


# --- the task: an offer, proposed by a simulated model, checked by two verifiers ----------


class Offer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    customer: str = pydantic.Field(max_length=64)
    discount: Decimal = pydantic.Field(ge=0, le=1)
    term_months: Literal[12, 24]
    message: str = pydantic.Field(max_length=2000)


class Customer(pydantic.BaseModel):
    id: str


NAME = "offer"
DISCOUNT_CAP = Decimal("0.30")
POLICY = parse_policy(
    {
        "policy": "bench-offers",
        "version": "2026.1",
        "rules": [{"id": "discount.cap", "field": "discount", "max": str(DISCOUNT_CAP)}],
    }
)
ANSWER: dict[str, Any] = {
    "discount": "0.10",
    "term_months": 12,
    "message": "Thank you for staying with us: 10% off a 12-month renewal.",
}
SYSTEM_PROMPT = "Propose a renewal offer as JSON matching the Offer schema."
SCHEMA = Offer.model_json_schema()


class OfferBehaviour(FixedBehaviour):
    """The same offer every time, for the customer being asked about (the boundary's input
    key, which the model sees in the request metadata). The patches are never drawn: every
    error rate of the bench's profile is 0."""

    def propose(self, request: ModelRequest, rng: random.Random) -> dict[str, Any]:
        return {"customer": request.metadata["input"], **self.answer}


def prompt(customer: Customer) -> list[Message]:
    return [Message("system", SYSTEM_PROMPT), Message("user", f"Customer {customer.id}.")]


def write_offer(offer: Offer, customer: Customer, unit: UnitOfWork) -> dict[str, Any]:
    unit.create_row(
        f"offer:{customer.id}", kind="sent_offer", state="sent", data=offer.model_dump(mode="json")
    )
    return {"offer_row": f"offer:{customer.id}", "discount": str(offer.discount)}


def offer_boundary(latency_ms: float) -> Boundary[Customer, Offer]:
    """The boundary under test; ``latency_ms`` is the simulated model's (exact) latency."""
    profile = SimProfile(
        "bench", "v1", latency_ms_median=latency_ms, latency_ms_p95=latency_ms
    )  # every error rate defaults to 0; p95 == median makes the lognormal's sigma 0
    behaviour = OfferBehaviour(ANSWER, {"discount": "0.90"}, {"discount": "0.90"})
    model = SimulatedModel(behaviour, profile=profile, seed=1, clock=SystemClock())
    return Boundary(
        NAME,
        model=model,
        prompt=prompt,
        output=Offer,
        verifiers=[
            PolicyVerifier(POLICY),
            Rule(
                "offer.customer",
                lambda offer, ctx: offer.customer == ctx.input.id,
                "wrong_customer",
                "set customer to the id in the task",
                field="customer",
            ),
        ],
        commit=StoreCommit(write_offer),
        attempts=1,
        input_key=lambda c: c.id,
    )


# --- the floor: the same work in plain Python, through the bare driver --------------------

# The statements src/seamline/store/_engine.py issues for the boundary's read and its unit of
# work (an accepted first attempt with a StoreCommit that creates one row), in its order:
# rows and ledger entries in the order the unit lists them, then the events.
_READ_STREAM = (
    "SELECT seq, stream, stream_seq, type, payload, model_version, prompt_hash, causation_id, "
    "idempotency_key, recorded_at FROM seamline_events "
    "WHERE stream = ? AND stream_seq > ? ORDER BY stream_seq LIMIT ?"
)
_USAGE = (
    "INSERT INTO seamline_usage (run_id, model, prompt_tokens, completion_tokens, cost_micros, "
    "latency_ms, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_AUDIT = (
    "INSERT INTO seamline_audit (at, actor, action, subject, decision, policy_version, reason, "
    "details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ROW = (
    "INSERT INTO seamline_rows (id, kind, state, version, data, created_at, updated_at) "
    "VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_COMMIT = (
    "INSERT INTO seamline_commits (key, run_id, boundary, status, result, created_at, "
    "completed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_BUMP = "UPDATE seamline_counters SET value = value + ? WHERE name = 'event_seq' RETURNING value"
_HEAD = "SELECT MAX(stream_seq) FROM seamline_events WHERE stream = ?"
_ALIVE = (
    "SELECT scope, killed_by, reason FROM seamline_kills WHERE scope IN (?, ?, ?) "
    "ORDER BY scope LIMIT 1"
)
_EVENT = (
    "INSERT INTO seamline_events (seq, stream, stream_seq, type, payload, model_version, "
    "prompt_hash, causation_id, idempotency_key, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# What the seamline side records for this model: its id, its price (USD per million tokens,
# seamline's default for sim: models) and its token estimate.
MODEL, ACTOR = "sim:bench-v1", f"boundary:{NAME}"
_PRICE_IN, _PRICE_OUT = 0.15, 0.60
_CHARS_PER_TOKEN = 4


def _json(value: object) -> str:
    """The codec's canonical form (sorted keys, no spaces), so the bytes written match."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class Floor:
    """A plain loop over one connection: each call is a read and one write transaction."""

    def __init__(self, conn: Any, *, begin: str, placeholder: str, lock: str | None = None) -> None:
        self._conn = conn
        self._begin = begin
        # The kill-switch check the boundary's commit makes first (on PostgreSQL after a SHARE
        # lock on the kills table, so a kill waits for commits that already checked).
        self._lock = lock

        def sql(text: str) -> str:
            return text.replace("?", placeholder)

        self._read, self._usage, self._audit = sql(_READ_STREAM), sql(_USAGE), sql(_AUDIT)
        self._row, self._commit, self._bump = sql(_ROW), sql(_COMMIT), sql(_BUMP)
        self._head, self._event = sql(_HEAD), sql(_EVENT)
        self._alive = sql(_ALIVE)
        # What the model is asked includes the output schema; a hand-written loop would
        # serialise it once, not per call.
        self._schema_text = _json(SCHEMA)

    def call(self, customer: Customer, run_id: str) -> None:
        """One offer: ask, parse, validate, check, read the stream, write it all at once."""
        key = f"{run_id}:{NAME}:{customer.id}"
        stream = f"sdb:{NAME}:{key}"
        messages = [["system", SYSTEM_PROMPT], ["user", f"Customer {customer.id}."]]
        phash = hashlib.sha256(f"{_json(messages)}{self._schema_text}".encode()).hexdigest()[:32]
        text = json.dumps({"customer": customer.id, **ANSWER})  # the "model"
        offer = Offer.model_validate(json.loads(text))
        if offer.discount > DISCOUNT_CAP or offer.customer != customer.id:
            raise BenchError(f"floor rejected its own offer {offer!r}")
        prompt_tokens = math.ceil(sum(len(m[1]) for m in messages) / _CHARS_PER_TOKEN)
        completion_tokens = math.ceil(len(text) / _CHARS_PER_TOKEN)
        cost_micros = round(prompt_tokens * _PRICE_IN + completion_tokens * _PRICE_OUT)
        candidate = offer.model_dump(mode="json")
        result = {"offer_row": f"offer:{customer.id}", "discount": str(offer.discount)}
        proposed = _json(
            {
                "attempt": 1,
                "raw": text,
                "tool_calls": [],
                "model": MODEL,
                "usage": [prompt_tokens, completion_tokens],
                "latency_ms": 0.0,
                "simulated": True,
                "finish_reason": "stop",
            }
        )
        accepted = _json(
            {
                "attempt": 1,
                "candidate": candidate,
                "verdicts": ["schema", "policy:bench-offers", "rule:offer.customer"],
                "flags": [],
                "via": "model",
                "policy_versions": [POLICY.version],
            }
        )
        committed = _json({"result": result, "via": "model"})
        details = _json({"flags": [], "via": "model"})
        events = (
            ("proposed", proposed, "v1", phash, f"{key}:proposed:1"),
            ("accepted", accepted, "v1", phash, f"{key}:accepted"),
            ("committed", committed, None, None, f"{key}:committed"),
        )

        c = self._conn
        if c.execute(self._read, (stream, 0, 1000)).fetchall():
            raise BenchError(f"floor stream {stream} already has events")
        stamp = _stamp()
        c.execute(self._begin)
        try:
            if self._lock is not None:
                c.execute(self._lock)
            if c.execute(self._alive, ("all", f"kind:{NAME}", f"run:{run_id}")).fetchone():
                raise BenchError(f"floor: a kill-switch scope of {run_id} is stopped")
            usage = (run_id, MODEL, prompt_tokens, completion_tokens, cost_micros, 0.0, stamp)
            c.execute(self._usage, usage)
            reason = "all 3 verifiers accepted"
            audit = (stamp, ACTOR, "accept", key, "accept", POLICY.version, reason, details)
            c.execute(self._audit, audit)
            row = (f"offer:{customer.id}", "sent_offer", "sent", _json(candidate), stamp, stamp)
            if c.execute(self._row, row).rowcount != 1:
                raise BenchError(f"floor row offer:{customer.id} already exists")
            ledger = (key, run_id, NAME, "done", _json(result), stamp, stamp)
            if c.execute(self._commit, ledger).rowcount != 1:
                raise BenchError(f"floor commit key {key} already used")
            seq = int(c.execute(self._bump, (len(events),)).fetchall()[0][0]) - len(events)
            head = int(c.execute(self._head, (stream,)).fetchone()[0] or 0)
            for type, payload, version, hash, idem in events:
                seq, head = seq + 1, head + 1
                params = (seq, stream, head, type, payload, version, hash, None, idem, stamp)
                if c.execute(self._event, params).rowcount != 1:
                    raise BenchError(f"floor event key {idem} already used")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


# --- the same work without a database: what each side's own Python costs -----------------


class NoStore:
    """Just enough of a store for a first attempt: the stream is empty and every unit is
    applied, instantly, with nothing written. The boundary calls nothing else."""

    url = "none://"

    async def read_stream(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[Event]:
        return []

    async def apply(self, unit: UnitOfWork) -> Outcome:
        return Applied()


class NoConnection:
    """Answers the floor's statements as an empty database would, doing nothing."""

    rowcount = 1

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> NoConnection:
        if "RETURNING" in sql:  # the event counter, bumped by params[0]
            self._rows = [(params[0],)]
        else:  # the stream is empty, so is its head; no kill-switch scope is stopped
            self._rows = [] if sql.startswith(("SELECT seq", "SELECT scope")) else [(None,)]
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def close(self) -> None:
        pass


# --- one backend: a store and a floor on twin databases -----------------------------------


@dataclass(frozen=True, slots=True)
class Twin:
    backend: Backend
    store: SqlStore
    floor: Floor
    query: Callable[[str, str], tuple[Any, ...]]
    """``query("seamline" | "floor", sql)``: one row from that side's database, read through
    the bare driver (for the after-run comparison)."""


@asynccontextmanager
async def sqlite_twin(workdir: str | None) -> AsyncIterator[Twin]:
    folder = Path(tempfile.mkdtemp(prefix="seamline-bench-", dir=workdir))
    try:
        floor_path = folder / "floor.db"
        await open_store(f"sqlite:///{floor_path}").close()  # the same schema, migrated
        conn = sqlite3.connect(floor_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = FULL")
        floor = Floor(conn, begin="BEGIN IMMEDIATE", placeholder="?")
        store_path = folder / "seamline.db"
        store = open_store(f"sqlite:///{store_path}", busy_timeout_s=BUSY_TIMEOUT_S)

        def query(side: str, sql: str) -> tuple[Any, ...]:
            if side == "floor":
                return tuple(conn.execute(sql).fetchone())
            with sqlite3.connect(store_path, timeout=BUSY_TIMEOUT_S) as other:
                return tuple(other.execute(sql).fetchone())

        try:
            yield Twin("sqlite", store, floor, query)
        finally:
            await store.close()
            floor.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _schema_url(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


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
        conn = psycopg.connect(floor_url, autocommit=True)  # explicit BEGIN, as the store
        floor = Floor(
            conn, begin="BEGIN", placeholder="%s", lock="LOCK TABLE seamline_kills IN SHARE MODE"
        )
        store_url = _schema_url(base, store_schema)
        store = open_store(store_url, pool_size=PG_POOL_SIZE)

        def query(side: str, sql: str) -> tuple[Any, ...]:
            if side == "floor":
                return tuple(conn.execute(sql).fetchone() or ())
            with psycopg.connect(store_url, autocommit=True) as other:
                return tuple(other.execute(sql).fetchone() or ())

        try:
            yield Twin("postgresql", store, floor, query)
        finally:
            await store.close()
            floor.close()
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {store_schema} CASCADE")
            admin.execute(f"DROP SCHEMA {floor_schema} CASCADE")


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overhead:
    backend: Backend
    calls: int
    """Calls per side per timed repeat."""
    seamline_us: float
    floor_us: float
    bytes_per_call: float
    """JSON bytes each side wrote per call (event payloads, row data, result, details)."""
    seamline_samples: tuple[float, ...]
    floor_samples: tuple[float, ...]

    @property
    def ratio(self) -> float:
        """The median over repeats of each repeat's ratio: the two sides of one repeat ran
        interleaved on the same disk."""
        pairs = zip(self.seamline_samples, self.floor_samples, strict=True)
        return statistics.median(s / f for s, f in pairs)

    @property
    def passed(self) -> bool:
        return self.ratio <= OVERHEAD_TARGET


@dataclass(frozen=True, slots=True)
class InFlight:
    backend: Backend
    boundaries: int
    concurrency: int
    latency_ms: float
    wall_s: float
    sleep_only_s: float
    """The same workers doing only ``asyncio.sleep(latency)``: the event loop's own cost."""
    floor_loop_s: float
    """The floor's plain loop doing the same number of calls one after another, no latency."""
    cpu_us: float
    """CPU time of the whole process (all threads) per boundary, in the median-wall repeat."""
    wall_samples: tuple[float, ...]
    sleep_samples: tuple[float, ...]
    floor_samples: tuple[float, ...]
    cpu_samples: tuple[float, ...]

    @property
    def ideal_s(self) -> float:
        return math.ceil(self.boundaries / self.concurrency) * self.latency_ms / 1000

    @property
    def ratio(self) -> float:
        return self.wall_s / self.ideal_s

    @property
    def passed(self) -> bool:
        return self.ratio <= FLIGHT_TARGET


@dataclass(frozen=True, slots=True)
class NoDatabase:
    """µs per call of each side's own work, with the database taken away (CPU only)."""

    calls: int
    boundary_us: float
    """``Boundary.run`` on :class:`NoStore`: the model call, parse, verify, unit building."""
    floor_us: float
    """``Floor.call`` on :class:`NoConnection`: the plain loop's JSON, validation, checks."""
    model_us: float
    """The simulated model's ``complete()`` alone (part of ``boundary_us``)."""


@dataclass(frozen=True, slots=True)
class Results:
    no_database: NoDatabase
    overhead: list[Overhead]
    in_flight: list[InFlight]
    load_average: tuple[float, float, float]
    """The 1/5/15-minute load average when the run ended."""


# --- measuring ----------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Config:
    backends: tuple[Backend, ...]
    n: int
    repeats: int
    warmup: int
    chunk: int
    boundaries: int
    concurrency: int
    latency_ms: float
    flight_repeats: int
    pg_url: str
    workdir: str | None


def _ids(prefix: str) -> Iterator[Customer]:
    return (Customer(id=f"{prefix}{i:07d}") for i in itertools.count())


class Sequential:
    """Both sides of the per-call loop; each draws fresh customers, so fresh keys."""

    RUN_ID = "bench-seq"

    def __init__(self, store: Store, floor: Floor) -> None:
        self.boundary = offer_boundary(latency_ms=0)
        self.runtime = Runtime(store)
        self._floor = floor
        self._s_ids, self._f_ids = _ids("s"), _ids("f")

    async def seamline(self, k: int) -> None:
        b, rt, ids = self.boundary, self.runtime, self._s_ids
        for _ in range(k):
            result = await b.run(next(ids), runtime=rt, run_id=self.RUN_ID)
            if not isinstance(result, Committed):
                raise BenchError(f"boundary ended in {result!r}, expected Committed")

    def floor(self, k: int) -> None:
        floor, ids = self._floor, self._f_ids
        for _ in range(k):
            floor.call(next(ids), self.RUN_ID)


async def _repeat(seq: Sequential, n: int, chunk: int) -> tuple[float, float]:
    """One timed repeat: ``n`` calls per side, interleaved in ABBA chunks; µs per call."""
    gc.collect()
    spent = {"seamline": 0.0, "floor": 0.0}
    done = turn = 0
    while done < n:
        k = min(chunk, n - done)
        order = ("seamline", "floor") if turn % 2 == 0 else ("floor", "seamline")
        for side in order:
            start = time.perf_counter()
            if side == "seamline":
                await seq.seamline(k)
            else:
                seq.floor(k)
            spent[side] += time.perf_counter() - start
        done, turn = done + k, turn + 1
    return spent["seamline"] / n * 1e6, spent["floor"] / n * 1e6


_COMPARED = (  # (table, the JSON bytes it holds)
    ("seamline_events", "COALESCE(SUM(LENGTH(payload)), 0)"),
    ("seamline_rows", "COALESCE(SUM(LENGTH(data)), 0)"),
    ("seamline_commits", "COALESCE(SUM(LENGTH(result)), 0)"),
    ("seamline_audit", "COALESCE(SUM(LENGTH(details)), 0)"),
    ("seamline_usage", "0"),
)


def _compare(twin: Twin, calls: int) -> float:
    """Check that both databases hold the same rows and the same JSON bytes, table by table
    (customer ids have the same length on both sides); return JSON bytes per call."""
    found = {
        side: {t: twin.query(side, f"SELECT COUNT(*), {size} FROM {t}") for t, size in _COMPARED}
        for side in ("seamline", "floor")
    }
    if found["seamline"] != found["floor"]:
        raise BenchError(
            f"{twin.backend}: the floor no longer writes what seamline writes (rows, JSON "
            f"bytes): seamline {found['seamline']}, floor {found['floor']}; bring Floor.call "
            "in line with what the boundary's unit of work holds"
        )
    return sum(int(v[1]) for v in found["seamline"].values()) / calls


async def measure_no_database(cfg: Config, steps: Steps) -> NoDatabase:
    """Both sides' per-call work with no database: where the Python time goes."""
    # NoStore is a partial store (see there), hence the cast.
    seq = Sequential(cast(Store, NoStore()), Floor(NoConnection(), begin="BEGIN", placeholder="?"))
    calls = 4 * cfg.n  # no disk: cheap, so more calls for a steadier figure
    meta = {"boundary": NAME, "input": "m1", "attempt": "1"}
    request = ModelRequest(tuple(prompt(Customer(id="m1"))), SCHEMA, "Offer", metadata=meta)

    async def model(k: int) -> None:
        for _ in range(k):
            await seq.boundary.model.complete(request)

    async def per_call(work: Awaitable[None] | None) -> float:
        start = time.perf_counter()
        if work is None:
            seq.floor(calls)
        else:
            await work
        return (time.perf_counter() - start) / calls * 1e6

    steps.start("no database: warm-up")
    await seq.seamline(cfg.warmup)
    seq.floor(cfg.warmup)
    steps.done()
    b_us: list[float] = []
    f_us: list[float] = []
    m_us: list[float] = []
    for r in range(cfg.repeats):
        steps.start(f"no database: repeat {r + 1}/{cfg.repeats}")
        gc.collect()
        b_us.append(await per_call(seq.seamline(calls)))
        f_us.append(await per_call(None))
        m_us.append(await per_call(model(calls)))
        steps.done()
    return NoDatabase(
        calls, statistics.median(b_us), statistics.median(f_us), statistics.median(m_us)
    )


async def measure_overhead(twin: Twin, cfg: Config, steps: Steps) -> Overhead:
    seq = Sequential(twin.store, twin.floor)
    steps.start(f"{twin.backend}: per call, warm-up")
    await seq.seamline(cfg.warmup)
    seq.floor(cfg.warmup)
    steps.done()
    s_samples: list[float] = []
    f_samples: list[float] = []
    for r in range(cfg.repeats):
        steps.start(f"{twin.backend}: per call, repeat {r + 1}/{cfg.repeats}")
        s_us, f_us = await _repeat(seq, cfg.n, cfg.chunk)
        s_samples.append(s_us)
        f_samples.append(f_us)
        steps.done()
    per_call = _compare(twin, cfg.warmup + cfg.repeats * cfg.n)
    return Overhead(
        twin.backend,
        cfg.n,
        statistics.median(s_samples),
        statistics.median(f_samples),
        per_call,
        tuple(s_samples),
        tuple(f_samples),
    )


async def _workers(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, float]:
    """Run ``one(i)`` for i < count from ``concurrency`` workers; (wall s, process CPU s)."""
    todo = iter(range(count))  # the queue: each worker takes the next number

    async def worker() -> None:
        for i in todo:
            await one(i)

    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, time.process_time() - cpu


async def measure_in_flight(twin: Twin, cfg: Config, steps: Steps) -> InFlight:
    b = offer_boundary(latency_ms=cfg.latency_ms)
    rt = Runtime(twin.store)
    delay = cfg.latency_ms / 1000

    def batch(run_id: str) -> Callable[[int], Awaitable[None]]:
        async def one(i: int) -> None:
            customer = Customer(id=f"{run_id}.{i:07d}")  # fresh offer rows in every batch
            result = await b.run(customer, runtime=rt, run_id=run_id)
            if not isinstance(result, Committed):
                raise BenchError(f"boundary ended in {result!r}, expected Committed")

        return one

    async def sleep_only(i: int) -> None:
        await asyncio.sleep(delay)

    floor_ids = _ids("loop")

    def floor_loop() -> float:
        gc.collect()
        start = time.perf_counter()
        for _ in range(cfg.boundaries):
            twin.floor.call(next(floor_ids), "floor-loop")
        return time.perf_counter() - start

    label = f"{twin.backend}: {cfg.boundaries} in flight x{cfg.concurrency}"
    steps.start(f"{label}, warm-up")
    await _workers(min(cfg.boundaries, 2 * cfg.concurrency), cfg.concurrency, batch("warm"))
    steps.done()
    walls: list[float] = []
    cpus: list[float] = []
    sleeps: list[float] = []
    floors: list[float] = []
    for r in range(cfg.flight_repeats):
        steps.start(f"{label}, repeat {r + 1}/{cfg.flight_repeats}")
        # The three parts take turns going first, so none always follows another's garbage.
        for part in [*range(r % 3, 3), *range(r % 3)]:
            if part == 0:
                wall, cpu = await _workers(cfg.boundaries, cfg.concurrency, batch(f"flight-{r}"))
                walls.append(wall)
                cpus.append(cpu / cfg.boundaries * 1e6)
            elif part == 1:
                sleeps.append((await _workers(cfg.boundaries, cfg.concurrency, sleep_only))[0])
            else:
                floors.append(floor_loop())
        steps.done()
    middle = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
    return InFlight(
        twin.backend,
        cfg.boundaries,
        cfg.concurrency,
        cfg.latency_ms,
        walls[middle],
        statistics.median(sleeps),
        statistics.median(floors),
        cpus[middle],
        tuple(walls),
        tuple(sleeps),
        tuple(floors),
        tuple(cpus),
    )


async def run(cfg: Config, *, progress: Progress | None = None) -> Results:
    """Run both measurements on every configured backend, in order; return the results."""
    per_backend = (1 + cfg.repeats) + (1 + cfg.flight_repeats)
    steps = Steps(progress, (1 + cfg.repeats) + per_backend * len(cfg.backends))
    no_database = await measure_no_database(cfg, steps)
    overhead: list[Overhead] = []
    in_flight: list[InFlight] = []
    for backend in cfg.backends:
        twin_cm = sqlite_twin(cfg.workdir) if backend == "sqlite" else postgres_twin(cfg.pg_url)
        async with twin_cm as twin:
            overhead.append(await measure_overhead(twin, cfg, steps))
            in_flight.append(await measure_in_flight(twin, cfg, steps))
    return Results(no_database, overhead, in_flight, os.getloadavg())


# --- the command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python bench/boundary.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
One durable boundary (simulated model -> policy verifier + rule -> store commit):
  - per call, one at a time, against the floor: the same work as a plain-Python
    loop through the bare driver, one fsynced transaction per call
    (target: at most {OVERHEAD_TARGET}x the floor's time per call);
  - many in flight with a model that sleeps, against the ideal
    boundaries / concurrency x latency (target: at most {FLIGHT_TARGET}x).""",
        epilog="""\
reading the tables:
  gap µs         seamline's fixed cost per boundary over hand-written code doing
                 the same durable writes; the 'database taken away' table shows
                 how much of it is each side's own Python.
  sleep only     the same workers doing nothing but the sleep: the event loop's
                 own cost, the best any code can do.
  floor loop     the floor's writes for as many calls, back to back, with no
                 model at all: what one fsynced transaction per call costs here.
  CPU µs/bound.  process CPU (all threads) per boundary. Every model call takes
                 exactly the same time, so the workers move in waves; expect
                 wall ~ waves x (latency + concurrency x serial CPU per boundary).

See docs/performance.md for what each side does, statement by statement.""",
    )
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    per_call = p.add_argument_group("per call, one at a time (zero-latency model)")
    flight = p.add_argument_group("in flight (the model sleeps for real)")
    for group, flag, kind, default, text in (
        (per_call, "--n", int, 500, "calls per side per timed repeat"),
        (per_call, "--repeats", int, 5, "timed repeats; the median is shown"),
        (per_call, "--chunk", int, 50, "calls per side before the sides swap within a repeat"),
        (flight, "--boundaries", int, 1000, "boundaries per timed repeat"),
        (flight, "--concurrency", int, 100, "workers, so boundaries in flight"),
        (flight, "--latency-ms", float, 50.0, "the model's latency, exactly"),
        (flight, "--flight-repeats", int, 5, "timed repeats; the median is shown"),
    ):
        group.add_argument(flag, type=kind, default=default, help=f"{text} ({default:g})")
    per_call.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls per side first (default: n/5, at least 10)",
    )
    p.add_argument(
        "--pg",
        default=os.environ.get("SEAMLINE_BENCH_POSTGRES", DEFAULT_PG),
        metavar="URL",
        help="PostgreSQL server; the bench works in private schemas it drops afterwards "
        f"(default: $SEAMLINE_BENCH_POSTGRES or {DEFAULT_PG})",
    )
    p.add_argument(
        "--dir",
        default=None,
        metavar="PATH",
        help="folder for the SQLite files (default: the system temp folder)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress and no tables")
    return p


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    for name in ("n", "repeats", "chunk", "boundaries", "concurrency", "flight_repeats"):
        if getattr(args, name) < 1:
            flag = name.replace("_", "-")
            parser.error(f"--{flag} must be at least 1, got {getattr(args, name)}")
    if args.latency_ms <= 0:
        parser.error(f"--latency-ms must be positive, got {args.latency_ms}")
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
    return Config(
        backends,
        args.n,
        args.repeats,
        args.warmup if args.warmup is not None else max(10, args.n // 5),
        args.chunk,
        args.boundaries,
        args.concurrency,
        args.latency_ms,
        args.flight_repeats,
        args.pg,
        args.dir,
    )


def _verdict(passed: bool) -> str:
    return "[green]pass[/]" if passed else "[red]fail[/]"


def no_database_table(r: NoDatabase) -> Table:
    t = Table(
        title="the same work with the database taken away (CPU only)",
        caption=f"µs per call: median of the repeats, {r.calls} calls each; the store answers "
        "at once and writes nothing, the connection does nothing",
    )
    t.add_column("what")
    t.add_column("µs/call", justify="right")
    t.add_row("seamline: Boundary.run on a store that does nothing", f"{r.boundary_us:,.0f}")
    t.add_row("  of which the simulated model's complete()", f"{r.model_us:,.0f}")
    t.add_row("floor: the plain loop on a connection that does nothing", f"{r.floor_us:,.0f}")
    return t


def overhead_table(results: Sequence[Overhead], cfg: Config) -> Table:
    t = Table(
        title="one durable boundary vs. the same work in plain Python, one at a time",
        caption=f"µs per call: median of {cfg.repeats} repeats of --n {cfg.n} after "
        f"{cfg.warmup} warm-up calls; ratio = seamline / floor (median of the per-repeat "
        f"ratios); target <= {OVERHEAD_TARGET}x",
    )
    t.add_column("backend")
    t.add_column("seamline µs/call", justify="right")
    t.add_column("floor µs/call", justify="right")
    t.add_column("gap µs", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column(f"<= {OVERHEAD_TARGET}x")
    t.add_column("JSON bytes/call", justify="right")
    for r in results:
        t.add_row(
            r.backend,
            f"{r.seamline_us:,.0f}",
            f"{r.floor_us:,.0f}",
            f"{r.seamline_us - r.floor_us:,.0f}",
            f"{r.ratio:.2f}x",
            _verdict(r.passed),
            f"{r.bytes_per_call:,.0f}",
        )
    return t


def in_flight_table(results: Sequence[InFlight], cfg: Config) -> Table:
    t = Table(
        title=f"{cfg.boundaries} boundaries, {cfg.latency_ms:g} ms model latency, "
        f"{cfg.concurrency} in flight",
        caption=f"seconds: median of {cfg.flight_repeats} repeats; ratio = wall / ideal; "
        f"target <= {FLIGHT_TARGET}x. 'sleep only': the same workers doing only the sleep. "
        "'floor loop': the floor's plain loop doing as many calls one after another, with no "
        "model latency. CPU: the whole process's, per boundary, in the median repeat.",
    )
    t.add_column("backend")
    t.add_column("wall s", justify="right")
    t.add_column("ideal s", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column(f"<= {FLIGHT_TARGET}x")
    t.add_column("sleep only s", justify="right")
    t.add_column("floor loop s", justify="right")
    t.add_column("CPU µs/boundary", justify="right")
    t.add_column("boundaries/s", justify="right")
    for r in results:
        t.add_row(
            r.backend,
            f"{r.wall_s:.3f}",
            f"{r.ideal_s:.3f}",
            f"{r.ratio:.2f}x",
            _verdict(r.passed),
            f"{r.sleep_only_s:.3f}",
            f"{r.floor_loop_s:.3f}",
            f"{r.cpu_us:,.0f}",
            f"{r.boundaries / r.wall_s:,.0f}",
        )
    return t


def main(argv: Sequence[str] | None = None) -> Results:
    """Parse ``argv``, run the benchmark, print the tables (unless ``--quiet``), return them."""
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
        out.print(no_database_table(results.no_database))
        out.print(overhead_table(results.overhead, cfg))
        out.print(in_flight_table(results.in_flight, cfg))
        one, five, fifteen = results.load_average
        out.print(f"load average at the end: {one:.2f} {five:.2f} {fifteen:.2f}")
    if args.json:
        payload = {
            "config": asdict(cfg),
            "load_average": results.load_average,
            "no_database": asdict(results.no_database),
            "overhead": [
                {**asdict(r), "ratio": r.ratio, "passed": r.passed} for r in results.overhead
            ],
            "in_flight": [
                {**asdict(r), "ideal_s": r.ideal_s, "ratio": r.ratio, "passed": r.passed}
                for r in results.in_flight
            ],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
