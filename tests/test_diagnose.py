"""Diagnostics: clean runs of the five workloads show no failure signature (except the fault a
workload seeds on purpose); each signature, seeded into a recorded run, is found with its
evidence while the others stay silent; the normal life of a long-horizon row (timers beaten
by an answer) and a re-derivation's review queue are told apart from faults; the CLI and the
docs read the same catalog."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from seamline._cli_diagnose import diagnose as diagnose_command
from seamline.cli import app as seamline_app
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.method._diagnose import (
    CATALOG,
    DiagnosisReport,
    Thresholds,
    diagnose,
    load_recorded,
    render_catalog_markdown,
    render_markdown,
    render_table,
)
from seamline.method._replay import rederive, renewal_inputs
from seamline.store import Applied, SqlStore, UnitOfWork, open_store
from seamline.workloads.incidents import build_inventory, incident_stream
from seamline.workloads.renewal import (
    CAMPAIGN_START,
    PolicyBook,
    SimulatedRenewalModel,
    run_renewals,
    synthetic_cohort,
)
from seamline.workloads.renewal._job import job_id
from seamline.workloads.renewal._offer import offer_boundary

ROOT = Path(__file__).resolve().parent.parent
COHORT = synthetic_cohort(40, seed=11)
JOB = job_id(COHORT, 7)
B = "renewal-offer"

Seed = Callable[[SqlStore, VirtualClock], Awaitable[None]]


async def _apply(store: SqlStore, unit: UnitOfWork) -> None:
    assert isinstance(await store.apply(unit), Applied)


def _sdb(run: str, input_key: str) -> str:
    return f"sdb:{B}:{run}:{B}:{input_key}"


async def _record_run(url: str) -> datetime:
    clock = VirtualClock(CAMPAIGN_START)
    store = open_store(url, clock=clock)
    try:
        await run_renewals(store, COHORT, clock=clock, seed=7)
        horizon = (await load_recorded(store)).horizon
        assert horizon is not None
        return horizon
    finally:
        await store.close()


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """One clean renewal run on SQLite, copied by each test that seeds a fault into it."""
    path = tmp_path_factory.mktemp("diagnose") / "clean.db"
    horizon = asyncio.run(_record_run(f"sqlite:///{path}"))
    return path, horizon


async def _diagnose_copy(
    recorded_run: tuple[Path, datetime], tmp_path: Path, seed: Seed | None
) -> tuple[DiagnosisReport, str]:
    source, horizon = recorded_run
    target = tmp_path / "faulted.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    url = f"sqlite:///{target}"
    clock = VirtualClock(horizon + timedelta(days=1))
    store = open_store(url, clock=clock)
    try:
        if seed is not None:
            await seed(store, clock)
        return await diagnose(store), url
    finally:
        await store.close()


# --- the faults ---------------------------------------------------------------------------


async def seed_rejected_success(store: SqlStore, clock: VirtualClock) -> None:
    s = _sdb("diag", "c1")
    unit = UnitOfWork().append_event(s, "proposed", {"attempt": 1})
    unit.append_event(s, "rejected", {"status": "rejected", "rejects": []})
    await _apply(store, unit.append_event(s, "committed", {"result": {}, "via": "model"}))


async def seed_commit_without_accept(store: SqlStore, clock: VirtualClock) -> None:
    s = _sdb("diag", "c2")
    unit = UnitOfWork().append_event(s, "proposed", {"attempt": 1})
    unit.append_event(s, "rejected", {"status": "rejected", "rejects": []})
    await _apply(store, unit.record_commit(f"diag:{B}:c2", {"ok": True}, boundary=B))


async def seed_duplicate(store: SqlStore, clock: VirtualClock) -> None:
    customer = COHORT[0].customer_id
    payload = {"customer": customer, "discount": "0.10", "policy": "2026.11"}
    key = f"{JOB}:{customer}:outreach-again"
    await _apply(
        store, UnitOfWork().append_event("outbox", "offer_sent", payload, idempotency_key=key)
    )


async def seed_effect_pending(store: SqlStore, clock: VirtualClock) -> None:
    s = _sdb("diag", "c4")
    unit = UnitOfWork().append_event(s, "proposed", {"attempt": 1})
    unit.append_event(s, "accepted", {"attempt": 1, "candidate": {"x": 1}})
    unit.append_event(s, "effect_failed", {"error": "TimeoutError: mail API"})
    await _apply(store, unit.commit_intent(f"diag:{B}:c4", boundary=B))


async def seed_not_merged(store: SqlStore, clock: VirtualClock) -> None:
    unit = UnitOfWork().create_row("diag:c5", kind="renewal", state="assessing", data={})
    await _apply(store, unit.append_event("wf:renewal:diag:c5", "created", {}))
    clock.advance(timedelta(minutes=5))
    s = _sdb("diag/c5", "c5")
    unit = UnitOfWork().append_event(s, "proposed", {"attempt": 1})
    unit.append_event(s, "accepted", {"attempt": 1, "candidate": {"x": 1}})
    unit.record_commit(f"diag/c5:{B}:c5", {"x": 1}, boundary=B)
    await _apply(store, unit.append_event(s, "committed", {"result": {"x": 1}, "via": "model"}))


async def seed_scattered(store: SqlStore, clock: VirtualClock) -> None:
    unit = UnitOfWork().create_row("saga:diag-1", kind="saga", state="running", data={})
    unit.append_event("saga:diag-1", "saga_started", {"steps": ["reserve", "send"]})
    unit.append_event("saga:diag-1", "step_done", {"step": "reserve", "result": None})
    await _apply(store, unit.append_event("saga:diag-1", "step_failed", {"step": "send"}))


async def seed_divergence(store: SqlStore, clock: VirtualClock) -> None:
    for run, model, discount in (("r1", "sim:v1", "0.10"), ("r2", "sim:v2", "0.30")):
        s = _sdb(run, "c6")
        unit = UnitOfWork().append_event(
            s, "proposed", {"attempt": 1}, model_version=model, prompt_hash="p1"
        )
        unit.append_event(s, "accepted", {"attempt": 1, "candidate": {"discount": discount}})
        await _apply(store, unit.append_event(s, "committed", {"result": {}, "via": "model"}))


async def seed_missing_gate(store: SqlStore, clock: VirtualClock) -> None:
    payload = {"customer": "c7", "discount": "0.10"}
    unit = UnitOfWork().append_event(
        "outbox", "offer_sent", payload, idempotency_key="diag:c7:outreach"
    )
    await _apply(store, unit)


async def seed_runaway(store: SqlStore, clock: VirtualClock) -> None:
    s = _sdb("diag", "c8")
    unit = UnitOfWork()
    for n in range(1, 7):
        unit.append_event(s, "proposed", {"attempt": n})
        unit.append_event(s, "rejected", {"status": "rejected", "rejects": []})
    unit.append_event(s, "failed", {"reason_code": "attempts_exhausted", "retryable": False})
    await _apply(store, unit.append_event("budget:diag", "budget_exhausted", {"share": 1.02}))


async def seed_stale_storm(store: SqlStore, clock: VirtualClock) -> None:
    unit = UnitOfWork()
    for n in range(1, 5):
        error = "StaleVersion: expected version 3, found 4"
        unit.append_event(
            "wf:renewal:diag:c9", "step_failed", {"attempt": n, "error": error, "next": "retry"}
        )
    await _apply(store, unit)


async def seed_timer_noops(store: SqlStore, clock: VirtualClock) -> None:
    """Three timers fire on a row whose versions moved with no recorded transition."""
    unit = UnitOfWork()
    for v in range(3):
        payload = {"timer": "step:assessing", "scheduled_at_version": v, "row_version": 9}
        unit.append_event("wf:renewal:diag:c10", "timer_noop", payload)
    await _apply(store, unit)


async def seed_dead_letters(store: SqlStore, clock: VirtualClock) -> None:
    unit = UnitOfWork().append_event("wf:renewal:diag:c11", "step_failed", {"next": "dead_letter"})
    await _apply(store, unit.append_event("wf:renewal:diag:c11", "dead_lettered", {"state": "x"}))


async def seed_rubber_stamps(store: SqlStore, clock: VirtualClock) -> None:
    """Fast approvals, more than the run's own human decisions (so at least half)."""
    humans = [
        a
        for a in await store.list_approvals(limit=10_000)
        if a.decided_by not in (None, "sla") and a.status != "pending"
    ]
    for n in range(max(3, len(humans) + 1)):
        unit = UnitOfWork().open_approval(
            kind="approval", reason="discount", request={}, requested_by="agent", id=f"rs-{n}"
        )
        await _apply(store, unit)
        clock.advance(timedelta(seconds=2))
        await _apply(
            store, UnitOfWork().decide_approval(f"rs-{n}", status="approved", decided_by="bob")
        )


