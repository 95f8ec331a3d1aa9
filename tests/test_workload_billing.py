"""The billing-anomaly scanner end to end on both backends: anomalies found and credited
within policy, nothing credited twice, replay on a fork, saga compensation, model identity on
every model-produced event, the CLI and the README."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import pytest
from typer.testing import CliRunner

from seamline.clock import VirtualClock
from seamline.method import decide, load_answers, render
from seamline.models import SimProfile, SimulatedModel
from seamline.patterns import publish
from seamline.store import Event, SqlStore, open_store
from seamline.workloads.billing import (
    ADR,
    BILLING_START,
    BOUNDARY,
    MODEL_DERIVED,
    REGISTRY,
    BillingSummary,
    CreditBehaviour,
    CreditScanner,
    History,
    ModelIdentity,
    NotificationFailed,
    SimulatedNotifier,
    billing_events,
    decisions,
    default_policy,
    detect,
    job_id,
    log_stream,
    replay_billing,
    run_billing,
    simulated_credit_model,
)
from seamline.workloads.billing._cli import cli
from seamline.workloads.billing._credit import monthly_cap
from seamline.workloads.billing._events import (
    AnomalyDetected,
    ChargePosted,
    CreditCompensated,
    CreditNotice,
    OutageRecorded,
    PlanChanged,
)
from seamline.workloads.renewal import synthetic_cohort
from tests.conftest import pg_schema_url

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "examples" / "workloads" / "billing" / "README.md"
COHORT = synthetic_cohort(20, seed=19)  # 131 facts over 6 cycles, all three anomaly types
CYCLES, SEED = 6, 7
CAP = Decimal("100.00")
AFTER = datetime(2026, 7, 1, tzinfo=UTC)  # when the checks below run: after the sixth cycle
T = TypeVar("T")


async def scan(store: SqlStore, clock: VirtualClock, **options: Any) -> BillingSummary:
    return await run_billing(
        store, customers=COHORT, cycles=CYCLES, seed=SEED, clock=clock, **options
    )


def on(url: str, check: Callable[[SqlStore, VirtualClock], Awaitable[T]]) -> T:
    """Run ``check`` against the store at ``url``, with a virtual clock after the run."""

    async def go() -> T:
        clock = VirtualClock(AFTER)
        store = open_store(url, clock=clock)
        try:
            return await check(store, clock)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def billed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, BillingSummary]]:
    """One run of the cohort per backend, shared by the checks that only read it (or add a
    replay branch beside it)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('billing')}/b.db"
        yield url, asyncio.run(_first_run(url))
        return
    import psycopg

    base = str(request.getfixturevalue("pg_base_url"))  # skips, or fails in CI, like the rest
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = pg_schema_url(base, schema)
    try:
        yield url, asyncio.run(_first_run(url))
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def _first_run(url: str) -> BillingSummary:
    clock = VirtualClock(BILLING_START)
    store = open_store(url, clock=clock)
    try:
        return await scan(store, clock)
    finally:
        await store.close()


async def events(store: SqlStore, prefix: str | None = None) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000, stream_prefix=prefix):
        out.extend(page)
        after = page[-1].seq
    return out


async def ledger(store: SqlStore, scope: str) -> list[Event]:
    return await events(store, f"ledger:{scope}:")


async def net_credits(store: SqlStore, scope: str) -> dict[str, Decimal]:
    net: dict[str, Decimal] = defaultdict(Decimal)
    for e in await ledger(store, scope):
        sign = 1 if e.type == "CreditPosted" else -1
        net[e.payload["credit_id"]] += sign * Decimal(e.payload["amount"])
    return net


async def decided(store: SqlStore, scope: str) -> list[pydantic.BaseModel]:
    return [REGISTRY.decode(e) for e in await store.read_stream(f"credits:{scope}", limit=10_000)]


async def detected(store: SqlStore, scope: str) -> dict[str, AnomalyDetected]:
    return {f.anomaly_id: f for f in await decided(store, scope) if isinstance(f, AnomalyDetected)}


