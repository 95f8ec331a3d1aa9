"""Replay divergence (DESIGN §4): recovery replay reproduces a recorded run bit for bit;
re-derivation diffs a new model's decisions against the record, holds changes for review
and never touches the original history."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seamline import codec
from seamline._cli_replay import replay_app
from seamline.clock import VirtualClock
from seamline.method._replay import (
    ReplayInput,
    recommend,
    recovery_replay,
    rederive,
    renewal_inputs,
)
from seamline.models import ModelRequest, ModelResponse, Usage
from seamline.store import Event, SqlStore, Store, open_store
from seamline.workloads.renewal import (
    CAMPAIGN_START,
    PolicyBook,
    SimulatedRenewalModel,
    run_renewals,
    synthetic_cohort,
)
from seamline.workloads.renewal._offer import offer_boundary as renewal_boundary
from tests._offers import GOOD, Customer, offer_boundary

ROOT = Path(__file__).resolve().parent.parent
COHORT = synthetic_cohort(30, seed=7)


async def all_events(store: Store) -> list[Event]:
    out: list[Event] = []
    while page := await store.read_events(after_seq=out[-1].seq if out else 0, limit=5000):
        out.extend(page)
    return out


async def stream(store: Store, name: str) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (e.type, e.payload_json, e.prompt_hash, e.model_version)
        for e in await store.read_stream(name)
    ]


def v1_boundary() -> Any:
    return renewal_boundary(SimulatedRenewalModel("typical-v1"), PolicyBook(CAMPAIGN_START))


# --- recovery replay --------------------------------------------------------------------------


async def test_recovery_replay_of_a_renewal_run_is_bit_exact(
    store: SqlStore, clock: VirtualClock, tmp_path: Path
) -> None:
    """Every recorded assessment replays into a scratch store with identical events (prompt
    hashes, raw outputs, reject codes, accepted candidates) and identical commit results."""
    await run_renewals(store, COHORT, clock=clock, seed=7)
    inputs = await renewal_inputs(store, COHORT, seed=7)
    assert len(inputs) >= len(COHORT)  # one per assessment, some customers reassessed
    scratch = open_store(f"sqlite:///{tmp_path}/scratch.db")
    try:
        report = await recovery_replay(store, v1_boundary(), inputs, scratch=scratch)
        assert report.exact and report.reproduced == len(inputs) and not report.mismatches
        for item in inputs:
            name = f"sdb:renewal-offer:{item.key}"
            assert await stream(scratch, name) == await stream(store, name)
            before, after = await store.get_commit(item.key), await scratch.get_commit(item.key)
            assert (before is None) == (after is None)
            if before is not None and after is not None:
                assert codec.encode(before.result) == codec.encode(after.result)
    finally:
        await scratch.close()


async def test_recovery_replay_reports_an_input_that_does_not_match(
    store: SqlStore, tmp_path: Path
) -> None:
    """A wrongly rebuilt input is caught: its prompt hash differs from the recorded one."""
    await _record_offers(store, ScriptByInput({}))
    inputs = _offer_inputs()
    wrong = [*inputs[:-1], ReplayInput("orig", inputs[-1].key, Customer(id="c9", notes="x"))]
    scratch = open_store(f"sqlite:///{tmp_path}/scratch.db")
    try:
        report = await recovery_replay(
            store, offer_boundary(ScriptByInput({})), wrong, scratch=scratch
        )
    finally:
        await scratch.close()
    assert not report.exact and report.reproduced == 9
    assert {m.what for m in report.mismatches} == {"attempt 1 prompt_hash"}


# --- re-derivation: a constructed case -----------------------------------------------------------


class ScriptByInput:
    """Answers GOOD for every customer, patched per customer id as told."""

    name = "sim:scripted-by-input"

    def __init__(self, patches: dict[str, dict[str, Any]]) -> None:
        self.patches = patches

    async def complete(self, request: ModelRequest) -> ModelResponse:
        customer = request.metadata["input"]
        answer = {**GOOD, "customer": customer, **self.patches.get(customer, {})}
        return ModelResponse(
            text=json.dumps(answer),
            model=self.name,
            model_version="1",
            usage=Usage(10, 10),
            latency_ms=0.0,
            simulated=True,
        )


def _offer_inputs() -> list[ReplayInput[Customer]]:
    return [ReplayInput("orig", f"orig:offer:c{n}", Customer(id=f"c{n}")) for n in range(10)]


async def _record_offers(store: Store, model: ScriptByInput) -> None:
    from seamline.boundary import Runtime

    b = offer_boundary(model)
    for item in _offer_inputs():
        await b.run(item.input, runtime=Runtime(store, VirtualClock(CAMPAIGN_START)), run_id="orig")


NEW: dict[str, dict[str, Any]] = {
    "c0": {"discount": "0.15"},
    "c1": {"discount": "0.15"},
    "c2": {"term_months": 24},
    "c3": {"discount": "0.90"},  # over the hard cap on every attempt: no commit
}


async def test_rederivation_counts_a_constructed_case_exactly(
    store: SqlStore, tmp_path: Path
) -> None:
    """Four of ten customers change: per-field rates, the changed-decision list and the
    review items are exactly those, and the original history is untouched."""
    await _record_offers(store, ScriptByInput({}))
    events_before = len(await all_events(store))
    rows_before = await store.list_rows(kind="sent_offer")
    scratch = open_store(f"sqlite:///{tmp_path}/scratch.db")
    try:
        report = await rederive(
            store,
            offer_boundary(ScriptByInput({})),
            _offer_inputs(),
            model=ScriptByInput(NEW),
            scratch=scratch,
            review_run="t1",
            spine="P3",
            threshold=0.30,
        )
    finally:
        await scratch.close()
    assert (report.instances, report.proposals_changed, report.verdicts_changed) == (10, 4, 1)
    assert report.decisions_changed == 4 and report.divergence_rate == pytest.approx(0.4)
    rates = {f.field: (f.compared, f.changed) for f in report.fields}
    assert rates == {
        "customer": (9, 0),
        "discount": (9, 2),
        "message": (9, 0),
        "term_months": (9, 1),
    }
    assert [(c.key, c.original, c.new, c.changes) for c in report.changed] == [
        ("orig:offer:c0", "committed", "committed", ("discount: 0.10→0.15",)),
        ("orig:offer:c1", "committed", "committed", ("discount: 0.10→0.15",)),
        ("orig:offer:c2", "committed", "committed", ("term_months: 12→24",)),
        (
            "orig:offer:c3",
            "committed",
            "failed:attempts_exhausted",
            ("committed→failed:attempts_exhausted",),
        ),
    ]
    assert report.recommendation is not None and report.recommendation.move == "P3 → P5"
    reviews = await store.list_approvals(limit=100)
    assert sorted(a.id for a in reviews) == [f"review:t1:orig:offer:c{n}" for n in range(4)]
    [c3] = [a for a in reviews if a.id.endswith("c3")]
    assert c3.kind == "escalation" and c3.status == "pending"
    assert c3.request["new"]["ending"] == "failed:attempts_exhausted"
    assert c3.request["original"]["candidate"]["discount"] == "0.10"
    assert len(await all_events(store)) == events_before
    assert await store.list_rows(kind="sent_offer") == rows_before
    again_scratch = open_store(f"sqlite:///{tmp_path}/again.db")
    try:
        await rederive(
            store,
            offer_boundary(ScriptByInput({})),
            _offer_inputs(),
            model=ScriptByInput(NEW),
            scratch=again_scratch,
            review_run="t1",
            spine="P3",
        )
    finally:
        await again_scratch.close()
    assert len(await store.list_approvals(limit=100)) == 4  # the same review is not queued twice
    for item in _offer_inputs():
        commit = await store.get_commit(item.key)
        assert commit is not None and Decimal(commit.result["discount"]) == Decimal("0.10")


def test_spine_move_is_advised_above_the_threshold_only() -> None:
    """P3 → P5 is advised strictly above the threshold, and never for a P5 spine."""
    assert recommend(0.25, spine="P3", threshold=0.20) is not None
    assert recommend(0.20, spine="P3", threshold=0.20) is None
    assert recommend(0.15, spine="P3", threshold=0.20) is None
    assert recommend(0.90, spine="P5", threshold=0.20) is None


# --- re-derivation: the renewal run v1 → v2 -------------------------------------------------------


async def test_rederiving_a_renewal_run_with_v2_diverges_and_queues_reviews(
    store: SqlStore, clock: VirtualClock, tmp_path: Path
) -> None:
    """typical-v2 changes some decisions; each is queued for review, and the original events,
    commit ledger and rows stay exactly as recorded."""
    await run_renewals(store, COHORT, clock=clock, seed=7)
    inputs = await renewal_inputs(store, COHORT, seed=7)
    events_before = [(e.seq, e.payload_json) for e in await all_events(store)]
    ledger_before = [await store.get_commit(i.key) for i in inputs]
    approvals_before = len(await store.list_approvals(limit=10_000))
    scratch = open_store(f"sqlite:///{tmp_path}/scratch.db")
    try:
        report = await rederive(
            store,
            v1_boundary(),
            inputs,
            model=SimulatedRenewalModel("typical-v2", seed=7, clock=VirtualClock(CAMPAIGN_START)),
            scratch=scratch,
            review_run="v2",
            spine="P5",
        )
    finally:
        await scratch.close()
    assert report.simulated and report.new_model == "sim:typical-v2"
    assert report.original_models[0] == "sim:typical-v1"
    assert 0 < report.decisions_changed <= report.instances == len(inputs)
    assert report.recommendation is None  # the renewal workload already runs on a P5 spine
    queued = [a for a in await store.list_approvals(limit=10_000) if a.id.startswith("review:v2:")]
    assert len(queued) == report.decisions_changed
    assert len(await store.list_approvals(limit=10_000)) == approvals_before + len(queued)
    assert [(e.seq, e.payload_json) for e in await all_events(store)] == events_before
    assert [await store.get_commit(i.key) for i in inputs] == ledger_before


# --- the CLI and the docs page ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One recorded 30-customer renewal job, recovered and re-derived through the CLI."""
    url = f"sqlite:///{tmp_path_factory.mktemp('replay')}/r.db"

    async def record() -> None:
        clock = VirtualClock(CAMPAIGN_START)
        st = open_store(url, clock=clock)
        try:
            await run_renewals(st, COHORT, clock=clock, seed=7)
        finally:
            await st.close()

    asyncio.run(record())
    runner = CliRunner()
    common = ["--store", url, "--limit", "30", "--seed", "7"]
    return {
        "recover": runner.invoke(replay_app, ["recover", *common]),
        "rederive": runner.invoke(replay_app, ["rederive", *common, "--spine", "P3"]),
    }


