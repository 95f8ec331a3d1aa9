"""The world changes mid-flight (P3): the catalog the rows read from the job's stream, the end
of life of DSL taking effect at each contract's own day -47, the price change re-verified at
send time, and the recorded inputs rebuilding exactly what the model was shown."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from seamline.clock import VirtualClock
from seamline.method import ReplayInput, recovery_replay
from seamline.store import Event, SqlStore, UnitOfWork, open_store
from seamline.workloads.renewal import (
    CAMPAIGN_START,
    Catalog,
    Customer,
    PriceChanged,
    ProductEndOfLife,
    RenewalSummary,
    SimulatedRenewalModel,
    catalog_at,
    recheck,
    recorded_inputs,
    run_renewals,
    synthetic_cohort,
)
from seamline.workloads.renewal._catalog import CATALOG_EVENTS
from seamline.workloads.renewal._job import build_agent
from seamline.workloads.renewal._offer import PolicyBook, offer_boundary, stable_fraction

DAY = timedelta(days=1)
EOL_AT = CAMPAIGN_START + 43 * DAY
PRICE_AT = CAMPAIGN_START + 60 * DAY


def opens(c: Customer) -> datetime:
    return CAMPAIGN_START + int(stable_fraction("window", c.customer_id) * 90) * DAY


def _cohort() -> tuple[Customer, ...]:
    """DSL customers whose windows open before the end of life is announced, and fibre
    customers whose offers are made before the price change."""
    pool = synthetic_cohort(400, seed=11)
    dsl = [c for c in pool if c.internet_service == "DSL" and opens(c) < EOL_AT]
    fiber = [c for c in pool if c.internet_service == "Fiber optic" and opens(c) < PRICE_AT]
    return tuple(dsl[:40] + fiber[:60])


COHORT = _cohort()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, RenewalSummary]:
    url = f"sqlite:///{tmp_path_factory.mktemp('world')}/w.db"

    async def go() -> RenewalSummary:
        clock = VirtualClock(CAMPAIGN_START)
        store = open_store(url, clock=clock)
        try:
            return await run_renewals(store, COHORT, clock=clock, seed=7)
        finally:
            await store.close()

    return url, asyncio.run(go())


def read(url: str, stream: str) -> list[Event]:
    async def go() -> list[Event]:
        store = open_store(url)
        try:
            out: list[Event] = []
            while page := await store.read_stream(stream, after=out[-1].stream_seq if out else 0):
                out.extend(page)
            return out
        finally:
            await store.close()

    return asyncio.run(go())


def moves(url: str, job: str, c: Customer) -> list[dict[str, Any]]:
    return [
        e.payload
        for e in read(url, f"wf:renewal:{job}:{c.customer_id}")
        if e.type == "transitioned"
    ]


def _event(seq: int, change: Any) -> Event:
    return Event(
        seq=seq,
        stream="catalog:j",
        stream_seq=seq,
        type=CATALOG_EVENTS.name_of(change),
        payload_json=change.model_dump_json(),
        model_version=None,
        prompt_hash=None,
        causation_id=None,
        idempotency_key=None,
        recorded_at=CAMPAIGN_START,
    )


EOL = ProductEndOfLife(plan="dsl-basic", replacement="fiber-300", effective_at=EOL_AT)
RISE = PriceChanged(
    plan="fiber-300",
    old_price=Decimal("70.00"),
    new_price=Decimal("74.00"),
    effective_at=PRICE_AT,
)
EVENTS = [_event(1, EOL), _event(2, RISE)]


# --- the catalog, pure --------------------------------------------------------------------------


def test_catalog_folds_only_the_changes_in_force() -> None:
    """Before a change's instant the catalog is as it was; from it on, the change holds."""
    before = catalog_at(EVENTS, EOL_AT - timedelta(seconds=1))
    assert before.end_of_life() == () and before.prices["fiber-300"] == Decimal("70.00")
    assert before.seq == 0
    between = catalog_at(EVENTS, EOL_AT)
    assert between.end_of_life() == ("dsl-basic",) and between.seq == 1
    assert between.prices["fiber-300"] == Decimal("70.00")
    after = catalog_at(EVENTS, PRICE_AT)
    assert after.prices["fiber-300"] == Decimal("74.00") and after.seq == 2


