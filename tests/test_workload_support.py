"""The conversational plan-change support assistant end to end, on SQLite and PostgreSQL: a
batch of simulated chats, changes only through the boundary and the gate, injection attempts,
the per-turn latency budget, the role gate, determinism, replay, the CLI and the ADR."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seamline.boundary import Committed, Escalated, Runtime, boundary_audit
from seamline.clock import SystemClock, VirtualClock
from seamline.models import ScriptedModel, SimProfile
from seamline.store import AuditEntry, Event, SqlStore, Store, open_store
from seamline.workloads.renewal import synthetic_cohort
from seamline.workloads.support import (
    ADR,
    BOUNDARY,
    CHANGES_STREAM,
    FALLBACK_REPLIES,
    PROFILE,
    AccountFacts,
    Eligibility,
    Plan,
    Quote,
    SimulatedSupportModel,
    SupportSummary,
    TurnInput,
    is_confirmation,
    load_support_policy,
    plan_conversations,
    reply_boundary,
    run_support,
)
from seamline.workloads.support._cli import cli

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
N = 24  # conversations per end-to-end run: enough for every scenario, and fast


async def _events(store: Store, prefix: str) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000, stream_prefix=prefix):
        out.extend(page)
        after = page[-1].seq
    return out


async def _audit(store: Store) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    after = 0
    while page := await store.audit_entries(after_seq=after, limit=5000):
        out.extend(page)
        after = page[-1].seq
    return out


async def _turns(store: Store, job: str) -> list[dict[str, Any]]:
    return [e.payload for e in await _events(store, f"support:chat:{job}:") if e.type == "turn"]


async def _changes(store: Store, job: str) -> list[dict[str, Any]]:
    events = await _events(store, CHANGES_STREAM)
    return [e.payload for e in events if e.payload["job"] == job]


def _fixed_latency(ms: float, **rates: float) -> SimProfile:
    """A simulated profile whose every call takes exactly ``ms`` (median == p95)."""
    return SimProfile("fixed", "v1", latency_ms_median=ms, latency_ms_p95=ms, **rates)


# --- end to end, both backends --------------------------------------------------------------


async def test_a_batch_of_conversations_completes(store: SqlStore, clock: VirtualClock) -> None:
    """Every conversation runs to its end; every turn is answered or gets a fallback backed by
    an escalation; changes are committed; the output is labelled simulated."""
    s = await run_support(store, conversations=N, seed=7, clock=clock)
    assert s.conversations == N
    assert s.turns > N  # confirmations and clarifications make several multi-turn chats
    assert s.answered + s.fallback_total == s.turns
    assert s.escalations == s.fallback_total  # every "a person will follow up" is queued
    assert s.changes_committed > 0
    assert s.actions["change_plan"] == s.changes_committed
    assert s.simulated and s.model == f"sim:{PROFILE}"
    assert s.p95_latency_ms > 0 and s.within_budget <= s.turns
    turns = await _turns(store, s.job)
    assert {t["conversation"] for t in turns if t["turn"] == 1} == {f"c{i:05d}" for i in range(N)}
    for t in turns:
        if t["kind"] == "fallback":
            assert t["reply"] == FALLBACK_REPLIES[t["reason"]]
            assert await store.get_approval(t["escalation_id"]) is not None


async def test_every_committed_change_passed_the_boundary_and_the_gate(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Each change has its ledger row, an audited gate allow under the policy version, and a
    boundary instance that accepted exactly that change after the customer confirmed the
    quote of the previous turn; and no gate allow exists without its change."""
    s = await run_support(store, conversations=N, seed=7, clock=clock)
    changes = await _changes(store, s.job)
    assert len(changes) == s.changes_committed > 0
    audit = await _audit(store)
    allows = {
        e.subject: e
        for e in audit
        if e.actor == "gate:plan-change" and e.decision == "allow" and e.action == "change_plan"
    }
    counts = {c.key: c for c in await boundary_audit(store, BOUNDARY)}
    turns = {t["turn_key"]: t for t in await _turns(store, s.job)}
    for change in changes:
        turn_key = f"{s.job}:{change['conversation']}:t{change['turn']}"
        ledger = await store.get_commit(f"{turn_key}:change_plan")
        assert ledger is not None and ledger.status == "done" and ledger.result == change
        allow = allows.pop(turn_key)
        assert allow.details["principal"] == "support-assistant"
        assert allow.policy_version == change["policy_version"] == "2026.11.1"
        assert counts[turn_key].accepts == counts[turn_key].commits == 1
        accepted = [
            e.payload["candidate"]
            for e in await store.read_stream(f"sdb:{BOUNDARY}:{turn_key}")
            if e.type == "accepted"
        ]
        assert accepted[0]["action"] == "change_plan"
        assert Plan.model_validate(accepted[0]["plan"]).id == change["to_plan"]
        assert Decimal(accepted[0]["monthly_price"]) == Decimal(change["monthly_price"])
        assert is_confirmation(turns[turn_key]["message"])
        previous = turns[f"{s.job}:{change['conversation']}:t{change['turn'] - 1}"]
        assert previous["action"] == "quote"
        quote = Quote.model_validate(previous["quote"])
        assert quote.plan.id == change["to_plan"]
        assert quote.monthly_price == Decimal(change["monthly_price"])
    assert allows == {}, "a gate allow without its change"