class FailingNotifier:
    """A notification service that refuses every notice."""

    def __init__(self) -> None:
        self.calls = 0

    async def notify(
        self, notice: CreditNotice, *, scope: str, key: str, identity: ModelIdentity
    ) -> Mapping[str, Any]:
        self.calls += 1
        raise NotificationFailed(f"gateway refused the notice of {notice.credit_id}")


# --- end to end, both backends ------------------------------------------------------------------


def test_anomalies_are_found_and_credited_within_policy(
    billed: tuple[str, BillingSummary],
) -> None:
    """All three anomaly types are found; each credit is issued once, for the anomaly's
    customer and cycle, with its reason code, and the gate's allow audited beside it."""
    url, s = billed
    assert set(s.anomalies) == {"double_charge", "charge_after_downgrade", "outage"}
    assert s.events == len(billing_events(COHORT, cycles=CYCLES, seed=SEED))
    assert s.committed > 0
    assert s.committed + s.denied_total + s.escalated + s.compensated == s.anomalies_found
    assert s.simulated and s.models == ("sim:typical-v1",)

    async def check(store: SqlStore, clock: VirtualClock) -> None:
        found = await detected(store, s.job)
        posted = [e for e in await ledger(store, s.job) if e.type == "CreditPosted"]
        assert len(posted) == s.committed + s.compensated
        assert len({e.payload["credit_id"] for e in posted}) == len(posted)
        for e in posted:
            anomaly = found[e.payload["credit_id"]]
            assert e.payload["reason_code"] == anomaly.type
            where = (e.payload["customer_id"], e.payload["cycle"])
            assert where == (anomaly.customer_id, anomaly.cycle)
        allows = [
            a
            for a in await store.audit_entries(limit=10_000)
            if a.actor == "gate:billing-credits" and a.decision == "allow"
        ]
        assert sorted(a.subject for a in allows) == sorted(e.payload["credit_id"] for e in posted)
        assert {a.policy_version for a in allows} == {"2026.11"}
        assert s.credited == sum(Decimal(e.payload["amount"]) for e in posted) - s.reversed

    on(url, check)


def test_no_credit_exceeds_its_anomaly_or_the_monthly_cap(
    billed: tuple[str, BillingSummary],
) -> None:
    """Across the run, every posting is at most its anomalous amount, and no customer's
    cycle is credited more than the cap, net of reversals."""
    url, s = billed

    async def check(store: SqlStore, clock: VirtualClock) -> None:
        amounts = {aid: f.amount for aid, f in (await detected(store, s.job)).items()}
        per_cycle: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
        for e in await ledger(store, s.job):
            amount = Decimal(e.payload["amount"])
            if e.type == "CreditPosted":
                assert amount <= amounts[e.payload["credit_id"]]
            sign = 1 if e.type == "CreditPosted" else -1
            per_cycle[(e.payload["customer_id"], e.payload["cycle"])] += sign * amount
        assert per_cycle and max(per_cycle.values()) <= CAP

    on(url, check)


