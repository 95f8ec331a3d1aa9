"""P2 scatter-gather + saga, on SQLite and PostgreSQL.

The saga tests drive a plan change (provision, credit, notify) against an in-process stand-in
for the external systems that logs every raw call and applies each idempotency key's effect
once. The crash tests run the saga in a child process (``tests/_saga_worker.py``), SIGKILL it
at a marker during the steps or during compensation, resume it in a new process, and count
effects in a file that dedupes by key, and raw calls in another.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.patterns import (
    SAGA_TRANSITIONS,
    BranchFailed,
    BranchOk,
    CompensationContext,
    Parallel,
    Saga,
    SagaCompensated,
    SagaCompleted,
    SagaError,
    SagaNeedsHuman,
    SagaPreempted,
    SagaRecord,
    SagaStep,
    SagaStepContext,
    SagaStepRecord,
    compensation_key,
    plan_compensation,
    saga_step_key,
    saga_trace,
    scatter_gather,
)
from seamline.store import SqlStore, open_store
from tests._saga_worker import Receiver, build_saga, read_calls, read_sink
from tests.conftest import T0

ROOT = Path(__file__).resolve().parents[1]
INPUT = {"customer": "5575-GNVDE", "plan": "fiber-100"}


class Crash(BaseException):
    """Stands in for the process dying mid-call: nothing in the saga catches it."""


@dataclass
class Telco:
    """Stand-in provisioning, billing and messaging systems. ``calls`` logs every raw call;
    ``effects`` keeps the first call per idempotency key, as a real API would."""

    fail: set[str] = field(default_factory=set)
    undo_failures: dict[str, int] = field(default_factory=dict)
    crash_at: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    effects: dict[str, str] = field(default_factory=dict)
    seen: list[SagaStepContext | CompensationContext] = field(default_factory=list)

    def _call(self, what: str, key: str) -> dict[str, Any]:
        self.calls.append((what, key))
        self.effects.setdefault(key, what)
        if what in self.crash_at:
            self.crash_at.discard(what)
            raise Crash(what)
        return {"key": key}

    def step(self, name: str) -> SagaStep:
        async def action(ctx: SagaStepContext) -> dict[str, Any]:
            self.seen.append(ctx)
            if name in self.fail:
                self.calls.append((f"do {name}", ctx.key))
                raise RuntimeError(f"{name} service refused")
            return self._call(f"do {name}", ctx.key)

        async def compensate(ctx: CompensationContext) -> dict[str, Any]:
            self.seen.append(ctx)
            if self.undo_failures.get(name, 0) > 0:
                self.undo_failures[name] -= 1
                self.calls.append((f"undo {name}", ctx.key))
                raise ConnectionError(f"{name} rollback API answered 503")
            return self._call(f"undo {name}", ctx.key)

        return SagaStep(name, action, compensate)

    def saga(self, *names: str, **config: Any) -> Saga:
        config.setdefault("backoff_initial_s", 1.0)
        return Saga("plan-change", [self.step(n) for n in names or STEPS], **config)

    def raw(self, what: str) -> int:
        return sum(w == what for w, _ in self.calls)


STEPS = ("provision", "credit", "notify")


async def event_types(store: SqlStore, saga_id: str) -> list[tuple[str, str]]:
    events = await store.read_stream(f"saga:{saga_id}")
    return [(e.type, e.payload.get("step", "")) for e in events]


# --- the saga -------------------------------------------------------------------------------


async def test_third_step_failure_compensates_first_two_in_reverse_once(
    store: SqlStore, clock: VirtualClock
) -> None:
    """notify fails: credit then provision are undone, each exactly once; notify is not."""
    telco = Telco(fail={"notify"})
    saga = telco.saga()
    result = await saga.run("s1", INPUT, store=store, clock=clock)

    assert result == SagaCompensated(
        "s1",
        "notify",
        "step notify failed: RuntimeError: notify service refused",
        ("credit", "provision"),
    )
    assert [w for w, _ in telco.calls] == [
        "do provision",
        "do credit",
        "do notify",
        "undo credit",
        "undo provision",
    ]
    assert [c.key for c in telco.seen if isinstance(c, CompensationContext)] == [
        compensation_key("s1", "credit"),
        compensation_key("s1", "provision"),
    ]
    row = await store.get_row("saga:s1")
    assert row is not None and row.kind == "saga" and row.state == "compensated"
    record = row.data_as(SagaRecord)
    assert {n: s.status for n, s in record.steps.items()} == {
        "provision": "compensated",
        "credit": "compensated",
        "notify": "failed",
    }
    for name in ("provision", "credit"):
        for key in (saga_step_key("s1", name), compensation_key("s1", name)):
            commit = await store.get_commit(key)
            assert commit is not None and commit.status == "done", key
    failed = await store.get_commit(saga_step_key("s1", "notify"))
    assert failed is not None and failed.status == "done" and failed.result["ok"] is False
    assert await store.get_commit(compensation_key("s1", "notify")) is None
    assert await event_types(store, "s1") == [
        ("saga_started", ""),
        ("step_started", "provision"),
        ("step_done", "provision"),
        ("step_started", "credit"),
        ("step_done", "credit"),
        ("step_started", "notify"),
        ("step_failed", "notify"),
        ("saga_compensating", ""),
        ("compensation_started", "credit"),
        ("compensation_done", "credit"),
        ("compensation_started", "provision"),
        ("compensation_done", "provision"),
        ("saga_compensated", ""),
    ]

    trace = await saga_trace(store, "s1")
    assert len(trace) == 13 and trace[0].startswith("  1 saga_started")
    assert re.match(r"\s*10 compensation_done\s+credit\s+attempts=1", trace[9]), trace

    again = await saga.run("s1", INPUT, store=store, clock=clock)
    assert again == SagaCompensated(
        "s1", result.failed_step, result.reason, result.compensated_steps, replayed=True
    )
    assert len(telco.calls) == 5, "an ended saga did work again"


async def test_completed_saga_passes_results_forward_and_never_reruns(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Every step runs once, later steps see earlier results, and a rerun only replays."""
    telco = Telco()
    saga = telco.saga()
    result = await saga.run("ok", INPUT, store=store, clock=clock)
    assert isinstance(result, SagaCompleted) and not result.replayed
    assert result.results == {n: {"key": saga_step_key("ok", n)} for n in STEPS}
    notify = telco.seen[-1]
    assert isinstance(notify, SagaStepContext) and notify.input == INPUT
    assert set(notify.results) == {"provision", "credit"} and not notify.resumed
    assert (await store.get_row("saga:ok")).state == "completed"  # type: ignore[union-attr]
    again = await saga.resume("ok", store=store, clock=clock)
    assert isinstance(again, SagaCompleted) and again.replayed and again.results == result.results
    assert len(telco.calls) == 3