async def seed_timeouts(store: SqlStore, clock: VirtualClock) -> None:
    for n in range(10):
        due = clock.now() + timedelta(hours=1)
        unit = UnitOfWork().open_approval(
            kind="approval",
            reason="discount",
            request={},
            requested_by="a",
            due_at=due,
            id=f"to-{n}",
        )
        await _apply(store, unit)
    clock.advance(timedelta(hours=2))
    for n in range(10):
        await _apply(
            store, UnitOfWork().decide_approval(f"to-{n}", status="expired", decided_by="sla")
        )


FAULTS: dict[str, tuple[Seed, str]] = {
    "boundary.rejected_reported_as_success": (seed_rejected_success, _sdb("diag", "c1")),
    "boundary.commit_without_accept": (seed_commit_without_accept, _sdb("diag", "c2")),
    "boundary.duplicate_side_effect": (seed_duplicate, COHORT[0].customer_id),
    "boundary.effect_stuck_pending": (seed_effect_pending, "1 effect_failed"),
    "p1.subagent_output_not_merged": (seed_not_merged, "row diag:c5"),
    "p2.scattered_commitment": (seed_scattered, "step(s) reserve done"),
    "p3.replay_divergence": (seed_divergence, "sim:v2/p1"),
    "p4.missing_gate": (seed_missing_gate, "subject diag:c7"),
    "p4.runaway_retry": (seed_runaway, "6 proposals"),
    "p5.stale_write_storm": (seed_stale_storm, "wf:renewal:diag:c9: 4"),
    "p5.timer_on_moved_row": (seed_timer_noops, "wf:renewal:diag:c10#"),
    "p5.dead_letter_pileup": (seed_dead_letters, "wf:renewal:diag:c11#2"),
    "p6.rubber_stamping": (seed_rubber_stamps, "rs-0 approved by bob"),
    "p6.approval_timeouts": (seed_timeouts, "to-0 expired"),
}


