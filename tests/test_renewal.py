"""The 90-day renewal agent end to end: a small cohort through the whole window, the
hallucinated discount, injected instructions, the world's changes mid-flight (policy bump, end
of life, price change), approval timeouts and determinism. Kill-and-resume is in
test_renewal_resume.py; the world's changes in detail in test_renewal_world.py."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from seamline.cli import app
from seamline.clock import VirtualClock
from seamline.models import SimProfile, SimulatedModel
from seamline.store import Event, SqlStore, open_store
from seamline.workloads.renewal import (
    CAMPAIGN_START,
    TERMINAL,
    RenewalSummary,
    run_renewals,
    synthetic_cohort,
)
from seamline.workloads.renewal._agent import support_notes
from seamline.workloads.renewal._offer import RenewalBehaviour

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
COHORT = synthetic_cohort(160, seed=11)
CAPS = {
    ("2026.11", "standard"): Decimal("0.30"),
    ("2026.11", "seniors"): Decimal("0.35"),
    ("2026.12", "standard"): Decimal("0.25"),
    ("2026.12", "seniors"): Decimal("0.30"),
}


def run(url: str, fn: Callable[[SqlStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = open_store(url)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def job(url: str, customers: Any = COHORT, *, seed: int = 7, model: Any = None) -> RenewalSummary:
    async def go() -> RenewalSummary:
        clock = VirtualClock(CAMPAIGN_START)
        store = open_store(url, clock=clock)
        try:
            return await run_renewals(
                store, customers, seed=seed, clock=clock, model=model(clock) if model else None
            )
        finally:
            await store.close()

    return asyncio.run(go())


async def events(store: SqlStore, prefix: str | None = None) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000, stream_prefix=prefix):
        out.extend(page)
        after = page[-1].seq
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def finished(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RenewalSummary]]:
    """One run of the cohort per backend, shared by the checks below."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('renewal')}/r.db"
        yield url, job(url)
        return
    import uuid

    import psycopg

    from tests.conftest import _pg_base, pg_schema_url

    base = _pg_base()
    try:
        psycopg.connect(base, connect_timeout=3).close()
    except psycopg.Error:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is required in CI")
        pytest.skip("PostgreSQL not reachable")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = pg_schema_url(base, schema)
    yield url, job(url)
    _drop(base, schema)