def test_end_of_life_takes_effect_on_each_contracts_own_day_minus_47() -> None:
    """An announced end of life holds for a contract from day -47 of its own window: the day
    before, its DSL offer still stands; on the day, it no longer does."""
    facts = catalog_at(EVENTS, CAMPAIGN_START + 100 * DAY)
    late = CAMPAIGN_START + 30 * DAY  # a window that opened a month into the campaign
    own_day = late + 43 * DAY
    offer = {"plan": "dsl-basic", "monthly_price": "40.50", "discount": "0.10"}
    assert recheck(offer, facts, opens=late, now=own_day - DAY).problem is None
    assert recheck(offer, facts, opens=late, now=own_day).problem == "plan_end_of_life"
    assert facts.end_of_life_for(late, own_day - DAY) == ()
    assert facts.end_of_life_for(CAMPAIGN_START, EOL_AT) == ("dsl-basic",)


def test_a_price_rise_raises_the_discount_an_offer_really_gives() -> None:
    """An offer priced off the old list price gives more than its stated discount once the list
    price rises; one priced off the list price in force gives exactly its own."""
    facts = catalog_at(EVENTS, PRICE_AT)
    old = {"plan": "fiber-300", "monthly_price": "52.50", "discount": "0.25"}
    check = recheck(old, facts, opens=CAMPAIGN_START, now=PRICE_AT)
    assert check.problem is None and check.list_price == Decimal("74.00")
    assert check.discount == Decimal("0.2905")
    new = {"plan": "fiber-300", "monthly_price": "55.50", "discount": "0.25"}
    assert recheck(new, facts, opens=CAMPAIGN_START, now=PRICE_AT).discount == Decimal("0.25")


def test_an_offer_below_the_floor_of_the_price_in_force_does_not_stand() -> None:
    """The price floor is 60% of the list price in force, not of the one the offer was made at."""
    facts = Catalog(prices={"fiber-300": Decimal("90.00")})
    offer = {"plan": "fiber-300", "monthly_price": "50.40", "discount": "0.28"}
    check = recheck(offer, facts, opens=CAMPAIGN_START, now=CAMPAIGN_START)
    assert check.problem == "below_price_floor" and "90.00" in check.message


# --- the job --------------------------------------------------------------------------------------


def test_a_later_window_sees_end_of_life_on_its_own_day_minus_47(
    world: tuple[str, RenewalSummary],
) -> None:
    """A DSL contract whose window opened weeks into the campaign keeps its DSL offer past the
    announcement and learns of the end of life on its own day -47, when its offer is
    re-verified under the catalog read from the stream; the model then proposes again, shown
    the plan at end of life, and a fibre offer is sent."""
    url, s = world
    checked = 0
    for c in COHORT:
        if c.internet_service != "DSL" or opens(c) < CAMPAIGN_START + 10 * DAY:
            continue
        reassessed = [
            m for m in moves(url, s.job, c) if m["patch"].get("recheck", {}).get("problem")
        ]
        if not reassessed:
            continue  # its first offer was not DSL (a person decided, or it was declined)
        [move] = reassessed
        assert datetime.fromisoformat(move["at"]) == opens(c) + 43 * DAY > EOL_AT
        assert move["patch"]["reassess"] == "plan dsl-basic reached end of life"
        assert move["patch"]["recheck"]["end_of_life"] == ["dsl-basic"]
        assert move["patch"]["recheck"]["catalog_seq"] >= 2  # the bump and the end of life
        checked += 1
    assert checked >= 5