# --- tests --------------------------------------------------------------------------------


def test_catalog_is_complete_and_well_formed() -> None:
    """At least 12 signatures with unique ids, every pattern covered, each seeded by a test."""
    ids = [s.id for s in CATALOG]
    assert len(ids) >= 12 and len(set(ids)) == len(ids)
    assert {s.pattern for s in CATALOG} == {"boundary", "P1", "P2", "P3", "P4", "P5", "P6"}
    assert set(ids) == set(FAULTS)
    for s in CATALOG:
        assert s.symptom and s.detection and s.cause and s.weakness and len(s.corrections) >= 2


async def test_clean_run_reports_nothing(store_url: str) -> None:
    """A healthy 40-customer renewal run shows no failure signature, on both backends; a
    duplicate send seeded into it is found."""
    await _record_run(store_url)
    clock = VirtualClock(CAMPAIGN_START + timedelta(days=400))
    store = open_store(store_url, clock=clock)
    try:
        report = await diagnose(store)
        assert report.clean, render_markdown(report)
        assert report.events_read > 300 and report.signatures_checked == len(CATALOG)
        await seed_duplicate(store, clock)
        found = await diagnose(store)
        assert [f.signature for f in found.findings] == ["boundary.duplicate_side_effect"]
    finally:
        await store.close()


