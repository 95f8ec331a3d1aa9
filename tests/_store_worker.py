"""A child process for tests/test_store_processes.py: one store client in an OS process of its own.

Run as ``python tests/_store_worker.py COMMAND STORE_URL ...``. Every command opens the store
first and only then starts its work, so connecting is never part of what races:

``cas``     prints ``ready``, waits for a line on stdin, then makes ``--transitions``
            compare-and-swap moves on randomly chosen rows (each with an event on the row's
            stream), retrying on a stale version; prints one JSON line saying which versions it
            won on which row and how many attempts went stale.
``commit``  prints ``ready``, waits for a line on stdin, then tries to own ``--key`` in the
            commit ledger (``--mode record``: one finished commit plus an event in the same
            unit; ``--mode intent``: an intent, then its completion in a second unit); prints
            one JSON line with what it got and the result it saw under the key.
``crash``   moves rows forever from ``--tasks`` concurrent tasks, each unit a transition, two
            events (one idempotent) and a commit-ledger entry, all naming the new version;
            prints ``started`` after its first unit is durable. Only SIGKILL ends it.

Anything unexpected ends the process with a non-zero status and a message on stderr; the
parent asserts on both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Callable
from typing import Any

from seamline.store import (
    Applied,
    CommitRecord,
    Duplicate,
    NotPending,
    SqlStore,
    StaleVersion,
    UnitOfWork,
    open_store,
)

MAX_ATTEMPTS = 100_000
"""Every stale attempt means another writer moved the row, so this is only hit by a bug."""

COMMIT_WAIT_S = 20.0


class WorkerFailure(Exception):
    """The store did something the test's invariants rule out."""


def _fail(message: str) -> WorkerFailure:
    return WorkerFailure(f"worker pid {os.getpid()}: {message}")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def move_unit(row_id: str, current: int, worker: str) -> UnitOfWork:
    """A transition of ``row_id`` off ``current`` and the event that records the new version."""
    new = current + 1
    return (
        UnitOfWork()
        .transition(row_id, expect_version=current, to=f"v{new}", data={"version": new})
        .append_event(row_id, "moved", {"version": new, "worker": worker})
    )


async def move_once(
    store: SqlStore, row_id: str, unit_for: Callable[[int], UnitOfWork]
) -> tuple[int, int]:
    """Move ``row_id`` one version on, re-reading it after each stale attempt.

    Returns the version won and how many attempts were stale.
    """
    for stale in range(MAX_ATTEMPTS):
        row = await store.get_row(row_id)
        if row is None:
            raise _fail(f"row {row_id!r} is missing")
        unit = unit_for(row.version)
        outcome = await store.apply(unit)
        if isinstance(outcome, StaleVersion):
            if outcome.row_id != row_id or outcome.expected != row.version:
                raise _fail(f"stale outcome names the wrong CAS: {outcome!r}")
            if outcome.actual is None or outcome.actual <= row.version:
                raise _fail(
                    f"row {row_id!r} went back or vanished: read {row.version}, {outcome!r}"
                )
            continue
        if not isinstance(outcome, Applied):
            raise _fail(f"expected Applied or StaleVersion for {row_id!r}, got {outcome!r}")
        if dict(outcome.versions) != {row_id: row.version + 1}:
            raise _fail(f"moved {row_id!r} off {row.version} but Applied says {outcome!r}")
        appended = sum(op.kind == "append_event" for op in unit.ops)
        if len(outcome.event_seqs) != appended:
            raise _fail(f"{appended} events appended but Applied says {outcome!r}")
        return row.version + 1, stale
    raise _fail(f"row {row_id!r} stayed stale for {MAX_ATTEMPTS} attempts")