async def test_compensation_retries_with_backoff_then_succeeds(
    store: SqlStore, clock: VirtualClock
) -> None:
    """credit's rollback fails twice, is retried on the clock, succeeds; its effect lands once."""
    telco = Telco(fail={"notify"}, undo_failures={"credit": 2})
    saga = telco.saga(compensation_attempts=4, backoff_initial_s=2.0, backoff_max_s=60.0)
    result = await saga.run("retry", INPUT, store=store, clock=clock)

    assert isinstance(result, SagaCompensated)
    assert result.compensated_steps == ("credit", "provision")
    assert telco.raw("undo credit") == 3 and telco.raw("undo provision") == 1
    attempts = [c.attempt for c in telco.seen if isinstance(c, CompensationContext)]
    assert attempts == [1, 2, 3, 1]
    # Three raw calls, all under one key: the receiver applied it once, the ledger holds one result.
    assert {k for w, k in telco.calls if w == "undo credit"} == {
        compensation_key("retry", "credit")
    }
    commit = await store.get_commit(compensation_key("retry", "credit"))
    assert commit is not None and commit.status == "done" and commit.result["ok"] is True
    events = await store.read_stream("saga:retry")
    failures = [e.payload for e in events if e.type == "compensation_attempt_failed"]
    assert [(p["step"], p["attempt"]) for p in failures] == [("credit", 1), ("credit", 2)]
    assert "503" in failures[0]["error"]
    [done] = [
        e.payload for e in events if e.type == "compensation_done" and e.payload["step"] == "credit"
    ]
    assert done["attempts"] == 3
    # Exponential backoff on the virtual clock: about 2 s then 4 s, plus jitter up to 2 s each.
    waited = (clock.now() - T0).total_seconds()
    assert 6.0 <= waited <= 10.0, waited