@pytest.mark.parametrize("signature", sorted(FAULTS))
async def test_seeded_fault_is_found_alone(
    signature: str, recorded_run: tuple[Path, datetime], tmp_path: Path
) -> None:
    """Each seeded fault fires its own signature with evidence naming it, and only it."""
    seed, evidence = FAULTS[signature]
    report, _ = await _diagnose_copy(recorded_run, tmp_path, seed)
    assert [f.signature for f in report.findings] == [signature], render_markdown(report)
    finding = report.findings[0]
    assert finding.count >= 1
    assert any(evidence in x for x in (finding.summary, *finding.examples)), finding


async def test_since_limits_what_is_read(
    recorded_run: tuple[Path, datetime], tmp_path: Path
) -> None:
    """Events before ``since`` are not diagnosed."""
    source, horizon = recorded_run
    target = tmp_path / "copy.db"
    shutil.copy(source, target)
    store = open_store(f"sqlite:///{target}", clock=VirtualClock(horizon))
    try:
        await seed_dead_letters(store, VirtualClock(horizon))
        assert not (await diagnose(store)).clean
        later = await diagnose(store, since=horizon + timedelta(seconds=1))
        assert later.clean and later.events_read == 0
    finally:
        await store.close()


def test_thresholds_are_bounded() -> None:
    """A share outside [0, 1] is refused with the number in the message."""
    with pytest.raises(ConfigError, match=r"expiry_share .* 1\.5"):
        Thresholds(expiry_share=1.5)


async def test_rendering_names_signature_and_corrections(
    recorded_run: tuple[Path, datetime], tmp_path: Path
) -> None:
    """Markdown and the Rich table carry the finding, its cause and ranked corrections."""
    report, _ = await _diagnose_copy(recorded_run, tmp_path, seed_missing_gate)
    text = render_markdown(report)
    assert "`p4.missing_gate` (P4)" in text and "1. Write the outbox only" in text
    assert render_table(report).row_count == 1


# --- what a healthy run looks like -------------------------------------------------------

WORKLOAD_RUNS: dict[str, tuple[str, ...]] = {
    "renewal": ("renewals", "run", "--limit", "40", "--report", "{tmp}/r.html"),
    "porting": ("porting", "run", "--requests", "30"),
    "incidents": ("incidents", "run", "--incidents", "12"),
    "billing": ("billing", "run", "--customers", "20", "--cycles", "6"),
    "support": ("support", "run", "--conversations", "24"),
}


def _seeded_rollback_failures() -> list[str]:
    """The incidents the incident stream (12, seed 7) seeds with a rollback that keeps
    failing: the workload's deliberate scattered commitment."""
    stream = incident_stream(12, seed=7, inventory=build_inventory(7))
    return [i.id for i in stream if i.faults.rollback_fails is not None]


@pytest.mark.parametrize("workload", sorted(WORKLOAD_RUNS))
async def test_clean_workload_runs_report_only_what_they_seed(
    workload: str, tmp_path: Path
) -> None:
    """A clean CLI run of each workload shows no failure signature, except incidents, whose
    stream seeds a rollback that keeps failing: that saga, and only it, is a scattered
    commitment. (Porting's timer no-ops, superseded by donors, customers and the desk, do not
    fire.)"""
    url = f"sqlite:///{tmp_path}/{workload}.db"
    args = [a.format(tmp=tmp_path) for a in WORKLOAD_RUNS[workload]]
    result = await asyncio.to_thread(CliRunner().invoke, seamline_app, [*args, "--store", url])
    assert result.exit_code == 0, result.output
    store = open_store(url)
    try:
        report = await diagnose(store)
        timer_noops = sum(e.type == "timer_noop" for e in (await load_recorded(store)).events)
    finally:
        await store.close()
    found = {f.signature: f for f in report.findings}
    if workload == "porting":
        assert timer_noops > 10  # the rule saw the workload's normal no-ops and let them be
    if workload != "incidents":
        assert not found, render_markdown(report)
        return
    assert list(found) == ["p2.scattered_commitment"], render_markdown(report)
    seeded = _seeded_rollback_failures()
    assert seeded and found["p2.scattered_commitment"].count == len(seeded)
    for incident in seeded:
        evidence = [x for x in found["p2.scattered_commitment"].examples if incident in x]
        assert any("compensation_failed" in x for x in evidence), evidence


