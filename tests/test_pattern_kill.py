"""P6 kill switch: workflow moves, saga steps and boundary commits stop at a kill on ``run:``,
``kind:`` or ``all``, within a second, and nothing is left half-done.

The first test runs 1,000 ticking instances under a runner in a child process, in real time,
issues the kill from this process, and measures with ``time.monotonic`` how long the kill
takes to land; no move of the scope commits after it (below). Then it checks every move that
landed is whole (row version, ``transitioned`` event and ledger row together), that the refused
moves wrote nothing, and that
nothing of the scope landed after the kill in the log's commit order (the global event
sequence, which the store assigns under one lock, so it is the order commits became durable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from seamline.boundary import Committed, EffectCommit, Failed, Runtime
from seamline.clock import VirtualClock
from seamline.models import ScriptedModel
from seamline.patterns import (
    KillSwitch,
    Saga,
    SagaCompensated,
    SagaCompleted,
    SagaPreempted,
    SagaStep,
    SagaStepContext,
    compensation_key,
    kill_scopes,
    saga_step_key,
)
from seamline.store import Row, SqlStore, Store, UnitOfWork, open_store
from tests._offers import GOOD, Customer, Offer, offer_boundary
from tests._pattern_worker import TICKER, TICKS

ROOT = Path(__file__).resolve().parent.parent
OPS = {"ops": frozenset({"all"})}
INSTANCES = 1000


# --- 1,000 instances in another process, real time ------------------------------------------


@dataclass
class Watch:
    """Follows the ticker streams in the log; ``last_in_scope`` is when (monotonic) the latest
    move of the watched scope was first seen."""

    store: Store
    in_scope: Callable[[str], bool]
    seq: int = 0
    moves: int = 0
    moves_in_scope: int = 0
    last_any: float = 0.0
    last_in_scope: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)

    async def poll(self) -> None:
        while page := await self.store.read_events(
            after_seq=self.seq, limit=1000, stream_prefix="wf:ticker:"
        ):
            now = time.monotonic()
            for e in page:
                if e.type != "transitioned":
                    continue
                self.moves += 1
                self.last_any = now
                self.versions[e.stream] = e.payload["version"]
                if self.in_scope(e.stream):
                    self.moves_in_scope += 1
                    self.last_in_scope = now
            self.seq = page[-1].seq

    async def until(self, done: Callable[[], bool], *, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                await self.poll()
                await asyncio.sleep(0.01)


async def all_rows(store: Store, kind: str) -> list[Row]:
    rows: list[Row] = []
    while page := await store.list_rows(kind=kind, after_id=rows[-1].id if rows else "", limit=500):
        rows.extend(page)
    return rows


async def whole(store: Store, row: Row) -> None:
    """Every move of ``row`` has its event and its ledger row, the versions run without a gap,
    and the move the kill refused (the next version) left no ledger row behind."""
    events = [e for e in await store.read_stream(TICKER.stream(row.id)) if e.type == "transitioned"]
    assert [e.payload["version"] for e in events] == list(range(2, row.version + 1)), row
    for n, e in enumerate(events, start=1):
        if e.payload["to"] == "done":
            continue
        commit = await store.get_commit(f"{row.id}:tick:{e.payload['version']}")
        assert commit is not None and commit.status == "done", (row.id, e.payload)
        assert commit.result == {"n": n}
    assert await store.get_commit(f"{row.id}:tick:{row.version + 1}") is None, row


SCOPES = {"kind": "kind:ticker", "all": "all", "run": "run:t0421"}


@pytest.mark.slow
@pytest.mark.parametrize("scope", sorted(SCOPES))
async def test_kill_stops_a_thousand_running_instances_within_a_second(
    store_url: str, scope: str
) -> None:
    """A runner in a child process drives 1,000 instances in real time; a kill issued from
    this process stops the scope's moves within one real second (time.monotonic), the child's
    runner is refused for what is stopped while the rest goes on, every move that landed is
    whole, and none of the scope's moves committed after the kill."""
    target = SCOPES[scope]
    row_of = {"run": f"wf:ticker:{target.removeprefix('run:')}"}.get(scope)

    def in_scope(stream: str) -> bool:
        return row_of is None or stream == row_of

    # kind/all: only the kill can stop the work; run: the others finish their four ticks,
    # the target ticks on until the kill stops it
    def limit(i: int) -> int:
        return 4 if scope == "run" and f"run:t{i:04d}" != target else 10_000

    store = open_store(store_url)  # the real clock: the runner's timers are due now
    try:
        unit = UnitOfWork()
        for i in range(INSTANCES):
            TICKS.start(unit, f"t{i:04d}", {"limit": limit(i)}, datetime.now(UTC), actor="test")
        await store.apply(unit)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests._pattern_worker",
            "ticks",
            store_url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None and child.stderr is not None
        try:
            assert (await child.stdout.readline()).decode().strip() == "ready"
            watch = Watch(store, in_scope)
            if row_of is None:
                await watch.until(lambda: watch.moves >= 1500, timeout_s=60)
            else:  # the row is on its way: it has moved, and has ticks left
                await watch.until(lambda: watch.versions.get(row_of, 1) >= 2, timeout_s=60)
            assert time.monotonic() - watch.last_any < 0.5, "moves must be landing at the kill"

            started = time.monotonic()
            stopped = await KillSwitch(store, OPS).kill(target, principal="ops", reason="runaway")
            # Once the kill has committed, no move of the scope commits (checked below from
            # the event log's order), so the time to stop is the time the kill took to land.
            took = time.monotonic() - started
            assert stopped.kind == "stopped"
            assert took < 1.0, f"the kill of {target} took {took:.2f} s to land"
            with contextlib.suppress(TimeoutError):  # a runner that ignored the kill goes on
                await watch.until(lambda: child.returncode is not None, timeout_s=5)
            await watch.poll()
            out, err = await asyncio.wait_for(child.communicate(), 120)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, err.decode()
        counts = json.loads(out.decode().splitlines()[-1])["counts"]
        assert counts["killed"] >= 1, counts  # the runner tried the stopped steps: refused

        [kill_event] = [e for e in await store.read_stream("control:kill") if e.type == "kill"]
        late = [
            e
            for e in await store.read_events(
                after_seq=kill_event.seq, limit=100_000, stream_prefix="wf:ticker:"
            )
            if e.type == "transitioned" and in_scope(e.stream)
        ]
        # SQLite: the check runs under the database's one write lock. PostgreSQL: the check
        # holds a SHARE lock on the kills table that the kill's insert waits for. Either way a
        # move in flight when the kill came completes before it, and none lands after it.
        assert not late, f"{len(late)} moves of {target} committed after the kill"

        rows = await all_rows(store, "ticker")
        assert len(rows) == INSTANCES
        if scope == "run":
            [killed] = [r for r in rows if r.id == target.removeprefix("run:")]
            assert killed.state != "done" and killed.version >= 2
            assert all(r.state == "done" for r in rows if r is not killed)
        else:
            assert not any(r.state == "done" for r in rows)
        limiter = asyncio.Semaphore(8)

        async def check(row: Row) -> None:
            async with limiter:
                await whole(store, row)

        await asyncio.gather(*(check(r) for r in rows))
    finally:
        await store.close()


