"""The store's guarantees between real OS processes, on both backends.

Compare-and-swap, the commit ledger's unique key and the all-or-nothing unit are only worth
something if they hold when separate processes race each other and when a process dies
mid-write. Each test here starts children running ``tests/_store_worker.py`` against one store
(an SQLite file or a private PostgreSQL schema) and then checks, from the parent, what the
store holds. Children exit non-zero with a message on stderr when they see anything the
invariants rule out, and every test asserts on that too.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seamline.store import Event, SqlStore, UnitOfWork, open_store

WORKER = Path(__file__).with_name("_store_worker.py")
ROWS = ("r0", "r1", "r2")
PROCESSES = 6
TRANSITIONS_EACH = 25
KILLS = 15
STARTUP_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class Finished:
    """What a child left behind: its exit status, stdout lines and stderr text."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: tuple[str, ...]
    stderr: str

    def explain(self) -> str:
        return (
            f"worker {' '.join(self.argv)} exited {self.returncode}\n"
            f"stdout: {list(self.stdout)}\nstderr:\n{self.stderr}"
        )

    def report(self) -> dict[str, Any]:
        """The JSON line a worker prints last; the child must have exited 0 and said nothing
        on stderr."""
        assert self.returncode == 0, self.explain()
        assert self.stderr == "", self.explain()
        assert self.stdout, self.explain()
        report: dict[str, Any] = json.loads(self.stdout[-1])
        return report


async def spawn(*argv: str, stdin: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *argv,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, argv: Sequence[str]) -> Finished:
    out, err = await proc.communicate()
    return Finished(tuple(argv), proc.returncode, tuple(out.decode().splitlines()), err.decode())


@asynccontextmanager
async def reaped(procs: list[asyncio.subprocess.Process]) -> AsyncIterator[None]:
    """Kill (by pid) whichever of our children still runs when the block is left early."""
    try:
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()


async def run_together(argvs: Sequence[Sequence[str]]) -> list[Finished]:
    """Start one worker per argv, wait until all are ready, release them at once, and collect
    what each left behind."""
    procs: list[asyncio.subprocess.Process] = []
    async with reaped(procs):
        for argv in argvs:
            procs.append(await spawn(*argv, stdin=asyncio.subprocess.PIPE))
        for proc, argv in zip(procs, argvs, strict=True):
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT_S)
            if line != b"ready\n":
                pytest.fail((await finish(proc, argv)).explain())
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin is not None))
        async with asyncio.timeout(RUN_TIMEOUT_S):
            return list(
                await asyncio.gather(
                    *(finish(p, argv) for p, argv in zip(procs, argvs, strict=True))
                )
            )


async def create_rows(store: SqlStore, rows: Sequence[str]) -> None:
    unit = UnitOfWork()
    for row_id in rows:
        unit.create_row(row_id, kind="race", state="new")
    assert (await store.apply(unit)).kind == "applied"


async def whole_stream(store: SqlStore, stream: str) -> list[Event]:
    events: list[Event] = []
    while batch := await store.read_stream(stream, after=len(events)):
        events.extend(batch)
    return events


async def all_events(store: SqlStore) -> list[Event]:
    events: list[Event] = []
    while batch := await store.read_events(after_seq=events[-1].seq if events else 0):
        events.extend(batch)
    return events


async def assert_moves_recorded(store: SqlStore, row_id: str) -> int:
    """Each version 2..v of ``row_id`` has exactly one ``moved`` event, in order, on a gapless
    stream, and none names a version the row has not reached. Returns v."""
    row = await store.get_row(row_id)
    assert row is not None, f"row {row_id} is gone"
    events = await whole_stream(store, row_id)
    versions = [event.payload["version"] for event in events]
    assert versions == list(range(2, row.version + 1)), (
        f"row {row_id} is at version {row.version} but its stream records versions {versions}"
    )
    assert [event.stream_seq for event in events] == list(range(1, row.version))
    assert {event.type for event in events} <= {"moved"}
    if row.version > 1:
        assert (row.state, row.data) == (f"v{row.version}", {"version": row.version})
    return row.version