async def test_compensation_that_keeps_failing_escalates_to_a_person(
    store: SqlStore, clock: VirtualClock
) -> None:
    """credit's rollback never works: provision is still undone, an escalation with the record,
    decision and options is opened, the saga rests in compensation_failed, the intent pending."""
    telco = Telco(fail={"notify"}, undo_failures={"credit": 99})
    saga = telco.saga(compensation_attempts=3)
    result = await saga.run("stuck", INPUT, store=store, clock=clock)

    assert isinstance(result, SagaNeedsHuman)
    assert result.failed_compensations == ("credit",)
    assert result.compensated_steps == ("provision",)
    assert result.failed_step == "notify"
    assert telco.raw("undo credit") == 3 and telco.raw("undo provision") == 1

    row = await store.get_row("saga:stuck")
    assert row is not None and row.state == "compensation_failed"
    assert row.data["approval_id"] == result.approval_id
    approval = await store.get_approval(result.approval_id)
    assert approval is not None and approval.kind == "escalation" and approval.status == "pending"
    assert approval.row_id == "saga:stuck" and "credit" in approval.reason
    request = approval.request
    assert request["undone"] == ["provision"]
    assert request["what_happened"].startswith("step notify failed")
    [not_undone] = request["not_undone"]
    assert not_undone["step"] == "credit" and "503" in not_undone["error"]
    assert not_undone["compensation_key"] == compensation_key("stuck", "credit")
    assert request["decision_needed"]
    assert len(request["options"]) == 3
    assert all(o["option"] and o["expected_impact"] for o in request["options"])
    # Nothing is silently left: the unfinished compensation is a visible pending intent.
    pending = await store.get_commit(compensation_key("stuck", "credit"))
    assert pending is not None and pending.status == "pending"
    audit = await store.audit_entries(subject="saga:stuck")
    assert [(a.action, a.decision) for a in audit] == [("escalate", "needs_human")]

    again = await saga.run("stuck", INPUT, store=store, clock=clock)
    assert isinstance(again, SagaNeedsHuman) and again.replayed
    assert telco.raw("undo credit") == 3, "a replay must not call compensations"


async def test_a_person_can_have_failed_compensations_retried(
    store: SqlStore, clock: VirtualClock
) -> None:
    """After an escalation, resume(retry_compensations=True) calls the failed compensation
    again with its same key, the saga ends compensated, and the escalation is settled as the
    person's answer (who, why) instead of staying pending."""
    telco = Telco(fail={"notify"}, undo_failures={"credit": 2})
    saga = telco.saga(compensation_attempts=2)
    first = await saga.run("later", INPUT, store=store, clock=clock)
    assert isinstance(first, SagaNeedsHuman)
    still = await saga.resume("later", store=store, clock=clock)
    assert isinstance(still, SagaNeedsHuman) and still.replayed  # nobody asked to retry yet
    with pytest.raises(ConfigError, match="principal"):
        await saga.resume("later", store=store, clock=clock, retry_compensations=True)

    result = await saga.resume(
        "later",
        store=store,
        clock=clock,
        retry_compensations=True,
        principal="alice",
        reason="billing rollback API is back",
    )
    assert isinstance(result, SagaCompensated) and not result.replayed
    assert result.compensated_steps == ("provision", "credit")
    keys = {key for what, key in telco.calls if what == "undo credit"}
    assert keys == {compensation_key("later", "credit")}
    assert telco.raw("undo provision") == 1
    commit = await store.get_commit(compensation_key("later", "credit"))
    assert commit is not None and commit.status == "done"
    [approval] = await store.list_approvals()
    assert approval.id == first.approval_id
    assert (approval.status, approval.decided_by) == ("approved", "alice")
    assert approval.decision == {"decision": "retry", "reason": "billing rollback API is back"}
    assert await store.list_approvals(status="pending") == []
    [*_, answer] = await store.audit_entries(subject=first.approval_id)
    assert (answer.actor, answer.action, answer.decision) == ("alice", "retry", "approved")