async def test_the_cap_binds_and_a_full_cycle_is_denied_without_a_model_call(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A 118.00 double charge is credited 100.00 (the cap), even by a model that often
    proposes too much; an outage in the same cycle is then denied before any model call."""
    scope = "cap-case"
    facts: list[pydantic.BaseModel] = [
        ChargePosted(event_id="c1", customer_id="0001-AAAAA", cycle=1, amount=Decimal("118.00")),
        ChargePosted(event_id="c2", customer_id="0001-AAAAA", cycle=1, amount=Decimal("118.00")),
        OutageRecorded(event_id="o1", customer_id="0001-AAAAA", cycle=1, hours=72),
    ]
    for fact in facts:
        await publish(store, REGISTRY, log_stream(scope), fact)
    careless = SimProfile("overreaching", "v1", out_of_policy_rate=0.6, retry_factor=0.5)
    scanner = CreditScanner(
        store,
        scope=scope,
        model=SimulatedModel(CreditBehaviour(), profile=careless, seed=2, clock=clock),
        clock=clock,
        notifier=SimulatedNotifier(store, seed=SEED, bounce_rate=0.0),
    )
    assert await scanner.drain() == 3
    [first, second] = await decisions(store, scope)
    assert (first.outcome, first.amount) == ("issued", CAP)
    assert (second.outcome, second.detail) == ("denied:scanner", "credit.monthly_cap")
    assert await store.read_stream(f"sdb:{BOUNDARY}:{scope}:{BOUNDARY}:outage:o1") == []


async def test_a_scanner_resumed_at_its_offset_judges_on_the_whole_log_before_it(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Each event handled by a fresh scanner instance (as after a crash): a repeated charge
    and a charge after a downgrade whose evidence lies before the saved offset are still
    found, and the decisions equal a replay's from offset 0."""
    scope = "resumed"
    customer = "0002-BBBBB"
    for fact in (
        ChargePosted(event_id="a1", customer_id=customer, cycle=1, amount=Decimal("72.00")),
        PlanChanged(
            event_id="p",
            customer_id=customer,
            effective_cycle=2,
            from_price=Decimal("72.00"),
            to_price=Decimal("40.00"),
        ),
        ChargePosted(event_id="a2", customer_id=customer, cycle=1, amount=Decimal("72.00")),
        ChargePosted(event_id="b1", customer_id=customer, cycle=2, amount=Decimal("72.00")),
    ):
        await publish(store, REGISTRY, log_stream(scope), fact)
    handled = []
    for _ in range(4):
        fresh = CreditScanner(
            store,
            scope=scope,
            model=simulated_credit_model("perfect-v1", clock=clock),
            clock=clock,
            notifier=SimulatedNotifier(store, seed=SEED, bounce_rate=0.0),
            batch=1,
        )
        handled.append(await fresh.poll())
    assert handled == [1, 1, 1, 1]
    found = [(d.anomaly_id, d.outcome, d.amount) for d in await decisions(store, scope)]
    assert found == [
        ("double_charge:a2", "issued", Decimal("72.00")),
        ("charge_after_downgrade:b1", "issued", Decimal("32.00")),
    ]
    assert (await replay_billing(store, scope, clock=clock)).identical


async def test_a_spent_token_budget_stops_model_calls_and_denies_at_the_gate(
    store: SqlStore, clock: VirtualClock
) -> None:
    """With a token budget smaller than one proposal, the proposal that spent it is denied
    by the gate's budget check (audited), and no later anomaly calls the model at all."""
    scope = "thrifty"
    for n, customer in enumerate(("0003-CCCCC", "0004-DDDDD", "0005-EEEEE")):
        for copy in (1, 2):
            await publish(
                store,
                REGISTRY,
                log_stream(scope),
                ChargePosted(
                    event_id=f"d{n}-{copy}", customer_id=customer, cycle=1, amount=Decimal("30.00")
                ),
            )
    scanner = CreditScanner(
        store,
        scope=scope,
        model=simulated_credit_model("perfect-v1", clock=clock),
        clock=clock,
        notifier=SimulatedNotifier(store, seed=SEED, bounce_rate=0.0),
        token_budget=50,
    )
    await scanner.drain()
    outcomes = [(d.outcome, d.detail) for d in await decisions(store, scope)]
    assert outcomes == [
        ("denied:gate", "budget.cap"),
        ("denied:boundary", "budget_exhausted"),
        ("denied:boundary", "budget_exhausted"),
    ]
    calls = [e for e in await events(store, f"sdb:{BOUNDARY}:{scope}:") if e.type == "proposed"]
    assert len(calls) == 1 and await ledger(store, scope) == []
    [deny] = [a for a in await store.audit_entries(limit=100) if a.decision == "deny"]
    assert (deny.actor, deny.details["gate"], deny.subject) == (
        "gate:billing-credits",
        "budget",
        "double_charge:d0-2",
    )


def test_running_the_scanner_twice_credits_nothing_twice(
    billed: tuple[str, BillingSummary],
) -> None:
    """A second run resumes with nothing to do, and a scanner that lost its offset and reads
    the whole log again re-issues nothing, calls no model and writes no new decision."""
    url, first = billed

    async def check(store: SqlStore, clock: VirtualClock) -> None:
        postings = await ledger(store, first.job)
        recorded = await store.read_stream(f"credits:{first.job}", limit=10_000)
        again = await scan(store, clock)
        assert replace(again, wall_seconds=0.0) == replace(first, wall_seconds=0.0)
        amnesiac = CreditScanner(
            store,
            scope=first.job,
            model=simulated_credit_model(seed=99, clock=clock),
            clock=clock,
            notifier=FailingNotifier(),
            consumer=f"billing-scanner-{uuid.uuid4().hex[:6]}",
        )
        assert await amnesiac.drain() == first.events
        assert await ledger(store, first.job) == postings
        assert await store.read_stream(f"credits:{first.job}", limit=10_000) == recorded
        assert (await store.usage_totals(first.job)).total_tokens == first.tokens

    on(url, check)


def test_replaying_the_log_on_a_fork_reproduces_every_decision(
    billed: tuple[str, BillingSummary],
) -> None:
    """The scanner re-run from offset 0 on a fork, with the recorded proposals, reaches the
    same decision for every anomaly (outcome, amount, reason, prompt hash), credits the
    branch's sandbox ledger alike, and leaves the original's records untouched; a fork half
    way reproduces the decisions up to there."""
    url, s = billed

    async def check(store: SqlStore, clock: VirtualClock) -> None:
        report = await replay_billing(store, s.job, clock=clock)
        assert report.identical and report.original_untouched
        assert len(report.replayed) == s.anomalies_found > 0
        assert report.copied == s.events and report.branch.startswith(f"{s.job}@replay-")
        assert all(d.prompt_hash for d in report.replayed if d.outcome == "issued")
        assert await net_credits(store, report.branch) == await net_credits(store, s.job)
        replayed = await events(store, f"sdb:{BOUNDARY}:{report.branch}:")
        original = await events(store, f"sdb:{BOUNDARY}:{s.job}:")
        assert sorted(e.payload["raw"] for e in replayed if e.type == "proposed") == sorted(
            e.payload["raw"] for e in original if e.type == "proposed"
        )
        half = await replay_billing(store, s.job, clock=clock, at=s.events // 2)
        assert half.identical and half.branch != report.branch
        assert 0 < len(half.replayed) < len(report.replayed)

    on(url, check)


async def test_a_failed_notification_reverses_the_credit_exactly_once(
    store: SqlStore, clock: VirtualClock
) -> None:
    """When the notice cannot be sent the saga reverses the posted credit: one reversal per
    posting, none again on a rescan, and the replay compensates the same credits."""
    notifier = FailingNotifier()
    customers = COHORT[:10]
    s = await run_billing(
        store, customers=customers, cycles=CYCLES, seed=SEED, clock=clock, notifier=notifier
    )
    assert s.compensated > 0 and s.committed == 0 and s.credited == 0
    entries = await ledger(store, s.job)
    kinds = Counter((e.payload["credit_id"], e.type) for e in entries)
    credits = {cid for cid, _ in kinds}
    assert len(credits) == s.compensated == notifier.calls
    assert all(kinds[(c, "CreditPosted")] == kinds[(c, "CreditReversed")] == 1 for c in credits)
    compensations = [f for f in await decided(store, s.job) if isinstance(f, CreditCompensated)]
    assert {(f.failed_step, f.undone) for f in compensations} == {
        ("notify_customer", ("post_credit",))
    }
    rescanner = CreditScanner(
        store,
        scope=s.job,
        model=simulated_credit_model(seed=SEED, clock=clock),
        clock=clock,
        notifier=notifier,
        consumer="billing-scanner-again",
    )
    await rescanner.drain()
    assert await ledger(store, s.job) == entries and notifier.calls == s.compensated
    report = await replay_billing(store, s.job, clock=clock)
    assert report.identical
    assert {d.outcome for d in report.replayed} == {"compensated"}


def test_every_model_produced_event_carries_model_version_and_prompt_hash(
    billed: tuple[str, BillingSummary],
) -> None:
    """Proposals, accepts and every event derived from a proposal (decision, ledger posting
    or reversal, notice) carry model_version and prompt_hash, on the run and on a replay;
    the billing facts and detections, which no model produced, carry neither."""
    url, s = billed

    async def check(store: SqlStore, clock: VirtualClock) -> None:
        await replay_billing(store, s.job, clock=clock, at=s.events // 2)
        everything = await events(store)
        by_type = Counter(e.type for e in everything)
        assert by_type["CreditProposed"] and by_type["CreditPosted"] and by_type["CreditNotice"]
        for e in everything:
            from_model = e.type in MODEL_DERIVED or (
                e.stream.startswith(f"sdb:{BOUNDARY}:") and e.type in ("proposed", "accepted")
            )
            if from_model:
                assert e.model_version and e.prompt_hash, e
            if e.type in ("ChargePosted", "PlanChanged", "OutageRecorded", "AnomalyDetected"):
                assert e.model_version is None and e.prompt_hash is None, e
        accepted = {
            e.stream.rsplit(f":{BOUNDARY}:", 1)[1]: e.prompt_hash
            for e in everything
            if e.type == "accepted" and e.stream.startswith(f"sdb:{BOUNDARY}:{s.job}:")
        }
        proposed = {
            e.payload["anomaly_id"]: e.prompt_hash
            for e in everything
            if e.type == "CreditProposed" and e.stream == f"credits:{s.job}"
        }
        assert proposed == accepted

    on(url, check)


async def test_out_of_policy_proposals_are_rejected_and_never_issued(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A model whose every proposal breaks a rule credits nothing: each anomaly goes to a
    person with the rejects it met, the ledger stays empty, and a replay reaches the same
    decisions without opening a single escalation."""
    always_wrong = SimProfile("out-of-policy", "v1", out_of_policy_rate=1.0, retry_factor=1.0)
    model = SimulatedModel(CreditBehaviour(), profile=always_wrong, seed=SEED, clock=clock)
    customers = COHORT[:10]
    s = await run_billing(
        store, customers=customers, cycles=CYCLES, seed=SEED, clock=clock, model=model
    )
    assert s.anomalies_found > 0 and s.escalated == s.anomalies_found
    assert s.committed == s.proposed == 0 and await ledger(store, s.job) == []
    assert set(s.rejects) <= {
        "exceeds_anomalous_amount",
        "reason_mismatch",
        "above_max",
        "forbidden_text",
    }
    escalations = [a for a in await store.list_approvals(limit=1000) if a.kind == "escalation"]
    assert len(escalations) == s.escalated
    assert all(a.request["tried"][0]["rejects"] for a in escalations)
    report = await replay_billing(store, s.job, clock=clock)
    assert report.identical and {d.outcome for d in report.replayed} == {"escalated"}
    assert len(await store.list_approvals(limit=1000)) == len(escalations)  # a branch asks no one


# --- pure parts -----------------------------------------------------------------------------


def test_detection_reads_only_the_log_before_each_event() -> None:
    """Each rule fires on the event that reveals the anomaly, judged on the earlier facts:
    a repeated charge, a charge above the downgraded price, an outage of 4 h or more in a
    billed cycle (pro rata); a short outage, a correct charge and an outage in a cycle never
    billed reveal nothing."""
    history = History()
    log: list[pydantic.BaseModel] = [
        ChargePosted(event_id="a1", customer_id="1", cycle=1, amount=Decimal("72.00")),
        OutageRecorded(event_id="o0", customer_id="1", cycle=1, hours=3),
        ChargePosted(event_id="a2", customer_id="1", cycle=1, amount=Decimal("72.00")),
        PlanChanged(
            event_id="p",
            customer_id="1",
            effective_cycle=2,
            from_price=Decimal("72.00"),
            to_price=Decimal("40.00"),
        ),
        ChargePosted(event_id="b1", customer_id="1", cycle=2, amount=Decimal("72.00")),
        OutageRecorded(event_id="o1", customer_id="1", cycle=2, hours=36),
        ChargePosted(event_id="c1", customer_id="1", cycle=3, amount=Decimal("40.00")),
        OutageRecorded(event_id="o9", customer_id="1", cycle=9, hours=48),
    ]
    found = []
    for fact in log:
        found += [(a.type, a.id, a.amount) for a in detect(history, fact)]
        history.record(fact)
    assert found == [
        ("double_charge", "double_charge:a2", Decimal("72.00")),
        ("charge_after_downgrade", "charge_after_downgrade:b1", Decimal("32.00")),
        ("outage", "outage:o1", Decimal("2.00")),
    ]


def test_the_same_seed_gives_the_same_log_and_more_cycles_extend_it() -> None:
    """The simulated billing log is a function of the seed; eight cycles start with the six."""
    six = billing_events(COHORT, cycles=6, seed=SEED)
    assert six == billing_events(COHORT, cycles=6, seed=SEED)
    assert billing_events(COHORT, cycles=8, seed=SEED)[: len(six)] == six
    assert six != billing_events(COHORT, cycles=6, seed=SEED + 1)
    assert job_id(COHORT, SEED) == job_id(list(COHORT), SEED) != job_id(COHORT[1:], SEED)


def test_the_monthly_cap_is_read_from_the_versioned_policy_file() -> None:
    """The cap the scanner applies and the prompt states is the policy file's
    credit.monthly_cap rule: 100.00 in billing-credits 2026.11."""
    policy = default_policy()
    assert (policy.policy, policy.version) == ("billing-credits", "2026.11")
    assert monthly_cap(policy) == CAP


# --- the command line and the docs -----------------------------------------------------------


def test_cli_run_prints_the_summary_and_labels_what_is_simulated(tmp_path: Path) -> None:
    """`seamline billing run` says the data, the model and the notices are simulated, prints
    the summary and the replay's verdict, and on a second run credits nothing more."""
    args = ["run", "--store", f"sqlite:///{tmp_path}/b.db", "--customers", "20", "--cycles", "3"]
    first = CliRunner().invoke(cli, args, terminal_width=200)
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    assert "SYNTHETIC cohort of 20 customers" in text
    assert "SIMULATED model sim:typical-v1" in text
    assert "notice bounces are SIMULATED" in text
    for label in ("anomalies found", "credits committed", "money credited (net)", "SIMULATED"):
        assert label in text
    assert re.search(r"(\d+)/\1 decisions identical; nothing issued in the original", text)
    net = re.compile(r"money credited \(net\)\s*│\s*([\d,.]+)")
    credited = net.search(first.output)
    second = CliRunner().invoke(cli, [*args, "--no-replay"], terminal_width=200)
    assert second.exit_code == 0, second.output
    again = net.search(second.output)
    assert credited and again and credited.group(1) == again.group(1) != "0.00"
    assert "replay on fork" not in second.output


def test_cli_refuses_an_unknown_profile(tmp_path: Path) -> None:
    """An unknown simulated profile is a clear error, exit 2."""
    result = CliRunner().invoke(
        cli, ["run", "--store", f"sqlite:///{tmp_path}/x.db", "--profile", "psychic-v9"]
    )
    assert result.exit_code == 2
    assert "unknown simulated profile" in " ".join(result.output.split())


def test_adr_is_the_methods_record_and_the_readmes() -> None:
    """The ADR constant is the six lines ``seamline adr`` decides from the workload's answers
    (autonomous; P3 because the log is the truth; P2; P4; dated 2026-11-21), with the model
    the workload runs, and the README shows the same six lines."""
    answers = load_answers(ROOT / "examples" / "workloads" / "billing" / "adr.yaml")
    decided = render(decide(answers)).splitlines()
    lines = ADR.splitlines()
    assert len(lines) == 6 and lines[:5] == decided[:5]
    assert lines[5] == "6. Date and model: 2026-11-21; sim:typical-v1"
    assert decided[5].startswith("6. Date and model: 2026-11-21; ")
    assert lines[1].startswith("2. Spine: P3") and "the log must be the truth" in lines[1]
    assert "P2" in lines[2] and "P4" in lines[3]
    assert simulated_credit_model().name == "sim:typical-v1"
    text = README.read_text(encoding="utf-8")
    block = text.split("## Architecture decision record", 1)[1].split("```text\n", 1)[1]
    assert block.split("\n```", 1)[0].splitlines() == lines


def test_readme_example_runs_and_prints_what_it_says() -> None:
    """The README's Python example prints what the comments beside it say."""
    text = README.read_text(encoding="utf-8")
    [code] = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {"__name__": "__main__"})
    expected = [line.split("  # ", 1)[1] for line in code.splitlines() if "print(" in line]
    assert printed.getvalue().splitlines() == expected