async def assert_global_log_gapless(store: SqlStore, expected_count: int) -> None:
    seqs = [event.seq for event in await all_events(store)]
    assert seqs == list(range(1, expected_count + 1)), (
        f"expected global seqs 1..{expected_count}, got {len(seqs)} events "
        f"(first gap or repeat among {seqs[:5]}...{seqs[-5:]})"
    )


@pytest.mark.slow
async def test_cas_race_between_processes_loses_no_update_and_no_version(store_url: str) -> None:
    """Six processes racing CAS moves on three rows: every move is won once, versions and
    stream positions stay gapless, and each version's event names the process that won it."""
    async with open_store(store_url) as store:
        await create_rows(store, ROWS)
    argvs = [
        (
            "cas",
            store_url,
            "--worker",
            f"w{n}",
            "--rows",
            ",".join(ROWS),
            "--transitions",
            str(TRANSITIONS_EACH),
            "--seed",
            f"cas/{n}",
        )
        for n in range(PROCESSES)
    ]
    reports = [finished.report() for finished in await run_together(argvs)]
    assert sum(report["stale"] for report in reports) > 0, (
        "no compare-and-swap ever went stale: the processes did not race"
    )

    won_by: dict[str, dict[int, str]] = {row_id: {} for row_id in ROWS}
    for report in reports:
        assert sum(len(versions) for versions in report["won"].values()) == TRANSITIONS_EACH
        for row_id, versions in report["won"].items():
            for version in versions:
                other = won_by[row_id].setdefault(version, report["worker"])
                assert other == report["worker"], (
                    f"{row_id} version {version} was won by both {other} and {report['worker']}"
                )
    async with open_store(store_url) as store:
        total_moves = 0
        for row_id in ROWS:
            final = await assert_moves_recorded(store, row_id)
            assert sorted(won_by[row_id]) == list(range(2, final + 1)), (
                f"{row_id} is at version {final} but the processes won {sorted(won_by[row_id])}"
            )
            events = await whole_stream(store, row_id)
            assert {e.payload["version"]: e.payload["worker"] for e in events} == won_by[row_id]
            total_moves += final - 1
        assert total_moves == PROCESSES * TRANSITIONS_EACH
        await assert_global_log_gapless(store, total_moves)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["record", "intent"])
async def test_commit_key_race_between_processes_has_one_winner_whose_result_all_see(
    store_url: str, mode: str
) -> None:
    """Six processes claiming one commit key: one is Applied, the rest get a Duplicate and all
    end up seeing the winner's result (record: the losers' whole units roll back; intent: a
    loser cannot complete the winner's commit)."""
    key = "charge-card:order-7"
    argvs = [
        ("commit", store_url, "--worker", f"w{n}", "--key", key, "--mode", mode)
        for n in range(PROCESSES)
    ]
    async with open_store(store_url):
        pass  # migrate once up front, so the race is over the key and not the schema
    reports = [finished.report() for finished in await run_together(argvs)]

    winners = [report for report in reports if report["outcome"] == "applied"]
    assert len(winners) == 1, f"expected exactly one winner, got {reports}"
    winner = winners[0]["worker"]
    assert sorted(report["outcome"] for report in reports) == ["applied"] + ["duplicate"] * (
        PROCESSES - 1
    )
    assert [report["seen"] for report in reports] == [{"by": winner}] * PROCESSES, reports
    if mode == "record":
        assert {report["status"] for report in reports} == {"done"}
    else:
        losers = [report for report in reports if report["outcome"] == "duplicate"]
        assert {report["run_id"] for report in losers} == {winner}, losers
    async with open_store(store_url) as store:
        record = await store.get_commit(key)
        assert record is not None
        assert (record.status, record.result, record.run_id) == ("done", {"by": winner}, winner)
        if mode == "record":
            events = await store.read_stream("winners")
            assert [event.payload for event in events] == [{"by": winner}], (
                "a loser's event survived although its unit met a Duplicate"
            )
        assert len(await all_events(store)) == (1 if mode == "record" else 0)