# --- sagas ----------------------------------------------------------------------------------


@dataclass
class Systems:
    """External systems that log each call; ``hold`` blocks a step until released."""

    calls: list[str] = field(default_factory=list)
    hold: dict[str, asyncio.Event] = field(default_factory=dict)
    entered: dict[str, asyncio.Event] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)

    def step(self, name: str) -> SagaStep:
        async def action(ctx: SagaStepContext) -> dict[str, str]:
            self.calls.append(f"do {name}")
            if name in self.hold:
                self.entered.setdefault(name, asyncio.Event()).set()
                await self.hold[name].wait()
            if name in self.fail:
                raise RuntimeError(f"{name} refused")
            return {"key": ctx.key}

        async def undo(ctx: object) -> None:
            self.calls.append(f"undo {name}")

        return SagaStep(name, action, undo)

    def saga(self) -> Saga:
        return Saga("plan-change", [self.step(n) for n in ("provision", "credit", "notify")])


@pytest.mark.parametrize("target", ["kind:plan-change", "run:pc-1", "all", "run:c1"])
async def test_saga_step_in_flight_completes_and_the_next_never_starts(
    store: SqlStore, clock: VirtualClock, target: str
) -> None:
    """A kill (on the saga's kind, its run, everything, or the workflow run it was started
    under) while a step is in flight: that step completes and is recorded, the next is never
    called, the run ends SagaPreempted with the kill; after the revive, resume finishes the
    saga with each step called once."""
    systems = Systems(hold={"provision": asyncio.Event()})
    saga = systems.saga()
    running = asyncio.create_task(
        saga.run("pc-1", {"customer": "c1"}, store=store, clock=clock, kill_scopes=["run:c1"])
    )
    await asyncio.wait_for(systems.entered.setdefault("provision", asyncio.Event()).wait(), 5)
    switch = KillSwitch(store, OPS)
    await switch.kill(target, principal="ops", reason="bad prompt release")
    systems.hold["provision"].set()
    result = await running

    assert isinstance(result, SagaPreempted) and result.killed is not None
    assert (result.killed.scope, result.killed.killed_by) == (target, "ops")
    assert systems.calls == ["do provision"]
    done = await store.get_commit(saga_step_key("pc-1", "provision"))
    assert done is not None and done.status == "done"  # the in-flight step is not half-done
    assert await store.get_commit(saga_step_key("pc-1", "credit")) is None
    row = await store.get_row("saga:pc-1")
    assert row is not None and row.state == "running"
    types = [e.type for e in await store.read_stream("saga:pc-1")]
    assert types[-2:] == ["step_done", "step_refused_killed"]
    again = await saga.resume("pc-1", store=store, clock=clock)  # still stopped: nothing runs
    assert isinstance(again, SagaPreempted) and again.killed is not None
    assert systems.calls == ["do provision"]

    await switch.revive(target, principal="ops", reason="fixed")
    finished = await saga.resume("pc-1", store=store, clock=clock)
    assert isinstance(finished, SagaCompleted)
    assert systems.calls == ["do provision", "do credit", "do notify"]