def test_cli_recovers_and_rederives_a_renewal_job(cli_outputs: dict[str, Any]) -> None:
    """`replay recover` says EXACT; `replay rederive` prints the per-field table, the changed
    decisions, the simulated label and (on a P3 spine) the P3 → P5 advice."""
    recover, rederived = cli_outputs["recover"], cli_outputs["rederive"]
    assert recover.exit_code == 0, recover.output
    assert "result: EXACT" in recover.output and "RECORDED" in recover.output
    assert rederived.exit_code == 0, rederived.output
    out = rederived.output
    assert "SIMULATED" in out and "divergence per field" in out and "changed decisions" in out
    assert "discount" in out and "RECOMMENDATION P3 → P5" in out


def test_cli_reports_a_missing_job(tmp_path: Path) -> None:
    """Asking for a job the store never ran is a typed error that says what to run."""
    result = CliRunner().invoke(
        replay_app, ["recover", "--store", f"sqlite:///{tmp_path}/empty.db", "--limit", "5"]
    )
    assert result.exit_code == 2
    # Rich wraps the message to the terminal's width; the words are what matter.
    said = " ".join(result.output.split())
    assert "no store at" in said and "seamline renewals run" in said


def test_docs_example_output_is_what_a_fresh_run_prints(cli_outputs: dict[str, Any]) -> None:
    """Every line of the example output in docs/replay.md appears in a fresh run's output."""
    page = (ROOT / "docs" / "replay.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- output: (\w+) -->\n```text\n(.*?)```", page, flags=re.S)
    assert {name for name, _ in blocks} == {"recover", "rederive"}
    for name, block in blocks:
        printed = cli_outputs[name].output.splitlines()
        for line in block.splitlines():
            if line.strip() and not line.startswith("$ "):
                assert line.rstrip() in (p.rstrip() for p in printed), line