async def test_timed_out_step_counts_as_possibly_done_and_is_compensated(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A step that times out may have landed: it is compensated too, told its effect is unknown."""
    telco = Telco()

    async def slow(ctx: SagaStepContext) -> None:
        await asyncio.sleep(5)

    async def undo(ctx: CompensationContext) -> str:
        telco.seen.append(ctx)
        return "checked and reverted"

    steps = [telco.step("provision"), SagaStep("notify", slow, undo)]
    saga = Saga("plan-change", steps, step_timeout_s=0.05)
    result = await saga.run("slow", INPUT, store=store, clock=clock)
    assert isinstance(result, SagaCompensated)
    assert result.compensated_steps == ("notify", "provision")
    [ctx] = [c for c in telco.seen if isinstance(c, CompensationContext) and c.step == "notify"]
    assert ctx.effect == "unknown" and ctx.result is None


async def test_crash_mid_step_resumes_by_reperforming_with_the_same_key(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A step whose intent is pending is performed again with its key; done steps are not."""
    telco = Telco(crash_at={"do credit"})
    saga = telco.saga()
    with pytest.raises(Crash):
        await saga.run("crash", INPUT, store=store, clock=clock)
    pending = await store.get_commit(saga_step_key("crash", "credit"))
    assert pending is not None and pending.status == "pending"

    result = await saga.resume("crash", store=store, clock=clock)
    assert isinstance(result, SagaCompleted)
    assert [w for w, _ in telco.calls] == ["do provision", "do credit", "do credit", "do notify"]
    credit = [c for c in telco.seen if c.step == "credit"]
    assert [c.resumed for c in credit if isinstance(c, SagaStepContext)] == [False, True]
    assert len({c.key for c in credit}) == 1
    assert ("step_resumed", "credit") in await event_types(store, "crash")


async def test_crash_mid_compensation_resumes_compensation_not_the_steps(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A crash while undoing credit: resume calls that compensation again with its key, then
    undoes provision, and never performs a step again."""
    telco = Telco(fail={"notify"}, crash_at={"undo credit"})
    saga = telco.saga()
    with pytest.raises(Crash):
        await saga.run("undo-crash", INPUT, store=store, clock=clock)
    assert (await store.get_row("saga:undo-crash")).state == "compensating"  # type: ignore[union-attr]

    result = await saga.resume("undo-crash", store=store, clock=clock)
    assert isinstance(result, SagaCompensated)
    assert result.compensated_steps == ("credit", "provision")
    assert [w for w, _ in telco.calls] == [
        "do provision",
        "do credit",
        "do notify",
        "undo credit",
        "undo credit",
        "undo provision",
    ]
    types = await event_types(store, "undo-crash")
    assert types.count(("compensation_done", "credit")) == 1
    assert ("compensation_resumed", "credit") in types


async def test_step_left_started_by_a_crash_is_compensated_as_unknown(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A fan-out step dies in flight after its sibling failed: resume compensates it (told its
    effect is unknown) and settles its pending ledger entry; it is never performed again."""
    telco = Telco(fail={"port-a"})

    async def dies(ctx: SagaStepContext) -> None:
        telco.calls.append(("do port-b", ctx.key))
        await asyncio.sleep(0.2)  # port-a's failure is recorded meanwhile
        raise Crash("port-b")

    port_b = SagaStep("port-b", dies, telco.step("port-b").compensate)
    saga = Saga("bulk-port", [telco.step("provision"), Parallel((telco.step("port-a"), port_b))])
    with pytest.raises(BaseExceptionGroup):
        await saga.run("half", INPUT, store=store, clock=clock)
    assert (await store.get_row("saga:half")).state == "compensating"  # type: ignore[union-attr]

    result = await saga.resume("half", store=store, clock=clock)
    assert isinstance(result, SagaCompensated) and result.failed_step == "port-a"
    assert result.compensated_steps == ("port-b", "provision")
    assert telco.raw("do port-b") == 1
    [ctx] = [c for c in telco.seen if isinstance(c, CompensationContext) and c.step == "port-b"]
    assert ctx.effect == "unknown" and ctx.result is None
    settled = await store.get_commit(saga_step_key("half", "port-b"))
    assert settled is not None and settled.status == "done"
    assert settled.result == {
        "ok": None,
        "effect": "unknown",
        "undone_by": compensation_key("half", "port-b"),
    }


async def test_a_second_runner_preempts_the_first_and_effects_land_once(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Two runs of one saga id: the one whose row moved under it stops with SagaPreempted;
    the step both performed has one effect (same key) and the saga completes once."""
    telco = Telco()
    entered, release = asyncio.Event(), asyncio.Event()

    async def provision(ctx: SagaStepContext) -> dict[str, Any]:
        first = not entered.is_set()
        entered.set()
        if first:
            await release.wait()
        return telco._call("do provision", ctx.key)

    saga = Saga(
        "plan-change",
        [
            SagaStep("provision", provision, telco.step("provision").compensate),
            telco.step("credit"),
        ],
    )
    slow = asyncio.create_task(saga.run("race", INPUT, store=store, clock=clock))
    await entered.wait()
    fast = await saga.run("race", INPUT, store=store, clock=clock)
    release.set()
    preempted = await slow

    assert isinstance(fast, SagaCompleted)
    assert isinstance(preempted, SagaPreempted) and preempted.saga_id == "race"
    assert telco.raw("do provision") == 2
    assert list(telco.effects.values()).count("do provision") == 1
    types = await event_types(store, "race")
    assert types.count(("step_done", "provision")) == 1
    assert types.count(("saga_completed", "")) == 1


async def test_parallel_stage_is_bounded_and_compensates_what_was_done(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A fan-out stage runs at most max_concurrency steps at once; once one fails no further
    step starts, those in flight finish, and every step done is undone in reverse declared
    order, provision last."""
    telco = Telco(fail={"port-3"})
    in_flight = peak = 0

    def counted(step: SagaStep) -> SagaStep:
        async def action(ctx: SagaStepContext) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                if step.name != "port-3":  # it fails at once, while port-2 is still working
                    await asyncio.sleep(0.01)
                return await step.action(ctx)
            finally:
                in_flight -= 1

        return SagaStep(step.name, action, step.compensate)

    ports = tuple(counted(telco.step(f"port-{i}")) for i in range(6))
    saga = Saga(
        "bulk-port",
        [telco.step("provision"), Parallel(ports), telco.step("notify")],
        max_concurrency=2,
    )
    result = await saga.run("bulk", INPUT, store=store, clock=clock)

    assert peak == 2
    assert isinstance(result, SagaCompensated) and result.failed_step == "port-3"
    assert result.compensated_steps == ("port-2", "port-1", "port-0", "provision")
    assert telco.raw("do port-4") == telco.raw("do port-5") == telco.raw("do notify") == 0
    assert all(telco.raw(f"undo {n}") == 1 for n in result.compensated_steps)


# --- scatter-gather -------------------------------------------------------------------------


async def test_scatter_gather_respects_max_concurrency_and_types_every_branch() -> None:
    """24 branches with max_concurrency=4: never more than 4 in flight, results in input order,
    a raise and a timeout come back as BranchFailed values, nothing escapes."""
    in_flight = peak = 0

    def branch(i: int) -> Any:
        async def call() -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await asyncio.sleep(5 if i == 7 else 0.005)
                if i == 3:
                    raise ValueError("billing answered 500")
                return i * i
            finally:
                in_flight -= 1

        return call

    gathered = await scatter_gather(
        {f"b{i}": branch(i) for i in range(24)}, max_concurrency=4, timeout_s=0.1
    )
    assert peak == 4 and gathered.max_in_flight == 4
    assert [b.label for b in gathered.branches] == [f"b{i}" for i in range(24)]
    assert gathered.values == {f"b{i}": i * i for i in range(24) if i not in (3, 7)}
    failed = {f.label: f for f in gathered.failures}
    assert failed["b3"].error == "ValueError: billing answered 500" and not failed["b3"].timed_out
    assert failed["b7"].timed_out and isinstance(failed["b7"], BranchFailed)
    assert isinstance(gathered.branches[0], BranchOk) and gathered.branches[0].kind == "ok"


async def test_scatter_gather_of_nothing_and_bad_bounds() -> None:
    """An empty fan-out gathers nothing; out-of-range limits are ConfigErrors with the numbers."""
    empty = await scatter_gather({}, max_concurrency=3)
    assert empty.branches == () and empty.max_in_flight == 0
    with pytest.raises(ConfigError, match=r"max_concurrency .* got 0"):
        await scatter_gather({}, max_concurrency=0)
    with pytest.raises(ConfigError, match="timeout_s"):
        await scatter_gather({}, timeout_s=0)


# --- definitions, misuse, pure parts --------------------------------------------------------


async def test_saga_definition_and_misuse_are_refused(store: SqlStore, clock: VirtualClock) -> None:
    """Bad definitions raise ConfigError; another input, an unknown id or a changed definition
    raise SagaError saying what to do."""
    telco = Telco()
    with pytest.raises(ConfigError, match="unique"):
        Saga("x", [telco.step("a"), telco.step("a")])
    with pytest.raises(ConfigError, match="at least one step"):
        Saga("x", [telco.step("a"), Parallel(())])
    with pytest.raises(ConfigError, match="compensation_attempts"):
        Saga("x", [telco.step("a")], compensation_attempts=0)
    with pytest.raises(ConfigError, match="step name"):
        telco.step("has space")

    saga = telco.saga()
    await saga.run("once", INPUT, store=store, clock=clock)
    with pytest.raises(SagaError, match="another input"):
        await saga.run("once", {"customer": "someone else"}, store=store, clock=clock)
    with pytest.raises(SagaError, match="no saga 'missing'"):
        await saga.resume("missing", store=store, clock=clock)
    with pytest.raises(SagaError, match="definition it started with"):
        await telco.saga("provision", "credit").resume("once", store=store, clock=clock)


def test_compensation_plan_and_transitions_are_data() -> None:
    """The plan is a pure function of the record: done or unknown effects, not yet undone,
    last first; terminal states have no moves."""
    record = SagaRecord(
        "s",
        {},
        ("a", "b", "c", "d", "e"),
        {
            "a": SagaStepRecord("compensated", "done"),
            "b": SagaStepRecord("done", "done"),
            "c": SagaStepRecord("started", "unknown"),
            "d": SagaStepRecord("failed", "none"),
            "e": SagaStepRecord("pending", "none"),
        },
    )
    assert plan_compensation(record) == ("c", "b")
    assert SAGA_TRANSITIONS["completed"] == SAGA_TRANSITIONS["compensated"] == frozenset()
    assert "running" not in SAGA_TRANSITIONS["compensating"]


# --- crashes in real processes ----------------------------------------------------------------

STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Launch:
    returncode: int | None
    lines: tuple[str, ...]
    stderr: str

    def explain(self) -> str:
        return f"exit {self.returncode}; stdout {list(self.lines)}\nstderr:\n{self.stderr}"


async def launch(argv: list[str], pause_at: str | None) -> Launch:
    """Run the worker; SIGKILL it as soon as it prints ``pause_at``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests._saga_worker",
        *argv,
        *(["--pause-at", pause_at] if pause_at else []),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while raw := await proc.stdout.readline():
                lines.append(raw.decode().rstrip("\n"))
                if pause_at is not None and lines[-1] == pause_at:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            await proc.wait()
            stderr = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return Launch(proc.returncode, tuple(lines), stderr)


@dataclass(frozen=True)
class CrashCase:
    mode: str
    kills: tuple[str, ...]
    ending: str
    extra_calls: tuple[str, ...]


CRASH_CASES = {
    # during the steps: the effect landed, its completion was never recorded
    "step-delivered": CrashCase("ok", ("step:credit:delivered",), "completed", ("step:credit",)),
    # during the steps, then the saga fails and compensates what was done
    "step-called-then-fail": CrashCase(
        "fail", ("step:credit:called",), "compensated", ("step:credit",)
    ),
    # during compensation, twice: after credit's undo landed, then before provision's did
    "compensation-twice": CrashCase(
        "fail",
        ("compensate:credit:delivered", "compensate:provision:called"),
        "compensated",
        ("compensate:credit", "compensate:provision"),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CRASH_CASES))
async def test_sigkilled_saga_resumes_in_a_new_process_with_each_effect_once(
    store_url: str, tmp_path: Path, case: str
) -> None:
    """SIGKILL during the steps or during compensation, resume in a new process: every
    effect in the deduping sink exactly once, raw repeats only where a kill landed, the
    ending right, the ledger settled, and a further resume does nothing."""
    spec = CRASH_CASES[case]
    sink, saga_id = tmp_path / "sink.tsv", f"crash-{case}"
    base = ["--store", store_url, "--saga-id", saga_id, "--sink", str(sink), "--mode", spec.mode]
    for n, marker in enumerate(spec.kills):
        killed = await launch([*base, *(["--resume"] if n else [])], marker)
        assert killed.returncode == -signal.SIGKILL, killed.explain()
        assert killed.lines[0] == "ready" and killed.lines[-1] == marker, killed.explain()
    final = await launch([*base, "--resume"], None)
    assert final.returncode == 0 and final.stderr == "", final.explain()
    assert json.loads(final.lines[-1]) == {"kind": spec.ending, "replayed": False}

    steps = ["provision", "credit", "notify"]
    if spec.mode == "ok":
        effects = [("step", s) for s in steps]
    else:
        effects = [("step", "provision"), ("step", "credit")]
        effects += [("compensate", "credit"), ("compensate", "provision")]
    expected_keys = [
        saga_step_key(saga_id, s) if phase == "step" else compensation_key(saga_id, s)
        for phase, s in effects
    ]
    delivered = read_sink(sink)
    assert [(phase, s) for _, phase, s in delivered] == effects  # once each, in this order
    assert [key for key, _, _ in delivered] == expected_keys
    raw = Counter(read_calls(sink))
    expected_raw = Counter(expected_keys)
    if spec.mode == "fail":
        expected_raw[saga_step_key(saga_id, "notify")] += 1  # it failed: a call, no effect
    for extra in spec.extra_calls:
        phase, name = extra.split(":")
        expected_raw[
            saga_step_key(saga_id, name) if phase == "step" else compensation_key(saga_id, name)
        ] += 1
    assert raw == expected_raw

    store = open_store(store_url, clock=VirtualClock(T0))
    try:
        row = await store.get_row(f"saga:{saga_id}")
        assert row is not None and row.state == spec.ending
        for key in set(raw):
            commit = await store.get_commit(key)
            assert commit is not None and commit.status == "done", (key, commit)
        types = Counter(await event_types(store, saga_id))
        for phase, name in effects:
            done = "step_done" if phase == "step" else "compensation_done"
            assert types[(done, name)] == 1, (done, name, types)
        resumed = sum(n for (t, _), n in types.items() if t.endswith("_resumed"))
        assert resumed == len(spec.kills)

        # A further resume, here in the test's own process, replays without calling anything.
        again = await build_saga(Receiver(sink)).resume(saga_id, store=store)
        assert again.kind == spec.ending and getattr(again, "replayed", False)
        assert Counter(read_calls(sink)) == raw
    finally:
        await store.close()


@pytest.mark.slow
async def test_escalated_saga_is_retried_days_later_from_another_process(
    store_url: str, tmp_path: Path
) -> None:
    """credit's rollback keeps failing, so the saga escalates; this process closes the store;
    three days later a person's retry runs in a new process: the compensation is called again
    with its same key and lands once, the saga ends compensated, and the escalation is settled
    by that person at that time instead of staying pending."""
    sink, saga_id = tmp_path / "sink.tsv", "esc-later"
    clock = VirtualClock(T0)
    store = open_store(store_url, clock=clock)
    try:
        saga = build_saga(Receiver(sink, fail_step="notify", fail_undo="credit"))
        first = await saga.run(saga_id, {"customer": "7590-VHVEG"}, store=store, clock=clock)
        assert isinstance(first, SagaNeedsHuman) and first.failed_compensations == ("credit",)
        later = clock.now() + timedelta(days=3)
    finally:
        await store.close()
    undo_credit = compensation_key(saga_id, "credit")
    assert Counter(read_calls(sink))[undo_credit] == 5  # compensation_attempts, all failed

    base = ["--store", store_url, "--saga-id", saga_id, "--sink", str(sink), "--mode", "fail"]
    retried = await launch([*base, "--retry-as", "alice", "--at", later.isoformat()], None)
    assert retried.returncode == 0 and retried.stderr == "", retried.explain()
    assert json.loads(retried.lines[-1]) == {"kind": "compensated", "replayed": False}
    assert Counter(read_calls(sink))[undo_credit] == 6
    assert [(phase, step) for _, phase, step in read_sink(sink)] == [
        ("step", "provision"),
        ("step", "credit"),
        ("compensate", "provision"),
        ("compensate", "credit"),
    ]

    store = open_store(store_url, clock=VirtualClock(later))
    try:
        approval = await store.get_approval(first.approval_id)
        assert approval is not None
        assert (approval.status, approval.decided_by, approval.decided_at) == (
            "approved",
            "alice",
            later,
        )
        assert approval.decision["decision"] == "retry"
        assert await store.list_approvals(status="pending") == []
        row = await store.get_row(f"saga:{saga_id}")
        assert row is not None and row.state == "compensated"
        commit = await store.get_commit(undo_credit)
        assert commit is not None and commit.status == "done"
    finally:
        await store.close()


# --- the example ----------------------------------------------------------------------------


def test_example_runs_and_prints_the_compensation_trace() -> None:
    """examples/patterns/p2_saga.py runs: the confirmation fails, the credit (after one retry)
    and then the plan are undone, and the second change escalates to a person."""
    script = ROOT / "examples" / "patterns" / "p2_saga.py"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    trace = [line.split()[1:3] for line in out.splitlines() if re.match(r"\s*\d+ \w", line)]
    rows = [[word for word in row if "=" not in word] for row in trace]  # event, step
    first = rows[: rows.index(["saga_compensated"]) + 1]
    assert first[5:] == [
        ["step_started", "send_confirmation"],
        ["step_failed", "send_confirmation"],
        ["saga_compensating"],
        ["compensation_started", "credit_prorated"],
        ["compensation_attempt_failed", "credit_prorated"],
        ["compensation_done", "credit_prorated"],
        ["compensation_started", "provision_plan"],
        ["compensation_done", "provision_plan"],
        ["saga_compensated"],
    ], out
    assert "line is back on dsl-one-year; net balance change 0.00" in out
    assert "=== saga pc-2: SagaNeedsHuman" in out and "escalation esc:saga:pc-2:1 (pending)" in out
    assert re.search(r"options:\n  - retry the failed compensations", out), out


def test_doc_page_example_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    """The python block in docs/patterns/p2-saga.md runs and prints what its comments say."""
    page = (ROOT / "docs" / "patterns" / "p2-saga.md").read_text(encoding="utf-8")
    [code] = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    script = tmp_path / "p2_doc.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    expected = [line.split("  # ", 1)[1] for line in code.splitlines() if "print(" in line]
    assert done.stdout.splitlines() == expected


def test_a_preempted_saga_says_whether_the_kill_switch_or_a_runner_stopped_it() -> None:
    """Workloads report ``SagaPreempted.why``: a kill names the scope, who and why, and that
    revival resumes it; otherwise it names the versions another runner moved."""
    from seamline.patterns import SagaPreempted
    from seamline.store import Killed

    killed = SagaPreempted("s1", 3, 3, Killed("kind:billing", "alice", "bad credits"))
    assert "kill switch on kind:billing (alice: bad credits)" in killed.why
    assert "revived" in killed.why
    moved = SagaPreempted("s1", 3, 4)
    assert "another runner" in moved.why and "version 4, expected 3" in moved.why