async def test_saga_compensations_still_run_after_a_kill(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A step that fails after its kind was stopped still sends the saga into compensation, and
    the compensations run despite the kill: a kill never leaves a saga half-committed."""
    systems = Systems(hold={"notify": asyncio.Event()}, fail={"notify"})
    saga = systems.saga()
    running = asyncio.create_task(saga.run("pc-2", {"customer": "c2"}, store=store, clock=clock))
    await asyncio.wait_for(systems.entered.setdefault("notify", asyncio.Event()).wait(), 5)
    await KillSwitch(store, OPS).kill("kind:plan-change", principal="ops", reason="stop")
    systems.hold["notify"].set()
    result = await running

    assert isinstance(result, SagaCompensated)
    assert result.compensated_steps == ("credit", "provision")
    assert systems.calls[-2:] == ["undo credit", "undo provision"]
    for step in ("credit", "provision"):
        undone = await store.get_commit(compensation_key("pc-2", step))
        assert undone is not None and undone.status == "done"


def test_kill_scopes_cover_parent_runs_and_refuse_malformed_scopes() -> None:
    """A sub-run ``a/b`` is stopped by ``run:a`` too; an extra scope must be well-formed."""
    assert kill_scopes("plan-change", "job/cut-1", "run:c1") == (
        "all",
        "kind:plan-change",
        "run:job",
        "run:job/cut-1",
        "run:c1",
    )
    with pytest.raises(Exception, match="not 'all'"):
        kill_scopes("plan-change", "pc-1", "c1")


# --- boundaries -----------------------------------------------------------------------------


def offer() -> str:
    return json.dumps({**GOOD, "customer": "c1"})


@pytest.mark.parametrize(
    ("target", "stopped"),
    [
        ("all", True),
        ("kind:offer", True),
        ("run:job", True),  # the parent of the boundary's sub-run
        ("run:job/c1", True),
        ("run:job/c2", False),
        ("kind:renewal", False),
    ],
)
async def test_boundary_commit_under_a_stopped_scope_ends_failed_killed(
    store: SqlStore, clock: VirtualClock, target: str, stopped: bool
) -> None:
    """A store commit checks the kill switch in its own transaction: under a stopped scope the
    boundary ends Failed('killed', retryable) with nothing accepted or committed, and after the
    revive the next run commits once. A kill elsewhere does not touch it."""
    rt = Runtime(store, clock)
    b = offer_boundary(ScriptedModel([offer()]))
    switch = KillSwitch(store, OPS)
    await switch.kill(target, principal="ops", reason="prompt regression")
    result = await b.run(Customer(id="c1"), runtime=rt, run_id="job/c1")
    if not stopped:
        assert isinstance(result, Committed)
        return
    assert isinstance(result, Failed) and result.reason_code == "killed" and result.retryable
    assert target in result.message and "ops" in result.message
    assert await store.get_commit(result.key) is None
    assert await store.list_rows(kind="sent_offer") == []
    types = [e.type for e in await store.read_stream(b.stream_for(result.key))]
    assert types == ["proposed", "failed"]  # the attempt is recorded, no accept, no commit
    run = await store.get_run(result.key)
    assert run is not None and (run.status, run.reason) == ("failed", "killed")

    await switch.revive(target, principal="ops", reason="fixed")
    after = await b.run(Customer(id="c1"), runtime=rt, run_id="job/c1")
    assert isinstance(after, Committed) and not after.replayed
    assert len(await store.list_rows(kind="sent_offer")) == 1


async def test_boundary_side_effect_never_starts_under_a_kill(
    store: SqlStore, clock: VirtualClock
) -> None:
    """An effect commit is refused at its outbox row, so the effect is never called; an
    effect left pending by an earlier failure is not called again while the run is stopped,
    and is performed once, with its recorded candidate and key, after the revive."""
    rt = Runtime(store, clock)
    sent: list[str] = []

    async def send(o: Offer, c: Customer, key: str) -> dict[str, int]:
        sent.append(key)
        if len(sent) == 1 and c.id == "c2":
            raise ConnectionError("mail server down")
        return {"n": len(sent)}

    b = offer_boundary(
        ScriptedModel([json.dumps({**GOOD, "customer": c}) for c in ("c1", "c2")]),
        commit=EffectCommit(send),
    )
    switch = KillSwitch(store, OPS)
    await switch.kill("run:r1", principal="ops", reason="stop r1")
    refused = await b.run(Customer(id="c1"), runtime=rt, run_id="r1")
    assert isinstance(refused, Failed) and refused.reason_code == "killed"
    assert sent == [] and await store.get_commit(refused.key) is None

    first = await b.run(Customer(id="c2"), runtime=rt, run_id="r2")
    assert isinstance(first, Failed) and first.reason_code == "effect_failed"
    await switch.kill("run:r2", principal="ops", reason="stop r2")
    held = await b.run(Customer(id="c2"), runtime=rt, run_id="r2")
    assert isinstance(held, Failed) and held.reason_code == "killed" and held.retryable
    assert sent == [first.key]  # not called again while stopped
    pending = await store.get_commit(first.key)
    assert pending is not None and pending.status == "pending"

    await switch.revive("run:r2", principal="ops", reason="mail is back")
    done = await b.run(Customer(id="c2"), runtime=rt, run_id="r2")
    assert isinstance(done, Committed) and sent == [first.key, first.key]
    settled = await store.get_commit(first.key)
    assert settled is not None and settled.status == "done"