# --- the billing scanner: a P3-spined workload -----------------------------------------------


@pytest.fixture(scope="module")
def billing_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small billing job (the P3-spined workload) recorded in a SQLite file."""
    from seamline.workloads.billing import run_billing
    from seamline.workloads.billing._credit import simulated_credit_model
    from seamline.workloads.billing._generate import BILLING_START

    url = f"sqlite:///{tmp_path_factory.mktemp('billing')}/b.db"

    async def go() -> None:
        clock = VirtualClock(BILLING_START)
        store = open_store(url, clock=clock)
        try:
            await run_billing(
                store,
                customers=synthetic_cohort(150, seed=7),
                cycles=3,
                seed=7,
                clock=clock,
                model=simulated_credit_model(seed=7, clock=clock),
            )
        finally:
            await store.close()

    asyncio.run(go())
    return url


class _HalvingCredits:
    """A constructed new model: the same credit decisions with every amount halved."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = "sim:halving-v1"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self._inner.complete(request)
        try:
            proposal = json.loads(response.text)
            proposal["amount"] = str((Decimal(proposal["amount"]) / 2).quantize(Decimal("0.01")))
        except (ValueError, KeyError, TypeError):
            return response  # malformed on purpose: rejected the same way on both sides
        return ModelResponse(
            json.dumps(proposal), self.name, "v1", response.usage, 0.0, simulated=True
        )


