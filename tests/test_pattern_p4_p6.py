"""P4 supervisor + gate and P6 human in the loop: audited gate decisions, supervised restarts,
the kill switch, approvals under an SLA, and throttles shared across processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest

from seamline.boundary import PolicyVerifier, parse_policy
from seamline.budget import Budget
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.patterns import (
    ApprovalDecided,
    ControlConfig,
    Gate,
    GateAllow,
    GateDeny,
    Goto,
    KillSwitch,
    NotAuthorised,
    Runner,
    Sleep,
    StateMachine,
    StepContext,
    Stopped,
    Supervisor,
    Throttle,
    ThrottlePolicy,
    Workflow,
    approval_answer,
    decide_approval,
    expire_overdue,
    request_approval,
)
from seamline.store import NotPending, SqlStore, UnitOfWork, open_store
from tests._workflows import RENEWAL, WORKFLOW
from tests.conftest import T0

ROOT = Path(__file__).resolve().parent.parent

POLICY = PolicyVerifier(
    parse_policy(
        {
            "policy": "outreach",
            "version": "2026.11.2",
            "rules": [
                {"id": "discount.hard_cap", "field": "discount", "max": "0.30"},
                {"id": "discount.review", "field": "discount", "warn_above": "0.20"},
            ],
        }
    )
)


def gate(**kw: object) -> Gate:
    return Gate(
        "outreach", roles={"send_offer": frozenset({"agent", "alice"})}, policy=POLICY, **kw
    )  # type: ignore[arg-type]


# --- P4: the gate --------------------------------------------------------------------------


async def test_gate_allows_and_audits_with_the_side_effect(
    store: SqlStore, clock: VirtualClock
) -> None:
    """An allowed action is audited in the same unit as its side effect, flags included."""
    inputs = {"discount": Decimal("0.25")}
    decision = await gate().check(
        store, action="send_offer", principal="agent", subject="c1", inputs=inputs, now=clock.now()
    )
    assert isinstance(decision, GateAllow)
    assert decision.flags == ("discount.review:above:0.20",)
    assert await store.audit_entries() == []  # nothing audited until the effect commits
    unit = gate().allow_into(
        UnitOfWork().record_commit("c1:offer", {"sent": True}), decision, inputs
    )
    await store.apply(unit)
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.decision, entry.policy_version) == (
        "gate:outreach",
        "allow",
        "2026.11.2",
    )
    assert entry.details["principal"] == "agent"


@pytest.mark.parametrize(
    ("principal", "inputs", "gate_kind", "rule"),
    [
        ("mallory", {"discount": Decimal("0.1")}, "role", "role:send_offer"),
        ("agent", {"discount": Decimal("0.9")}, "policy", "discount.hard_cap"),
    ],
)
async def test_gate_denies_are_typed_and_audited(
    store: SqlStore,
    clock: VirtualClock,
    principal: str,
    inputs: dict[str, Decimal],
    gate_kind: str,
    rule: str,
) -> None:
    """A role or policy deny names the gate and rule and is audited with the inputs."""
    decision = await gate().check(
        store,
        action="send_offer",
        principal=principal,
        subject="c1",
        inputs=inputs,
        now=clock.now(),
    )
    assert isinstance(decision, GateDeny)
    assert (decision.gate, decision.rule) == (gate_kind, rule)
    [entry] = await store.audit_entries()
    assert entry.decision == "deny" and entry.details["principal"] == principal
    assert entry.details["rule"] == rule and entry.policy_version == "2026.11.2"


async def test_hallucinated_discount_is_denied_before_any_budget_read(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Deny is cheap: a policy deny never reaches the budget check (a store read)."""

    reads: list[str] = []
    real = store.usage_totals

    async def counting(run_id: str, *, include_children: bool = False) -> object:
        reads.append(run_id)
        return await real(run_id, include_children=include_children)

    store.usage_totals = counting  # type: ignore[method-assign]
    g = gate(budget=Budget("run", max_tokens=10))
    denied = await g.check(
        store,
        action="send_offer",
        principal="agent",
        subject="c1",
        inputs={"discount": Decimal("0.9")},
        now=clock.now(),
    )
    assert isinstance(denied, GateDeny) and reads == []
    allowed = await g.check(
        store,
        action="send_offer",
        principal="agent",
        subject="c1",
        inputs={"discount": Decimal("0.1")},
        now=clock.now(),
    )
    assert isinstance(allowed, GateAllow) and reads == ["run"]