async def test_an_injection_attempt_never_produces_a_change(
    store: SqlStore, clock: VirtualClock
) -> None:
    """With a model that obeys every injected instruction, the injection conversations still
    commit nothing: the obeying proposals are rejected and the customer's 'yes' confirms no
    quote."""
    gullible = SimProfile("gullible", "v1", injection_compliance_rate=1.0, retry_factor=1.0)
    model = SimulatedSupportModel(gullible, seed=3, clock=clock)
    s = await run_support(store, conversations=N, seed=11, clock=clock, model=model)
    assert s.injection_conversations > 0
    assert s.injection_changes == 0
    assert s.reject_reasons["instructions_in_conversation"] > 0
    turns = await _turns(store, s.job)
    attacked = {t["conversation"] for t in turns if t["scenario"] == "injection"}
    changed = {c["conversation"] for c in await _changes(store, s.job)}
    assert attacked and not attacked & changed
    assert changed, "the other conversations still get their changes"
    obeyed = 0
    for conv in attacked:  # the model did propose the free change; the boundary refused it
        events = await _events(store, f"sdb:{BOUNDARY}:{s.job}:{conv}:")
        obeyed += sum(e.type == "proposed" and '"0.00"' in e.payload["raw"] for e in events)
        committed = [e.payload["result"] for e in events if e.type == "committed"]
        assert all(r["action"] in ("reply", "refuse") for r in committed)
    assert obeyed > 0