async def assert_crash_consistent(store: SqlStore, *, full_ledger: bool) -> int:
    """Every row's transitions, events and ledger entries agree; returns the moves made.

    Each unit moved a row to version n and, atomically with it, appended a ``moved`` event and
    an idempotent ``logged`` event and recorded commit ``row@n``, all naming n. A kill may
    only ever have dropped whole units.
    """
    total = 0
    for row_id in ROWS:
        version = await assert_moves_recorded(store, row_id)
        log = await whole_stream(store, f"{row_id}/log")
        assert [(e.payload["version"], e.idempotency_key) for e in log] == [
            (n, f"{row_id}@{n}") for n in range(2, version + 1)
        ], f"{row_id} is at version {version}; its log disagrees"
        assert await store.get_commit(f"{row_id}@{version + 1}") is None, (
            f"commit {row_id}@{version + 1} exists without its transition"
        )
        checked = range(2, version + 1) if full_ledger else range(max(2, version), version + 1)
        for n in checked:
            record = await store.get_commit(f"{row_id}@{n}")
            assert record is not None, f"{row_id} reached version {n} without its commit"
            assert (record.status, record.result) == ("done", {"version": n})
        total += version - 1
    await assert_global_log_gapless(store, 2 * total)
    return total


def tag_sessions(url: str, name: str) -> str:
    """``url`` with its PostgreSQL sessions named ``name`` (SQLite URLs are left alone)."""
    if not url.startswith("postgresql://"):
        return url
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


async def wait_for_sessions_to_end(url: str, name: str) -> None:
    """Wait until no PostgreSQL session named ``name`` is left.

    A client's death does not end its server session at once: a COMMIT it sent just before
    the kill can land after ``wait()`` has returned, so a reader that starts at once can watch
    a row move between two of its queries.
    """
    if not url.startswith("postgresql://"):
        return  # a dead SQLite writer's unfinished transaction is invisible at once
    import psycopg

    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        asyncio.timeout(STARTUP_TIMEOUT_S),
    ):
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            )
            found = await cur.fetchone()
            if found is not None and found[0] == 0:
                return
            await asyncio.sleep(0.01)


async def run_until_killed(argv: Sequence[str], rng: random.Random) -> Finished:
    """Start a ``crash`` worker, let it write for 0.05-0.5 s after its first unit, SIGKILL it."""
    procs = [await spawn(*argv, stdin=asyncio.subprocess.DEVNULL)]
    async with reaped(procs):
        proc = procs[0]
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT_S)
        if line != b"started\n":
            pytest.fail((await finish(proc, argv)).explain())
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        if proc.returncode is not None:
            pytest.fail((await finish(proc, argv)).explain())
        os.kill(proc.pid, signal.SIGKILL)
        return await finish(proc, argv)


@pytest.mark.slow
async def test_sigkilled_writer_leaves_every_transition_with_its_event_and_commit(
    store_url: str,
) -> None:
    """A writer SIGKILLed at random moments, 15 times: after each kill every row version has
    exactly its event, its log entry and its commit, and nothing records a version not reached."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    async with open_store(store_url) as store:
        await create_rows(store, ROWS)
        moves = 0
        for life in range(KILLS):
            sessions = f"seamline-crash-{seed}-{life}"
            argv = ["crash", tag_sessions(store_url, sessions), "--worker", f"life{life}"]
            argv += ["--rows", ",".join(ROWS), "--tasks", "3", "--seed", f"{seed}/{life}"]
            finished = await run_until_killed(argv, rng)
            assert finished.returncode == -signal.SIGKILL, finished.explain()
            assert finished.stderr == "", finished.explain()
            await wait_for_sessions_to_end(store_url, sessions)
            before, moves = moves, await assert_crash_consistent(store, full_ledger=False)
            assert moves > before, f"life {life} (seed {seed}) made no durable move"
        await assert_crash_consistent(store, full_ledger=True)