async def test_recovery_replay_of_a_billing_job_is_bit_exact(billing_store: str) -> None:
    """Every credit case is rebuilt from the P3 log and the ledger as it stood, and replays
    with identical prompt hashes, outputs, verdicts and commits."""
    from seamline.method._replay_billing import billing_boundary, billing_inputs, billing_jobs
    from seamline.workloads.billing._credit import simulated_credit_model

    store = open_store(billing_store)
    scratch = open_store("sqlite:///:memory:")
    try:
        (job,) = await billing_jobs(store)
        inputs = await billing_inputs(store, job)
        assert len(inputs) >= 10
        report = await recovery_replay(
            store, billing_boundary(simulated_credit_model()), inputs, scratch=scratch
        )
    finally:
        await scratch.close()
        await store.close()
    assert report.exact, report.mismatches[:3]
    assert report.reproduced == len(inputs)


async def test_rederiving_billing_counts_every_changed_amount_and_advises_p5(
    billing_store: str,
) -> None:
    """A new model that makes no mistakes but halves every credit changes the amount of every
    instance accepted on both sides (the original's accepted credits are the correct ones);
    on the P3-spined billing workload that divergence advises P3 → P5."""
    from seamline.method._replay_billing import billing_boundary, billing_inputs, billing_jobs
    from seamline.workloads.billing._credit import simulated_credit_model

    store = open_store(billing_store)
    scratch = open_store("sqlite:///:memory:")
    try:
        (job,) = await billing_jobs(store)
        inputs = await billing_inputs(store, job)
        report = await rederive(
            store,
            billing_boundary(simulated_credit_model()),
            inputs,
            model=_HalvingCredits(simulated_credit_model("perfect-v1", seed=7)),
            scratch=scratch,
            review_run="halving",
            spine="P3",
            decision_fields=("amount", "reason_code"),
            queue=False,
        )
    finally:
        await scratch.close()
        await store.close()
    amount = next(f for f in report.fields if f.field == "amount")
    assert amount.compared > 0 and amount.changed == amount.compared
    with_amount = [c for c in report.changed if any(x.startswith("amount:") for x in c.changes)]
    assert len(with_amount) == amount.changed
    assert report.divergence_rate >= amount.changed / report.instances
    assert report.recommendation is not None and report.recommendation.move == "P3 → P5"


def test_cli_replays_the_billing_job_with_its_adr_spine(billing_store: str) -> None:
    """`replay recover --workload billing` is EXACT; `rederive --workload billing` runs on the
    P3 spine the billing ADR chose, without --spine."""
    runner = CliRunner()
    recover = runner.invoke(
        replay_app, ["recover", "--workload", "billing", "--store", billing_store]
    )
    assert recover.exit_code == 0, recover.output
    assert "boundary billing-credit" in recover.output and "result: EXACT" in recover.output
    rederived = runner.invoke(
        replay_app,
        [
            "rederive",
            "--workload",
            "billing",
            "--store",
            billing_store,
            "--profile",
            "careless-v1",
            "--no-queue",
        ],
    )
    assert rederived.exit_code == 0, rederived.output
    said = " ".join(rederived.output.split())
    assert "boundary billing-credit" in said
    assert "RECOMMENDATION P3 → P5" in said or "(spine P3," in said


def test_workload_spines_are_the_ones_their_adrs_choose() -> None:
    """The replay command's default spine per workload is what `seamline adr` decides from
    that workload's answers file."""
    from seamline._cli_replay import WORKLOAD_SPINE
    from seamline.method import decide, load_answers

    for name, spine in WORKLOAD_SPINE.items():
        adr = decide(load_answers(ROOT / "examples" / "workloads" / name / "adr.yaml"))
        assert adr.spine.startswith(spine), (name, adr.spine)


def test_cli_refuses_an_unknown_workload(tmp_path: Path) -> None:
    """--workload names a replayable workload; anything else is a usage error naming them."""
    result = CliRunner().invoke(
        replay_app, ["recover", "--workload", "porting", "--store", f"sqlite:///{tmp_path}/x.db"]
    )
    assert result.exit_code == 2
    assert "renewal, billing" in " ".join(result.output.split())