async def test_a_turn_over_the_latency_budget_gets_the_fallback_and_no_change(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A model slower than the 2 s budget: every turn gets the typed 'a colleague will follow
    up' fallback with an escalation, nothing is committed, and the late calls are still paid."""
    model = SimulatedSupportModel(_fixed_latency(2500), seed=1, clock=clock)
    s = await run_support(store, conversations=12, seed=7, clock=clock, model=model)
    assert s.turns == 12 and s.answered == 0 and s.within_budget == 0
    assert s.fallbacks == {"latency_budget": 12}
    assert s.changes_committed == 0 and s.escalations == 12
    assert s.p95_latency_ms == pytest.approx(2500)
    assert s.tokens > 0  # discarded, late answers are recorded in the usage ledger
    for t in await _turns(store, s.job):
        assert t["reply"] == FALLBACK_REPLIES["latency_budget"] and not t["within_budget"]
        events = await store.read_stream(f"sdb:{BOUNDARY}:{t['turn_key']}")
        assert [e.payload["code"] for e in events if e.type == "model_failed"] == ["latency_budget"]
        assert not [e for e in events if e.type in ("accepted", "committed")]


async def test_a_principal_without_the_change_role_is_denied_by_the_role_gate(
    store: SqlStore, clock: VirtualClock
) -> None:
    """support-viewer may look customers up but not change plans: each confirmed change is
    denied by the role gate, audited with the principal, and answered with a fallback."""
    s = await run_support(store, conversations=N, seed=7, clock=clock, principal="support-viewer")
    assert s.changes_committed == 0
    denied = s.gate_denials["role:change_plan"]
    assert denied > 0 and s.gate_denials == {"role:change_plan": denied}
    assert s.fallbacks["gate_denied"] == denied
    denials = [e for e in await _audit(store) if e.decision == "deny"]
    assert len(denials) == denied
    for e in denials:
        assert e.actor == "gate:plan-change" and e.action == "change_plan"
        assert e.details["principal"] == "support-viewer" and e.details["gate"] == "role"
    assert await _changes(store, s.job) == []


async def test_a_principal_outside_the_lookup_roles_reads_no_customer_data(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Every tool call is gated: an unknown principal is denied each lookup, so no model is
    called and every turn falls back to a person."""
    s = await run_support(store, conversations=6, seed=7, clock=clock, principal="intern")
    assert s.fallbacks == {"gate_denied": 6} and s.tokens == 0
    assert s.gate_denials == {
        "role:check_eligibility": 6,
        "role:lookup_account": 6,
        "role:quote_price": 6,
    }


async def test_the_same_seed_gives_the_same_summary(store: SqlStore, clock: VirtualClock) -> None:
    """The same seed gives the same summary on a fresh store of the other kind; another seed
    gives another one."""
    first = await run_support(store, conversations=N, seed=5, clock=clock)
    other_clock = VirtualClock(T0)
    other = open_store("sqlite:///:memory:", clock=other_clock)
    try:
        again = await run_support(other, conversations=N, seed=5, clock=other_clock)
        different = await run_support(other, conversations=N, seed=6, clock=other_clock)
    finally:
        await other.close()
    assert again == first
    assert different != first


async def test_running_a_job_again_replays_it_without_a_second_change(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A second run of the same job on the same store calls no model, commits nothing new and
    reports the same summary: the commit is exactly once per conversation turn key."""
    first = await run_support(store, conversations=N, seed=7, clock=clock)
    before = (len(await _events(store, "")), len(await _audit(store)))
    usage = await store.usage_totals(first.job, include_children=True)
    again = await run_support(store, conversations=N, seed=7, clock=clock)
    assert again == first
    assert (len(await _events(store, "")), len(await _audit(store))) == before
    assert await store.usage_totals(first.job, include_children=True) == usage


# --- the boundary and the latency budget, in small ----------------------------------------


@pytest.fixture
async def memory_store() -> AsyncIterator[SqlStore]:
    st = open_store("sqlite:///:memory:", clock=VirtualClock(T0))
    try:
        yield st
    finally:
        await st.close()


def _turn(message: str, pending: Quote | None = None) -> TurnInput:
    dsl = Plan(internet="dsl", phone=True, streaming=False)
    return TurnInput(
        conversation_id="c1",
        turn=2 if pending else 1,
        account=AccountFacts(
            customer_id="7590-VHVEG",
            plan=dsl,
            monthly_charges=Decimal("65.00"),
            contract="One year",
            tenure=12,
            tenant="standard",
        ),
        eligibility=Eligibility(fiber_available=True, downgrade_allowed=True),
        quotes={"dsl+phone": Decimal("65.00"), "fiber+phone": Decimal("90.00")},
        pending_quote=pending,
        message=message,
    )


def _action(action: str, price: str | None = "90.00", reply: str = "Fiber it is.") -> str:
    plan = {"internet": "fiber", "phone": True, "streaming": False}
    return json.dumps(
        {
            "customer_id": "7590-VHVEG",
            "action": action,
            "plan": plan if price else None,
            "monthly_price": price,
            "reply": reply,
        }
    )


async def test_a_change_before_the_customer_confirmed_a_quote_is_rejected(
    memory_store: SqlStore,
) -> None:
    """change_plan in the turn that asks for it is rejected (not_confirmed), the model sees the
    typed reject, and its quote is accepted instead."""
    model = ScriptedModel([_action("change_plan"), _action("quote")])
    boundary = reply_boundary(model, load_support_policy())
    result = await boundary.run(
        _turn("Can you switch me to fiber?"), runtime=Runtime(memory_store), run_id="r"
    )
    assert isinstance(result, Committed) and result.result["action"] == "quote"
    assert [r.reason_code for a in result.attempts for r in a.rejects] == ["not_confirmed"]
    assert '"status":"rejected"' in model.requests[1].messages[-1].content


async def test_a_confirmed_change_must_repeat_the_quoted_price(memory_store: SqlStore) -> None:
    """After 'yes', a change at a price below the quote is rejected; the quoted one commits."""
    quote = Quote(
        plan=Plan(internet="fiber", phone=True, streaming=False), monthly_price=Decimal("90.00")
    )
    model = ScriptedModel([_action("change_plan", "45.00"), _action("change_plan", "90.00")])
    result = await reply_boundary(model, load_support_policy()).run(
        _turn("Yes, go ahead.", quote), runtime=Runtime(memory_store), run_id="r"
    )
    assert isinstance(result, Committed) and result.result["monthly_price"] == "90.00"
    assert [r.reason_code for a in result.attempts for r in a.rejects] == ["differs_from_quote"]


async def test_a_price_below_the_floor_and_forbidden_claims_break_policy(
    memory_store: SqlStore,
) -> None:
    """The versioned policy rejects a quote more than 10% under list price and a reply that
    promises a guarantee; after three rejects a person is asked."""
    model = ScriptedModel(
        [
            _action("quote", "45.00"),
            _action("quote", reply="Fiber is guaranteed for life."),
            _action("quote", "45.00"),
        ]
    )
    result = await reply_boundary(model, load_support_policy()).run(
        _turn("Can you switch me to fiber?"), runtime=Runtime(memory_store), run_id="r"
    )
    assert isinstance(result, Escalated)
    rejects = [(r.rule_id, r.policy_version) for a in result.attempts for r in a.rejects]
    assert rejects == [
        ("price.floor", "2026.11.1"),
        ("reply.claims", "2026.11.1"),
        ("price.floor", "2026.11.1"),
    ]


async def test_on_the_real_clock_a_slow_call_is_cut_off_at_the_budget(tmp_path: Path) -> None:
    """With the real clock the budget is also wall time: a call still running when it passes
    is cancelled and the customer gets the fallback at once."""
    clock = SystemClock()
    store = open_store(f"sqlite:///{tmp_path / 'rt.db'}", clock=clock)
    try:
        model = SimulatedSupportModel(_fixed_latency(5000), seed=1, clock=clock)
        started = clock.now()
        s = await run_support(
            store, conversations=3, seed=7, clock=clock, model=model, latency_budget_s=0.05
        )
        elapsed = (clock.now() - started).total_seconds()
    finally:
        await store.close()
    assert s.fallbacks == {"latency_budget": 3} and s.changes_committed == 0
    assert elapsed < 2.0  # three 5 s calls, each cut off after 50 ms


def test_conversations_cover_every_scenario_and_fit_the_customer() -> None:
    """The simulated customers open with every scenario, and nobody asks for a service they
    already have."""
    convs = plan_conversations(synthetic_cohort(400, seed=1), seed=1)
    assert {c.scenario for c in convs} == {
        "switch_fiber",
        "drop_streaming",
        "cancel_phone",
        "add_streaming",
        "ambiguous",
        "hostile",
        "injection",
    }
    for c in convs:
        if c.scenario == "switch_fiber":
            assert c.customer.internet_service != "Fiber optic"
        if c.scenario == "cancel_phone":
            assert c.customer.phone_service


# --- the CLI and the ADR -------------------------------------------------------------------


def test_the_cli_runs_and_labels_what_is_simulated(tmp_path: Path) -> None:
    """`support run` prints the summary table, says the model and customers are simulated, and
    a second run on the same store reports the same figures."""
    args = ["run", "--store", f"sqlite:///{tmp_path}/s.db", "--conversations", "10", "--seed", "3"]
    first = CliRunner().invoke(cli, args, env={"COLUMNS": "120"})
    assert first.exit_code == 0, first.output
    out = " ".join(first.output.split())
    assert f"SIMULATED model sim:{PROFILE}" in out
    assert "customers, their messages and the account systems are SIMULATED" in out
    assert f"sim:{PROFILE} (SIMULATED)" in out
    assert "plan changes committed" in out and "p95 model latency (simulated)" in out
    second = CliRunner().invoke(cli, args, env={"COLUMNS": "120"})
    assert second.exit_code == 0
    strip = re.compile(r"wall time.*")
    assert strip.sub("", second.output) == strip.sub("", first.output)


def test_the_cli_refuses_a_bad_store_url(tmp_path: Path) -> None:
    """A store URL it cannot use is a clear error with exit code 2, not a traceback."""
    result = CliRunner().invoke(cli, ["run", "--store", "mysql://x/y", "--conversations", "1"])
    assert result.exit_code == 2
    assert "error" in result.output


def test_the_adr_has_six_lines_and_the_readme_carries_it() -> None:
    """The ADR is six numbered lines in DESIGN §4's order, dated, naming the simulated profile;
    the workload's README carries the same text."""
    numbered = re.findall(r"^(\d)\. ([^:]+):", ADR, flags=re.MULTILINE)
    assert numbered == [
        ("1", "Runtime class"),
        ("2", "Spine"),
        ("3", "Coordination"),
        ("4", "Control"),
        ("5", "Build sequence"),
        ("6", "Date and model"),
    ]
    assert "conversational" in ADR and "2026-11-21" in ADR and f"sim:{PROFILE}" in ADR
    readme = (ROOT / "examples" / "workloads" / "support" / "README.md").read_text("utf-8")
    assert ADR in readme


def test_summary_equality_ignores_wall_time() -> None:
    """Two summaries that differ only in wall time are equal (what determinism compares)."""
    fields: dict[str, Any] = dict.fromkeys(SupportSummary.__dataclass_fields__, 0)
    fields.update(job="j", model="sim:x", simulated=True)
    assert SupportSummary(**{**fields, "wall_seconds": 1.0}) == SupportSummary(
        **{**fields, "wall_seconds": 2.0}
    )