async def test_budget_gate_denies_when_the_run_is_spent(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A run at its cap (spent by a sub-run) is denied by the budget gate, and the deny is
    audited at once with the policy version, the principal, the inputs and the reason."""
    await store.apply(
        UnitOfWork().record_usage(
            run_id="run/sub",
            model="m",
            prompt_tokens=10,
            completion_tokens=0,
            cost=Decimal(0),
            latency_ms=1,
        )
    )
    denied = await gate(budget=Budget("run", max_tokens=10)).check(
        store,
        action="send_offer",
        principal="agent",
        subject="c1",
        inputs={"discount": Decimal("0.1")},
        now=clock.now(),
    )
    assert isinstance(denied, GateDeny) and (denied.gate, denied.rule) == ("budget", "budget.cap")
    [entry] = await store.audit_entries(subject="c1")
    assert (entry.actor, entry.action, entry.decision) == ("gate:outreach", "send_offer", "deny")
    assert entry.policy_version == "2026.11.2"
    assert entry.reason == denied.reason and "100%" in entry.reason and "run" in entry.reason
    assert entry.details == {
        "principal": "agent",
        "inputs": {"discount": "0.1"},
        "gate": "budget",
        "rule": "budget.cap",
        "flags": [],
    }


# --- P4: the supervisor --------------------------------------------------------------------


async def test_supervisor_restarts_with_backoff_then_escalates(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A worker that keeps crashing is restarted after 1, 2, 4 s, then escalated, not looped."""
    starts = []

    async def worker() -> None:
        starts.append(clock.now())
        raise RuntimeError("lost connection to billing")

    sup = Supervisor(store, clock=clock, max_restarts=3, window=timedelta(minutes=10))
    result = await sup.supervise("billing-sync", worker)
    assert (result.outcome, result.restarts) == ("escalated", 3)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == [timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=4)]
    approval = await store.get_approval(result.approval_id or "")
    assert approval is not None and "lost connection" in approval.reason