async def _noop_after_move(
    store: SqlStore, *, left: str, cause: str | None, noop_cause: str = "t-1"
) -> None:
    """Row diag:c12 moves out of v1 (from state ``left``); then a step:assessing timer set
    for v1 fires on it."""
    stream = "wf:renewal:diag:c12"
    unit = UnitOfWork().append_event(stream, "created", {"state": "assessing", "version": 1})
    unit.append_event(
        stream,
        "transitioned",
        {"from": left, "to": "offer_ready", "version": 2, "actor": "desk:ana"},
        causation_id=cause,
    )
    payload = {"timer": "step:assessing", "scheduled_at_version": 1, "row_version": 2}
    await _apply(store, unit.append_event(stream, "timer_noop", payload, causation_id=noop_cause))


@pytest.mark.parametrize(
    ("left", "cause", "fires"),
    [
        ("assessing", None, False),  # a person moved it: the timer is simply overtaken
        ("assessing", "diag:c12:v1:assessing:dup", True),  # a second timer for the same entry
        ("offer_ready", None, True),  # the timer named a state the row was not in
    ],
)
async def test_a_timer_noop_fires_only_when_the_row_cannot_explain_it(
    left: str,
    cause: str | None,
    fires: bool,
    recorded_run: tuple[Path, datetime],
    tmp_path: Path,
) -> None:
    """One no-op is a finding when the move out of its version was a second timer's or left a
    different state; a recorded move by a person is the normal life of a row."""

    async def seed(store: SqlStore, clock: VirtualClock) -> None:
        await _noop_after_move(store, left=left, cause=cause)

    report, _ = await _diagnose_copy(recorded_run, tmp_path, seed)
    assert [f.signature for f in report.findings] == (["p5.timer_on_moved_row"] if fires else [])


async def test_rederive_review_queue_is_divergence_not_a_pileup(
    recorded_run: tuple[Path, datetime], tmp_path: Path
) -> None:
    """After a re-derivation, its pending review items make p3.replay_divergence fire with the
    same rate the re-derivation reported, and do not count as escalations piling up."""
    source, horizon = recorded_run
    target = tmp_path / "rederived.db"
    shutil.copy(source, target)
    store = open_store(f"sqlite:///{target}", clock=VirtualClock(horizon))
    scratch = open_store(f"sqlite:///{tmp_path}/scratch.db")
    try:
        inputs = await renewal_inputs(store, COHORT, seed=7)
        boundary = offer_boundary(SimulatedRenewalModel("typical-v1"), PolicyBook(CAMPAIGN_START))
        v2 = SimulatedRenewalModel("typical-v2", seed=7, clock=VirtualClock(CAMPAIGN_START))
        rederived = await rederive(
            store, boundary, inputs, model=v2, scratch=scratch, review_run="v2", spine="P5"
        )
        report = await diagnose(store)
        strict = await diagnose(store, thresholds=Thresholds(replay_divergence=0.9))
    finally:
        await scratch.close()
        await store.close()
    changed, compared = rederived.decisions_changed, rederived.instances
    assert changed >= Thresholds().pending_escalations  # enough to have looked like a pile-up
    assert changed / compared > Thresholds().replay_divergence
    assert [f.signature for f in report.findings] == ["p3.replay_divergence"]
    finding = report.findings[0]
    assert f"{changed} of {compared} decisions changed" in finding.summary
    assert finding.count == changed
    assert all(x.startswith("review:v2:") for x in finding.examples)
    assert strict.clean, render_markdown(strict)