def _drop(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_every_contract_reaches_a_terminal_state(finished: tuple[str, RenewalSummary]) -> None:
    """Every customer ends renewed, renewed with offer, restructured, churned or expired,
    exactly at day 0 of its own window."""
    _, s = finished
    assert s.finished == len(COHORT) and not s.unfinished
    assert set(s.outcomes) <= set(TERMINAL)
    assert set(s.terminal_days) == {90}
    assert sum(sum(c.values()) for c in s.by_contract.values()) == len(COHORT)


def test_each_offer_is_sent_once_and_within_the_policy_in_force(
    finished: tuple[str, RenewalSummary],
) -> None:
    """One outbox commit per sent offer; the discount it really gives at the list price in
    force when sent is within the cap of the policy version it was sent under, and both the
    version and the list price are recorded on the commit."""
    url, s = finished
    customers = {c.customer_id: c for c in COHORT}

    async def check(store: SqlStore) -> None:
        sent = [e for e in await events(store, "outbox") if e.type == "offer_sent"]
        assert len(sent) == s.offers_sent > 0
        assert len({e.payload["customer"] for e in sent}) == len(sent)
        for e in sent:
            tenant = "seniors" if customers[e.payload["customer"]].senior_citizen else "standard"
            assert Decimal(e.payload["discount"]) <= CAPS[(e.payload["policy"], tenant)]
            commit = await store.get_commit(f"{s.job}:{e.payload['customer']}:outreach")
            assert commit is not None and commit.result["policy"] == e.payload["policy"]
            assert commit.result["list_price"] == e.payload["list_price"]
            price = Decimal(commit.result["offer"]["monthly_price"])
            assert price >= Decimal(e.payload["list_price"]) * Decimal("0.60")

    run(url, check)


def test_policy_bump_and_end_of_life_reverify_offers_in_flight(
    finished: tuple[str, RenewalSummary],
) -> None:
    """The world publishes its three changes on the job's catalog stream; offers made before
    them are re-verified and some go back to the model; no DSL offer is ever sent, since its
    end of life takes effect for every contract before its day -30."""
    url, s = finished
    assert s.reassessed > 0
    assert {"plan_end_of_life", "discount.hard_cap"} <= set(s.reassess_reasons)

    async def check(store: SqlStore) -> None:
        sent = [e.payload for e in await events(store, "outbox") if e.type == "offer_sent"]
        assert sent and all(p["plan"] != "dsl-basic" for p in sent)
        catalog = [e.type for e in await store.read_stream(f"catalog:{s.job}")]
        assert catalog == ["PolicyVersionChanged", "ProductEndOfLife", "PriceChanged"]

    run(url, check)
    assert [kind for kind, _ in s.world] == [
        "PolicyVersionChanged",
        "ProductEndOfLife",
        "PriceChanged",
    ]


def test_approvals_past_their_sla_are_denied(finished: tuple[str, RenewalSummary]) -> None:
    """A close approval nobody decided in time expires to deny; that customer gets no
    discounted renewal."""
    url, s = finished

    async def check(store: SqlStore) -> None:
        expired = [
            a
            for a in await store.list_approvals(status="expired", limit=10_000)
            if a.id.startswith(s.job)
        ]
        assert expired, "the simulated approvers should have let at least one SLA pass"
        for a in expired:
            assert a.decision == {"decision": "deny", "reason": "SLA passed"}
            row = await store.get_row(a.row_id or "")
            assert row is not None and row.state in ("renewed", "churned")

    run(url, check)


def _always(profile: SimProfile) -> Callable[[VirtualClock], SimulatedModel]:
    return lambda clock: SimulatedModel(RenewalBehaviour(), profile=profile, seed=3, clock=clock)


def test_hallucinated_discount_is_never_sent_and_goes_to_a_person(tmp_path: Path) -> None:
    """A model that always proposes 90% off: every customer is escalated to a person, and no
    90% offer is ever committed or sent."""
    hallucinating = SimProfile("hallucinating", "v1", out_of_policy_rate=1.0, retry_factor=1.0)
    url = f"sqlite:///{tmp_path}/h.db"
    cohort = COHORT[:30]
    s = job(url, cohort, model=_always(hallucinating))
    # at least once each; a re-assessment after the end of life escalates again
    assert s.hallucinations_escalated == s.escalations >= len(cohort)

    async def check(store: SqlStore) -> None:
        for e in await events(store):
            if e.type in ("offer_sent", "committed"):
                assert "0.90" not in str(e.payload), e
        escalation = (await store.list_approvals(limit=1000))[0]
        assert escalation.kind == "escalation"
        assert escalation.request["tried"][0]["rejects"][0]["reason_code"] == (
            "hallucinated_discount"
        )

    run(url, check)


def test_injected_instructions_never_lead_to_an_out_of_policy_commit(tmp_path: Path) -> None:
    """Customers whose support notes carry planted instructions, and a model that obeys them
    every time: nothing out of policy is committed and the injections are caught."""
    victims = [
        c
        for c in synthetic_cohort(1500, seed=5)
        if "discount" in support_notes(c, 7).lower() or "credit" in support_notes(c, 7).lower()
    ][:20]
    assert len(victims) >= 10
    gullible = SimProfile("gullible", "v1", injection_compliance_rate=1.0, retry_factor=1.0)
    url = f"sqlite:///{tmp_path}/i.db"
    s = job(url, victims, model=_always(gullible))
    assert s.injection_blocked + s.hallucinations_escalated >= len(victims)
    assert s.injection_blocked > 0

    async def check(store: SqlStore) -> None:
        for e in await events(store, f"sdb:renewal-offer:{s.job}/"):
            if e.type == "committed":
                offer = e.payload["result"]
                assert Decimal(offer["discount"]) <= Decimal("0.35")
                assert not re.search(r"ignore|disregard|admin mode", offer["message"], re.I)

    run(url, check)


def test_same_seed_same_summary(tmp_path: Path) -> None:
    """Two runs with one seed on fresh stores agree on every figure of the summary."""
    cohort = COHORT[:50]
    a = job(f"sqlite:///{tmp_path}/a.db", cohort)
    b = job(f"sqlite:///{tmp_path}/b.db", cohort)
    assert a.figures() == b.figures()
    assert a.offers_sent > 0 and a.commits > 0


def test_cli_run_prints_labels_and_writes_a_report(tmp_path: Path) -> None:
    """`seamline renewals run` says what is simulated, shows the summary, writes the report."""
    report = tmp_path / "out" / "renewals.html"
    result = CliRunner().invoke(
        app,
        [
            "renewals",
            "run",
            "--limit",
            "25",
            "--store",
            f"sqlite:///{tmp_path}/c.db",
            "--report",
            str(report),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "SYNTHETIC cohort of 25 customers" in text
    assert "SIMULATED model sim:typical-v1" in text
    assert "renewal windows closed" in text and "campaign days (virtual)" in text
    assert "offers sent" in text and "discounts granted (mean)" in text
    assert "of which sampled for human review" in text and "budget fallbacks at 80%" in text
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "SYNTHETIC" in page


def test_cli_refuses_an_unknown_model_spec(tmp_path: Path) -> None:
    """A model spec that is neither sim: nor openai: is a clear error, exit 2."""
    result = CliRunner().invoke(
        app,
        [
            "renewals",
            "run",
            "--limit",
            "2",
            "--model",
            "gpt5",
            "--store",
            f"sqlite:///{tmp_path}/x.db",
        ],
    )
    assert result.exit_code == 2
    assert "use sim:PROFILE" in " ".join(result.output.split())