async def test_supervisor_lets_a_recovered_worker_finish(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A worker that crashes once and then finishes ends 'finished' after one restart."""
    runs = []

    async def worker() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("blip")

    result = await Supervisor(store, clock=clock).supervise("w", worker)
    assert (result.outcome, result.restarts) == ("finished", 1)


# --- P6: the kill switch -------------------------------------------------------------------


async def test_only_authorised_principals_may_kill(store: SqlStore) -> None:
    """An unauthorised kill is refused and audited; an authorised one stops the scope."""
    switch = KillSwitch(store, {"alice": frozenset({"all"}), "bob": frozenset({"kind:*"})})
    denied = await switch.kill("all", principal="bob", reason="oops")
    assert isinstance(denied, NotAuthorised)
    assert await store.kills() == []
    assert isinstance(
        await switch.kill("kind:renewal", principal="bob", reason="bad model"), Stopped
    )
    assert [k[0] for k in await store.kills()] == ["kind:renewal"]
    assert [(e.actor, e.decision) for e in await store.audit_entries()] == [
        ("bob", "deny"),
        ("bob", "allow"),
    ]
    with pytest.raises(ConfigError, match="kill scope"):
        await switch.kill("renewal", principal="alice", reason="x")


# The kill switch's reach (workflow moves, saga steps, boundary commits) and its speed, with a
# runner in another process and real time, are pinned in tests/test_pattern_kill.py.


# --- P6: escalation ------------------------------------------------------------------------


@pytest.mark.slow
async def test_escalated_instance_is_resumed_days_later_by_another_process(
    store_url: str,
) -> None:
    """A step keeps failing and the instance escalates; this process closes the store; three
    days later (virtual time) a person resumes it from a new process, which re-enters the
    failed state (not the start), drives the instance to its end, and settles the escalation
    with who decided and when."""
    clock = VirtualClock(T0)
    store = open_store(store_url, clock=clock)
    try:

        async def billing_down(ctx: StepContext) -> Goto:
            raise ConnectionError("billing system down")

        broken = Workflow(RENEWAL, handlers={"open": billing_down})
        await store.apply(WORKFLOW.start(UnitOfWork(), "c1", {}, clock.now(), actor="intake"))
        report = await Runner(store, [broken], clock=clock).run_until_idle()
        assert report.counts == {"retried": 2, "escalated": 1}
        [escalation] = await store.list_approvals(status="pending")
        assert (escalation.kind, escalation.row_id) == ("escalation", "c1")
        later = clock.now() + timedelta(days=3)
    finally:
        await store.close()

    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests._pattern_worker", "resume", store_url, "c1"),
        *("--at", later.isoformat(), "--name", "alice"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0, err.decode()
    result = json.loads(out.decode().splitlines()[-1])
    assert result["resumed"] and result["state"] in ("renewed", "churned"), result

    store = open_store(store_url, clock=VirtualClock(later))
    try:
        settled = await store.get_approval(escalation.id)
        assert settled is not None
        assert (settled.status, settled.decided_by, settled.decided_at) == (
            "approved",
            "alice",
            later,
        )
        assert settled.decision == {"decision": "resume", "reason": "billing is back up; go on"}
        assert await store.list_approvals(status="pending") == []
        [answer] = await store.audit_entries(subject=escalation.id)
        assert (answer.actor, answer.action, answer.decision) == ("alice", "resume", "approved")
        events = await store.read_stream(RENEWAL.stream("c1"))
        types = [e.type for e in events]
        resumed = types.index("resumed")
        assert (
            events[resumed].payload["state"] == "open" and events[resumed].payload["by"] == "alice"
        )
        moved = events[resumed + 1]
        assert (moved.type, moved.payload["from"], moved.payload["version"]) == (
            "transitioned",
            "open",
            2,
        )
        offer = await store.get_commit("c1:offer")
        assert offer is not None and offer.status == "done"
    finally:
        await store.close()


# --- P6: approvals -------------------------------------------------------------------------


async def test_approval_times_out_to_the_fallback(store: SqlStore, clock: VirtualClock) -> None:
    """Nobody decides within the SLA: the approval expires with the default-deny fallback,
    audited as decided by the SLA; a late decision is refused."""
    await request_approval(
        store,
        id="a1",
        reason="discount 25% above auto-approve",
        request={"discount": "0.25"},
        requested_by="agent",
        now=clock.now(),
        sla=timedelta(hours=24),
    )
    clock.advance(timedelta(hours=23))
    assert await expire_overdue(store, clock.now()) == []
    clock.advance(timedelta(hours=2))
    [_expired] = await expire_overdue(store, clock.now())
    approval = await store.get_approval("a1")
    assert approval is not None and approval.status == "expired"
    assert approval.decision == {"decision": "deny", "reason": "SLA passed"}
    [entry] = await store.audit_entries(subject="a1")
    assert (entry.actor, entry.decision) == ("sla", "deny")
    late = await decide_approval(
        store, "a1", principal="alice", decision="approve", reason="sorry, was away"
    )
    assert isinstance(late, NotPending)


APPROVAL = StateMachine(
    kind="discount",
    initial="drafted",
    transitions={
        "drafted": frozenset({"asked"}),
        "asked": frozenset({"offer_sent", "no_offer"}),
    },
    terminal=frozenset({"offer_sent", "no_offer"}),
)


def approval_workflow(store: SqlStore, fallback: Literal["deny", "approve"]) -> Workflow:
    async def draft(ctx: StepContext) -> Goto:
        await request_approval(
            store,
            id=f"disc:{ctx.row.id}",
            reason="discount 25% above the auto-approve line",
            request={"discount": "0.25"},
            requested_by="agent",
            now=ctx.now,
            sla=timedelta(hours=24),
            fallback=fallback,
            row_id=ctx.row.id,
        )
        return Goto("asked")

    async def asked(ctx: StepContext) -> Goto | Sleep:
        answer = await approval_answer(store, f"disc:{ctx.row.id}", ctx.now)
        if answer.granted is None:
            assert answer.due_at is not None
            return Sleep(answer.due_at, "waiting for a person")
        return Goto("offer_sent" if answer.granted else "no_offer", {"answer": answer.status})

    return Workflow(APPROVAL, handlers={"drafted": draft, "asked": asked})


@pytest.mark.parametrize(("fallback", "path"), [("deny", "no_offer"), ("approve", "offer_sent")])
async def test_instance_waiting_on_an_approval_takes_the_fallback_when_the_sla_passes(
    store: SqlStore, clock: VirtualClock, fallback: Literal["deny", "approve"], path: str
) -> None:
    """Nobody answers: the waiting instance wakes at the SLA, the fallback is applied (audited
    as decided by the SLA) and the instance takes the fallback's path, with no sweeper."""
    workflow = approval_workflow(store, fallback)
    await store.apply(workflow.start(UnitOfWork(), "c1", {}, clock.now(), actor="test"))
    report = await Runner(store, [workflow], clock=clock).run_until_idle()

    row = await store.get_row("c1")
    assert row is not None and (row.state, row.data["answer"]) == (path, "expired")
    assert clock.now() == T0 + timedelta(hours=24)
    assert report.counts == {"moved": 2, "slept": 1}
    approval = await store.get_approval("disc:c1")
    assert approval is not None and approval.status == "expired"
    [entry] = await store.audit_entries(subject="disc:c1")
    assert (entry.actor, entry.decision) == ("sla", fallback)


async def test_instance_waiting_on_an_approval_follows_the_person_who_answered(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A rejection inside the SLA sends the waiting instance down the no-offer path, however
    the fallback is declared: a person's answer beats the fallback."""
    workflow = approval_workflow(store, "approve")
    await store.apply(workflow.start(UnitOfWork(), "c1", {}, clock.now(), actor="test"))
    runner = Runner(store, [workflow], clock=clock)
    await runner.step()  # drafted -> asked; the approval is open
    await decide_approval(store, "disc:c1", principal="alice", decision="reject", reason="merger")
    await runner.run_until_idle()
    row = await store.get_row("c1")
    assert row is not None and (row.state, row.data["answer"]) == ("no_offer", "rejected")


async def test_people_approve_reject_or_edit_with_a_reason(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Each decision records who and why; edits carry the edited values; non-approvers are
    refused."""
    for n in range(3):
        await request_approval(
            store,
            id=f"a{n}",
            reason="r",
            request={},
            requested_by="agent",
            now=clock.now(),
            sla=timedelta(days=2),
        )
    approvers = frozenset({"alice"})
    refused = await decide_approval(
        store, "a0", principal="eve", decision="approve", reason="lgtm", approvers=approvers
    )
    assert isinstance(refused, NotAuthorised)
    assert await decide_approval(
        store,
        "a0",
        principal="alice",
        decision="approve",
        reason="within policy",
        approvers=approvers,
    ) == ApprovalDecided("a0", "approved", "alice")
    await decide_approval(store, "a1", principal="alice", decision="reject", reason="merger")
    await decide_approval(
        store,
        "a2",
        principal="alice",
        decision="edit",
        reason="too high",
        edited={"discount": "0.15"},
    )
    edited = await store.get_approval("a2")
    assert edited is not None and edited.decision["edited"] == {"discount": "0.15"}
    with pytest.raises(ConfigError, match="reason"):
        await decide_approval(store, "a1", principal="alice", decision="approve", reason=" ")


# --- P6: throttles -------------------------------------------------------------------------


async def test_tightest_cap_wins_and_a_refusal_takes_nothing(
    store: SqlStore, clock: VirtualClock
) -> None:
    """With a per-tenant-hour cap tighter than the per-minute one, the tenant cap refuses;
    the money-per-day cap refuses an expensive unit without using up the others."""
    throttle = Throttle(
        "mail", ThrottlePolicy(per_minute=8, per_tenant_per_hour=3, money_per_day=Decimal("100"))
    )

    async def send(tenant: str, money: str = "0") -> str:
        unit = throttle.take_into(
            UnitOfWork(), now=clock.now(), tenant=tenant, money=Decimal(money)
        )
        return (await store.apply(unit)).kind

    assert [await send("acme") for _ in range(4)] == ["applied"] * 3 + ["throttled"]
    assert await send("globex", "150") == "throttled"  # money cap; per-minute untouched
    assert [await send("globex") for _ in range(3)] == ["applied"] * 3
    assert [await send("initech") for _ in range(2)] == ["applied", "applied"]
    assert await send("initech") == "throttled"  # the per-minute cap (8) is now the tightest
    clock.advance(timedelta(minutes=1))
    assert await send("initech") == "applied"


@pytest.mark.slow
def test_throttle_shared_by_two_processes_is_never_exceeded(store_url: str) -> None:
    """Two processes racing for the same per-minute cap of 25 send exactly 25 in all."""
    import asyncio

    from seamline.store import open_store

    asyncio.run(open_store(store_url).close())  # migrate before the race
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests._pattern_worker", "throttle", store_url, "40"],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
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
        results.append(json.loads(out.splitlines()[-1]))
    assert sum(r["sent"] for r in results) == 25
    assert sum(r["refused"] for r in results) == 80 - 25


def test_control_config_builds_throttles_and_kill_rights() -> None:
    """The control file's throttles and kill-switch principals are read and checked."""
    config = ControlConfig.model_validate(
        {
            "kill_switch": {"alice": ["all"]},
            "approvers": ["alice"],
            "throttles": {"outreach": {"per_minute": 60, "money_per_day": "5000"}},
        }
    )
    throttle = config.throttle("outreach")
    assert throttle.policy == ThrottlePolicy(per_minute=60, money_per_day=Decimal("5000"))
    assert config.kill_authorised() == {"alice": frozenset({"all"})}
    bad = ControlConfig.model_validate({"throttles": {"x": {"per_fortnight": 1}}})
    with pytest.raises(ConfigError, match="per_fortnight"):
        bad.throttle("x")


def test_example_shows_an_escalation_resumed_days_later() -> None:
    """examples/patterns/p6_human.py escalates a failing step with the record a person needs,
    and a person resumes it three days later, which settles the escalation."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "patterns" / "p6_human.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "escalation esc:port-0412:" in out and "donor carrier API answered 503" in out
    assert "decision needed: what to do with port-0412, suspended at 'requested'" in out
    assert "  - resume: the 'requested' step runs again from this state" in out
    assert "day 3: bob resumed port-0412 -> ported; escalation approved by bob" in out