async def test_overdue_counts_approvals_not_escalations(
    recorded_run: tuple[Path, datetime], tmp_path: Path
) -> None:
    """An escalation past its SLA is not an approval timeout (it is a run parked for a
    person, counted by the pile-up rule); an approval past its SLA is."""

    def seed(kind: Literal["approval", "escalation"]) -> Seed:
        async def go(store: SqlStore, clock: VirtualClock) -> None:
            unit = UnitOfWork().open_approval(
                kind=kind,
                reason="late",
                request={},
                requested_by="a",
                due_at=clock.now() + timedelta(hours=1),
                id=f"late-{kind}",
            )
            await _apply(store, unit)
            clock.advance(timedelta(hours=2))
            await _apply(store, UnitOfWork().append_event("diag", "tick", {}))

        return go

    escalated, _ = await _diagnose_copy(recorded_run, tmp_path / "e", seed("escalation"))
    assert escalated.clean, render_markdown(escalated)
    approval, _ = await _diagnose_copy(recorded_run, tmp_path / "a", seed("approval"))
    assert [f.signature for f in approval.findings] == ["p6.approval_timeouts"]
    assert "late-approval overdue" in approval.findings[0].examples
    assert "1 approval(s) pending past their SLA" in approval.findings[0].summary


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(diagnose_command)
    return app


async def test_cli_reports_and_exits(recorded_run: tuple[Path, datetime], tmp_path: Path) -> None:
    """Clean: exit 0 with the no-findings line; a fault with --fail-on-findings: exit 1 and
    the Markdown file written."""
    _, clean_url = await _diagnose_copy(recorded_run, tmp_path / "a", None)
    _, faulty_url = await _diagnose_copy(recorded_run, tmp_path / "b", seed_timer_noops)

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(_cli(), list(args))
        return result.exit_code, result.output

    code, out = await asyncio.to_thread(invoke, "--store", clean_url, "--fail-on-findings")
    assert code == 0 and "no failure signatures found" in out
    md = tmp_path / "findings.md"
    code, out = await asyncio.to_thread(
        invoke, "--store", faulty_url, "--markdown", str(md), "--fail-on-findings"
    )
    assert code == 1 and "p5.timer_on_moved_row" in out
    assert "p5.timer_on_moved_row" in md.read_text()
    code, out = await asyncio.to_thread(invoke, "--store", faulty_url)
    assert code == 0
    code, out = await asyncio.to_thread(invoke, "--store", clean_url, "--since", "yesterday")
    assert code == 2 and "--since" in out


def test_docs_list_every_signature() -> None:
    """docs/diagnose.md carries the catalog exactly as the code renders it."""
    page = (ROOT / "docs" / "diagnose.md").read_text()
    assert render_catalog_markdown() in page
    for s in CATALOG:
        assert f"`{s.id}`" in page


async def test_docs_python_example_runs(
    recorded_run: tuple[Path, datetime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Python example in docs/diagnose.md runs against a recorded store."""
    page = (ROOT / "docs" / "diagnose.md").read_text()
    block = page.split("```python\n", 1)[1].split("```", 1)[0]
    body = "".join(f"    {line}\n" for line in block.splitlines())
    namespace: dict[str, object] = {}
    exec(f"async def example(store):\n{body}", namespace)
    source, horizon = recorded_run
    target = tmp_path / "docs.db"
    shutil.copy(source, target)
    store = open_store(f"sqlite:///{target}", clock=VirtualClock(horizon))
    try:
        example = namespace["example"]
        assert callable(example)
        await example(store)
    finally:
        await store.close()
    assert "No failure signatures found." in capsys.readouterr().out


def test_approval_expiry_fires_on_a_credible_share_not_a_small_sample() -> None:
    """The expired share must be above the line with 95% confidence: 4 of 7 is within the
    noise of a 20% rate, 14 of 17 is not."""
    from seamline.method._diagnose_rules import wilson_lower

    assert wilson_lower(4, 7) < 0.5 < wilson_lower(14, 17)
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(10, 10) < 1.0 and wilson_lower(0, 10) == pytest.approx(0.0, abs=1e-12)
