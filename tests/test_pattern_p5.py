"""P5 shared state machine: the table, CAS moves with their events, timers at a version, the
runner, failure policies, and the boundary whose verifier is the table."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from seamline.boundary import Boundary, Committed, Failed, Runtime, StoreCommit
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.models import Message, ScriptedModel
from seamline.patterns import (
    Goto,
    Moved,
    Runner,
    StateMachine,
    StepContext,
    TransitionProposal,
    TransitionRejected,
    Workflow,
    apply_transition,
    resume,
)
from seamline.store import Row, SqlStore, UnitOfWork
from tests._kill import kill_at_progress
from tests._workflows import RENEWAL, WORKFLOW

ROOT = Path(__file__).resolve().parent.parent


def proposal(source: str, target: str, version: int, **patch: object) -> TransitionProposal:
    return TransitionProposal.model_validate(
        {"from": source, "to": target, "if_version": version, "patch": patch}
    )


async def start(store: SqlStore, clock: VirtualClock, *ids: str) -> None:
    unit = UnitOfWork()
    for row_id in ids:
        WORKFLOW.start(unit, row_id, {"customer": row_id}, clock.now(), actor="test")
    await store.apply(unit)


# --- the table -----------------------------------------------------------------------------


def test_malformed_tables_are_refused() -> None:
    """Unknown targets, moves out of a terminal state and guards on missing moves are errors."""
    with pytest.raises(ConfigError, match="neither sources nor terminal"):
        StateMachine("k", "a", {"a": frozenset({"b"})})
    with pytest.raises(ConfigError, match="terminal state 'b' has moves out"):
        StateMachine(
            "k", "a", {"a": frozenset({"b"}), "b": frozenset({"a"})}, terminal=frozenset({"b"})
        )
    with pytest.raises(ConfigError, match="not an allowed transition"):
        StateMachine("k", "a", {"a": frozenset()}, guards={("a", "z"): lambda d, p: True})
    with pytest.raises(ConfigError, match="initial state"):
        StateMachine("k", "x", {"a": frozenset()})


@pytest.mark.parametrize(
    ("state", "version", "prop", "code"),
    [
        ("open", 1, proposal("open", "renewed", 1), "illegal_transition"),
        ("open", 1, proposal("open", "nowhere", 1), "unknown_state"),
        ("open", 2, proposal("open", "offered", 1), "stale_version"),
        ("offered", 1, proposal("open", "offered", 1), "wrong_source"),
        ("open", 1, proposal("open", "offered", 1, discount=0.9), "guard_failed"),
        ("renewed", 1, proposal("renewed", "open", 1), "terminal_state"),
    ],
)
def test_check_rejects_with_a_typed_reason(
    state: str, version: int, prop: TransitionProposal, code: str
) -> None:
    """Each kind of bad proposal is a typed reject; checking is a pure function."""
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = Row("r", "renewal", state, version, "{}", now, now)
    rejected = RENEWAL.check(row, prop)
    assert isinstance(rejected, TransitionRejected) and rejected.reason_code == code
    assert (
        RENEWAL.check(
            Row("r", "renewal", "open", 1, "{}", now, now),
            proposal("open", "offered", 1, discount=0.1),
        )
        is None
    )


# --- moves ---------------------------------------------------------------------------------


async def test_move_and_its_event_land_together(store: SqlStore, clock: VirtualClock) -> None:
    """A legal proposal moves the row by CAS and appends its event in the same transaction."""
    await start(store, clock, "c1")
    moved = await apply_transition(
        store, RENEWAL, "c1", proposal("open", "offered", 1, discount=0.1), actor="alice"
    )
    assert moved == Moved("c1", "open", "offered", 2)
    row = await store.get_row("c1")
    assert row is not None and row.data == {"customer": "c1", "discount": 0.1}
    events = await store.read_stream(RENEWAL.stream("c1"))
    assert [(e.type, e.payload.get("version")) for e in events] == [
        ("created", 1),
        ("transitioned", 2),
    ]
    assert events[1].payload["actor"] == "alice"


async def test_stale_proposal_is_rejected_and_changes_nothing(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A second proposal at the old version is a retryable stale reject; nothing moves."""
    await start(store, clock, "c1")
    await apply_transition(store, RENEWAL, "c1", proposal("open", "offered", 1), actor="a")
    late = await apply_transition(store, RENEWAL, "c1", proposal("open", "expired", 1), actor="b")
    assert isinstance(late, TransitionRejected)
    assert (late.reason_code, late.retryable) == ("stale_version", True)
    row = await store.get_row("c1")
    assert row is not None and (row.state, row.version) == ("offered", 2)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._pattern_worker", *args],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