def test_the_reassessment_after_end_of_life_is_shown_the_new_facts(
    world: tuple[str, RenewalSummary],
) -> None:
    """The input of every assessment made on or after a contract's day -47 lists DSL at end of
    life, and what it commits is not DSL."""
    url, s = world

    async def go() -> list[tuple[str, str, Any]]:
        store = open_store(url)
        try:
            return await recorded_inputs(store, COHORT, seed=7)
        finally:
            await store.close()

    inputs = asyncio.run(go())
    late = 0
    for _, key, item in inputs:
        c = next(c for c in COHORT if c.customer_id == item.customer_id)
        committed = [e for e in read(url, f"sdb:renewal-offer:{key}") if e.type == "committed"]
        moved = [m for m in moves(url, s.job, c) if int(m["version"]) - 1 == item.version]
        at = datetime.fromisoformat(moved[0]["at"])
        if at >= opens(c) + 43 * DAY:
            late += 1
            assert item.end_of_life == ("dsl-basic",)
            for e in committed:
                assert e.payload["result"]["plan"] != "dsl-basic"
    assert late >= 5


def test_offers_made_before_the_price_change_are_reverified_at_send(
    world: tuple[str, RenewalSummary],
) -> None:
    """Fibre offers made at the old list price and sent after the rise are checked with the
    discount they really give at 74.00: those over the cap are denied at the gate and proposed
    again at the new price; every fibre offer sent after the rise records 74.00."""
    url, s = world
    assert any("list price 74.00" in r for r in _reasons(url, s))
    sent = [e for e in read(url, "outbox") if e.type == "offer_sent"]
    late = [
        e.payload for e in sent if e.payload["plan"] == "fiber-300" and e.recorded_at >= PRICE_AT
    ]
    assert late and all(p["list_price"] == "74.00" for p in late)
    for p in late:
        assert Decimal(p["discount"]) <= Decimal("0.30")


def _reasons(url: str, s: RenewalSummary) -> list[str]:
    return [
        m["patch"]["reassess"]
        for c in COHORT
        for m in moves(url, s.job, c)
        if m["patch"].get("reassess")
    ]


def test_recorded_inputs_rebuild_what_the_model_was_shown(
    world: tuple[str, RenewalSummary], tmp_path: Path
) -> None:
    """Recovery replay of every recorded assessment, from inputs rebuilt out of the cohort,
    the rows' history and the catalog stream, reproduces each run bit for bit (prompt hashes
    included)."""
    url, _ = world

    async def go() -> Any:
        store, scratch = open_store(url), open_store(f"sqlite:///{tmp_path}/scratch.db")
        try:
            inputs = [
                ReplayInput(run, key, item)
                for run, key, item in await recorded_inputs(store, COHORT, seed=7)
            ]
            boundary = offer_boundary(
                SimulatedRenewalModel("typical-v1"), PolicyBook(CAMPAIGN_START)
            )
            return await recovery_replay(store, boundary, inputs, scratch=scratch), len(inputs)
        finally:
            await store.close()
            await scratch.close()

    report, n = asyncio.run(go())
    assert n > len(COHORT)  # some contracts were assessed more than once
    assert report.exact and report.reproduced == n, report.mismatches[:3]


async def test_a_step_waits_for_a_world_change_due_at_its_instant(store: SqlStore) -> None:
    """When a change in force at a step's instant is not published yet (the world's step is
    late), the step gets no facts and waits; once published, the facts include it."""
    clock = VirtualClock(CAMPAIGN_START)
    cohort = COHORT[:2]
    agent = build_agent(store, cohort, clock=clock, seed=7)
    unit = UnitOfWork()
    agent.add_world(unit)
    await store.apply(unit)
    assert await agent.catalog(CAMPAIGN_START + 10 * DAY) is not None  # nothing due yet
    assert await agent.catalog(CAMPAIGN_START + 30 * DAY) is None  # the bump is late
    clock.advance_to(CAMPAIGN_START + 28 * DAY)  # published two days ahead
    from seamline.patterns import Runner

    runner = Runner(store, [agent.world], clock=clock)
    await runner.step()
    facts = await agent.catalog(CAMPAIGN_START + 30 * DAY)
    assert facts is not None and facts.policy_version == "2026.12" and facts.seq == 1
