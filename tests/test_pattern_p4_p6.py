"""P4 supervisor + gate and P6 human in the loop: audited gate decisions, supervised restarts,
the kill switch, approvals under an SLA, and throttles shared across processes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

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
    KillSwitch,
    NotAuthorised,
    Runner,
    Stopped,
    Supervisor,
    Throttle,
    ThrottlePolicy,
    decide_approval,
    expire_overdue,
    request_approval,
)
from seamline.store import Applied, NotPending, SqlStore, Throttled, UnitOfWork
from tests._workflows import RENEWAL, WORKFLOW

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
    """A run at its cap is denied by the budget gate."""
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
    assert isinstance(denied, GateDeny) and denied.gate == "budget"


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


async def test_kill_switch_stops_a_thousand_instances_at_the_next_commit(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Killing the kind mid-run stops all 1,000 instances within the next runner step (well
    under a second of virtual time); every commit that happened has its event and transition."""
    unit = UnitOfWork()
    for i in range(1000):
        WORKFLOW.start(unit, f"c{i:04d}", {}, clock.now(), actor="test")
    await store.apply(unit)
    runner = Runner(store, [WORKFLOW], clock=clock, batch=300)
    await runner.step()  # 300 instances move to offered
    killed_at = clock.now()
    await KillSwitch(store, {"alice": frozenset({"all"})}).kill(
        "kind:renewal", principal="alice", reason="runaway discounts"
    )
    report = await runner.step()
    assert report.counts == {"killed": 300}
    assert clock.now() - killed_at < timedelta(seconds=1)
    rows = await store.list_rows(kind="renewal", limit=2000)
    moved = [r for r in rows if r.version > 1]
    assert len(moved) == 300 and all(r.state == "offered" for r in moved)
    for row in moved[:50]:
        events = [
            e for e in await store.read_stream(RENEWAL.stream(row.id)) if e.type == "transitioned"
        ]
        assert len(events) == 1
        assert await store.get_commit(f"{row.id}:offer") is not None
    unmoved = [r for r in rows if r.version == 1]
    for row in unmoved[:50]:
        assert await store.get_commit(f"{row.id}:offer") is None
    final = await runner.run_until_idle()
    assert final.counts["moved"] == 0
    await KillSwitch(store, {"alice": frozenset({"all"})}).revive(
        "kind:renewal", principal="alice", reason="fixed"
    )
    clock.advance(timedelta(minutes=2))  # past the killed timers' leases
    assert (await runner.step()).counts["moved"] > 0


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


async def test_applied_is_what_the_store_returns(store: SqlStore) -> None:
    """Sanity: a plain unit through the store is Applied (guards the helpers above)."""
    assert isinstance(await store.apply(UnitOfWork().append_event("s", "t")), Applied)
    assert Throttled("b", 0, 1).kind == "throttled"