async def test_cas_race_between_processes_has_one_winner(
    store_url: str, store: SqlStore, clock: VirtualClock
) -> None:
    """Six processes propose the same move on one row: exactly one wins; every loser gets a
    typed stale reject and, re-reading, sees the winner's move."""
    await start(store, clock, "c1")
    procs = [_spawn("race", store_url, "c1", "--name", f"p{i}") for i in range(6)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    winners = [r for r in results if r["won"]]
    losers = [r for r in results if not r["won"]]
    assert len(winners) == 1 and winners[0]["version"] == 2
    row = await store.get_row("c1")
    assert row is not None and row.version == 2
    for r in losers:
        assert (r["reason"], r["retryable"], r["reread_version"]) == ("stale_version", True, 2)
        assert r["reread_by"] == row.data["by"]


# --- timers and the runner -----------------------------------------------------------------


async def test_runner_drives_instances_to_terminal_states(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Twenty instances run their 37 days in virtual time; each offer commits exactly once."""
    ids = [f"c{i:02d}" for i in range(20)]
    await start(store, clock, *ids)
    report = await Runner(store, [WORKFLOW], clock=clock).run_until_idle()
    rows = {r.id: r for r in await store.list_rows(kind="renewal")}
    assert {r.state for r in rows.values()} <= {"renewed", "churned"}
    assert report.counts["moved"] == 20 * 3
    assert clock.now() - (rows["c00"].created_at) == timedelta(days=37)
    for row_id in ids:
        offer = await store.get_commit(f"{row_id}:offer")
        assert offer is not None and offer.status == "done"
        renewal = await store.get_commit(f"{row_id}:renewal")
        assert (renewal is not None) == (rows[row_id].state == "renewed")


async def test_timer_after_a_manual_override_is_a_recorded_noop(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A person expires the offer by hand; the day-30 timer then fires as a recorded no-op."""
    await start(store, clock, "c1")
    runner = Runner(store, [WORKFLOW], clock=clock)
    await runner.step()  # open -> offered, schedules the offered step for day 30
    row = await store.get_row("c1")
    assert row is not None and row.state == "offered"
    await apply_transition(
        store, RENEWAL, "c1", proposal("offered", "expired", row.version), actor="alice"
    )
    clock.advance(timedelta(days=30))
    report = await runner.step()
    assert report.counts == {"noop": 1}
    row = await store.get_row("c1")
    assert row is not None and row.state == "expired"
    noop = [e for e in await store.read_stream(RENEWAL.stream("c1")) if e.type == "timer_noop"]
    assert noop[0].payload == {
        "timer": "step:offered",
        "scheduled_at_version": 2,
        "row_version": 3,
        "state": "expired",
    }


def _failing(state_handlers: dict[str, object]) -> Workflow:
    return Workflow(RENEWAL, handlers=state_handlers)  # type: ignore[arg-type]


async def test_failing_step_retries_with_backoff_then_escalates(
    store: SqlStore, clock: VirtualClock
) -> None:
    """The open step fails three times an hour apart and more, then a person is asked;
    resuming re-enters the failed state, not the start, and settles the escalation."""
    calls: list[object] = []

    async def flaky(ctx: StepContext) -> Goto:
        calls.append(ctx.now)
        if len(calls) <= 3:
            raise ConnectionError("billing system down")
        return Goto("offered", {"discount": 0.1})

    wf = _failing({"open": flaky})
    await start(store, clock, "c1")
    report = await Runner(store, [wf], clock=clock).run_until_idle()
    assert report.counts == {"retried": 2, "escalated": 1}
    assert [t - calls[0] for t in calls] == [  # type: ignore[operator]
        timedelta(0),
        timedelta(hours=1),
        timedelta(hours=3),
    ]
    [approval] = await store.list_approvals(status="pending")
    assert approval.request["state"] == "open" and "billing system down" in approval.reason
    assert {o["option"] for o in approval.request["options"]} == {"resume", "move", "abandon"}
    assert await resume(store, wf, "c1", clock.now(), principal="alice", reason="billing is up")
    report = await Runner(store, [wf], clock=clock).run_until_idle()
    row = await store.get_row("c1")
    assert row is not None and row.state == "offered" and report.counts["moved"] == 1
    settled = await store.get_approval(approval.id)
    assert settled is not None and (settled.status, settled.decided_by) == ("approved", "alice")


async def test_dead_lettered_step_parks_the_instance(store: SqlStore, clock: VirtualClock) -> None:
    """A step whose state dead-letters failures parks the instance there with an event."""

    async def broken(ctx: StepContext) -> Goto:
        raise KeyError("plan")

    await start(store, clock, "c1")
    await store.apply(
        RENEWAL.add_transition(
            UnitOfWork(),
            (await store.get_row("c1")),  # type: ignore[arg-type]
            proposal("open", "offered", 1),
            actor="t",
        )
    )
    row = await store.get_row("c1")
    assert row is not None
    await store.apply(
        RENEWAL.add_transition(UnitOfWork(), row, proposal("offered", "accepted", 2), actor="t")
    )
    wf = _failing({"accepted": broken})
    unit = UnitOfWork()
    wf.schedule_entry(unit, "c1", "accepted", 3, clock.now())
    await store.apply(unit)
    report = await Runner(store, [wf], clock=clock).run_until_idle()
    assert report.counts == {"noop": 1, "dead_lettered": 1}  # the v1 timer had been overtaken
    types = [e.type for e in await store.read_stream(RENEWAL.stream("c1"))]
    assert types[-2:] == ["step_failed", "dead_lettered"]


# --- the boundary proposes moves -----------------------------------------------------------


async def test_model_proposes_moves_through_a_boundary(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A model's illegal move is rejected by the table and the corrected one is committed by
    CAS with its event."""
    await start(store, clock, "c1")
    current: dict[str, Row | None] = {}

    def commit(p: TransitionProposal, row_id: str, unit: UnitOfWork) -> dict[str, object]:
        row = current["row"]
        assert row is not None
        RENEWAL.add_transition(unit, row, p, actor="model")
        return {"to": p.target, "version": row.version + 1}

    model = ScriptedModel(
        [
            '{"from": "open", "to": "renewed", "if_version": 1}',
            '{"from": "open", "to": "offered", "if_version": 1, "patch": {"discount": 0.1}}',
        ]
    )
    b = Boundary(
        "move",
        model=model,
        prompt=lambda r: [Message("user", f"move {r}")],
        output=TransitionProposal,
        verifiers=[RENEWAL.verifier(lambda ctx: current["row"])],
        commit=StoreCommit(commit),
    )
    current["row"] = await store.get_row("c1")
    result = await b.run("c1", runtime=Runtime(store, clock), run_id="r")
    assert isinstance(result, Committed)
    assert result.attempts[0].rejects[0].reason_code == "illegal_transition"
    row = await store.get_row("c1")
    assert row is not None and (row.state, row.version) == ("offered", 2)
    # the same move proposed against a row that moved since is a commit conflict, not a move
    stale = await b.run("c1", runtime=Runtime(store, clock), run_id="r2")
    assert isinstance(stale, Failed)


# --- crash and resume ----------------------------------------------------------------------


@pytest.mark.slow
async def test_runner_killed_mid_run_resumes_without_doing_a_step_twice(
    store_url: str, store: SqlStore, clock: VirtualClock
) -> None:
    """A runner process SIGKILLed again and again, then restarted, finishes every instance;
    each step's commit and each version's event exist exactly once."""
    ids = [f"c{i:03d}" for i in range(150)]
    await start(store, clock, *ids)
    rng = random.Random(7)

    async def events_so_far() -> int:
        return len(await store.read_events(limit=100_000))

    kills = 0
    for n in range(6):
        p = _spawn("run", store_url, "--name", f"r{n}")
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        target = await events_so_far() + rng.randint(3, 30)
        if not await kill_at_progress(p, events_so_far, target):
            break  # it finished everything: the final run below finds nothing to do
        kills += 1
    final = _spawn("run", store_url, "--name", "final")
    _out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert kills == 6, f"only {kills} kills landed before the work ran out"
    rows = await store.list_rows(kind="renewal", limit=1000)
    assert len(rows) == 150 and {r.state for r in rows} <= {"renewed", "churned"}
    for row in rows:
        events = [
            e
            for e in await store.read_stream(RENEWAL.stream(row.id))
            if e.type in ("created", "transitioned")
        ]
        assert [e.payload["version"] for e in events] == list(range(1, row.version + 1))
        assert (await store.get_commit(f"{row.id}:offer")) is not None
        renewal = await store.get_commit(f"{row.id}:renewal")
        assert (renewal is not None) == (row.state == "renewed")
    counts = Counter(r.state for r in rows)
    assert counts["renewed"] + counts["churned"] == 150


async def test_outside_move_schedules_the_next_step(store: SqlStore, clock: VirtualClock) -> None:
    """A person's move through Workflow.move also schedules the new state's step, atomically."""
    await start(store, clock, "c1")
    moved = await WORKFLOW.move(store, "c1", "offered", actor="alice", now=clock.now())
    assert isinstance(moved, Moved) and moved.version == 2
    timer = await store.get_timer("c1:v2:offered:1")
    assert timer is not None and timer.due_at == clock.now() + timedelta(days=30)
    refused = await WORKFLOW.move(store, "c1", "renewed", actor="alice", now=clock.now())
    assert isinstance(refused, TransitionRejected)
    assert refused.reason_code == "illegal_transition"


async def test_runners_of_different_workflows_share_a_store(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A runner claims only its own kinds' timers: another workflow's timers stay pending."""
    other = StateMachine(
        "porting", "requested", {"requested": frozenset({"done"})}, terminal=frozenset({"done"})
    )

    async def finish(ctx: StepContext) -> Goto:
        return Goto("done")

    porting = Workflow(other, handlers={"requested": finish})
    unit = UnitOfWork()
    porting.start(unit, "p1", {}, clock.now(), actor="t")
    await store.apply(unit)
    await start(store, clock, "c1")
    report = await Runner(store, [WORKFLOW], clock=clock).step()
    assert report.counts == {"moved": 1}
    assert [t.row_id for t in await store.due_timers(clock.now())] == ["p1"]
    assert (await Runner(store, [porting], clock=clock).step()).counts == {"moved": 1}