async def run_cas(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    won: dict[str, list[int]] = {row_id: [] for row_id in args.rows}
    stale_total = 0
    for _ in range(args.transitions):
        row_id = rng.choice(args.rows)
        version, stale = await move_once(
            store, row_id, lambda v, r=row_id: move_unit(r, v, args.worker)
        )
        won[row_id].append(version)
        stale_total += stale
    return {"worker": args.worker, "won": won, "stale": stale_total}


def _commit_seen(outcome: Duplicate, key: str) -> CommitRecord:
    if outcome.what != "commit" or outcome.key != key:
        raise _fail(f"expected a Duplicate commit {key!r}, got {outcome!r}")
    if not isinstance(outcome.existing, CommitRecord) or outcome.existing.key != key:
        raise _fail(f"Duplicate for {key!r} does not carry the first commit: {outcome!r}")
    return outcome.existing


async def _wait_done(store: SqlStore, key: str) -> CommitRecord:
    """The winner completes its intent in a second unit; wait for that to land."""
    deadline = asyncio.get_running_loop().time() + COMMIT_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        record = await store.get_commit(key)
        if record is None:
            raise _fail(f"commit {key!r} vanished after a Duplicate named it")
        if record.status == "done":
            return record
        await asyncio.sleep(0.01)
    raise _fail(f"commit {key!r} still pending after {COMMIT_WAIT_S} s")


async def run_commit(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    mine = {"by": args.worker}
    if args.mode == "record":
        unit = UnitOfWork().record_commit(args.key, mine, run_id=args.worker, boundary="race")
        unit.append_event("winners", "committed", mine)
        outcome = await store.apply(unit)
        if isinstance(outcome, Applied):
            return {"worker": args.worker, "outcome": "applied", "status": "done", "seen": mine}
        if not isinstance(outcome, Duplicate):
            raise _fail(f"expected Applied or Duplicate for {args.key!r}, got {outcome!r}")
        existing = _commit_seen(outcome, args.key)
        return {
            "worker": args.worker,
            "outcome": "duplicate",
            "status": existing.status,
            "seen": existing.result,
        }

    outcome = await store.apply(UnitOfWork().commit_intent(args.key, run_id=args.worker))
    if isinstance(outcome, Applied):
        done = await store.apply(UnitOfWork().complete_commit(args.key, mine))
        if not isinstance(done, Applied):
            raise _fail(f"the winner could not complete its own intent {args.key!r}: {done!r}")
        return {"worker": args.worker, "outcome": "applied", "status": "done", "seen": mine}
    if not isinstance(outcome, Duplicate):
        raise _fail(f"expected Applied or Duplicate for intent {args.key!r}, got {outcome!r}")
    first = _commit_seen(outcome, args.key)
    record = await _wait_done(store, args.key)
    # A loser must not be able to overwrite the winner's result.
    late = await store.apply(UnitOfWork().complete_commit(args.key, mine))
    if not (isinstance(late, NotPending) and late.status == "done"):
        raise _fail(f"completing someone else's finished commit gave {late!r}, not NotPending")
    return {
        "worker": args.worker,
        "outcome": "duplicate",
        "status": first.status,
        "run_id": first.run_id,
        "seen": record.result,
    }


def crash_unit(row_id: str, current: int, worker: str) -> UnitOfWork:
    """A move whose ledger entry and idempotent event both name the version it moves to."""
    new = current + 1
    key = f"{row_id}@{new}"
    return (
        move_unit(row_id, current, worker)
        .append_event(f"{row_id}/log", "logged", {"version": new}, idempotency_key=key)
        .record_commit(key, {"version": new}, run_id=worker, boundary="crash")
    )


async def run_crash(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    started = asyncio.Event()

    async def mover(task: int) -> None:
        rng = random.Random(f"{args.seed}/{task}")
        name = f"{args.worker}/{task}"
        while True:
            row_id = rng.choice(args.rows)
            await move_once(store, row_id, lambda v, r=row_id: crash_unit(r, v, name))
            if not started.is_set():
                started.set()
                _say("started")

    async with asyncio.TaskGroup() as group:
        for task in range(args.tasks):
            group.create_task(mover(task))
    raise _fail("the movers stopped")  # pragma: no cover - they loop until killed


COMMANDS = {"cas": run_cas, "commit": run_commit, "crash": run_crash}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="_store_worker")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("url")
    parser.add_argument("--worker", default=str(os.getpid()))
    parser.add_argument("--rows", type=lambda text: text.split(","), default=[])
    parser.add_argument("--transitions", type=int, default=0)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--key", default="")
    parser.add_argument("--mode", choices=["record", "intent"], default="record")
    parser.add_argument("--seed", default="0")
    return parser.parse_args(argv)


async def _run(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    try:
        return await COMMANDS[args.command](store, args)
    finally:
        await store.close()


def main(argv: list[str]) -> int:
    args = parse(argv)
    # A small pool: six of these share one PostgreSQL server with the test itself.
    store = open_store(args.url, pool_size=max(2, args.tasks))
    if args.command != "crash":
        _say("ready")
        if sys.stdin.readline() != "go\n":
            raise _fail("the parent went away before saying go")
    report = asyncio.run(_run(store, args))
    _say(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
