"""Budgets at the boundary: the alert line and its declared routes, a configurable alert
line, and levels that survive closing and reopening the store, on both backends."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from seamline.boundary import Committed, Failed, Runtime
from seamline.budget import Budget, Decline, Price, PriceTable
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.models import ScriptedModel
from seamline.store import SqlStore, UnitOfWork, open_store
from tests._offers import GOOD, Customer, offer_boundary

OFFER = json.dumps({**GOOD, "customer": "c1"})


def offer_for(customer: str) -> str:
    return json.dumps({**GOOD, "customer": customer})


async def spend(store: SqlStore, tokens: int, *, run_id: str = "run") -> None:
    await store.apply(
        UnitOfWork().record_usage(
            run_id=run_id,
            model="sim:x",
            prompt_tokens=tokens,
            completion_tokens=0,
            cost=Decimal(0),
            latency_ms=1,
        )
    )


async def budget_events(store: SqlStore, run_id: str = "run") -> list[tuple[str, object]]:
    return [(e.type, e.payload["route"]) for e in await store.read_stream(f"budget:{run_id}")]


# --- pure: the level a spend is at ---------------------------------------------------------


def test_the_default_route_at_the_alert_line_is_a_graceful_decline() -> None:
    """A budget declared without on_alert declines at the alert line (never silent)."""
    assert Budget("run", max_tokens=10).on_alert == Decline()


@pytest.mark.parametrize(
    ("alert_at", "tokens", "level"),
    [
        (0.5, 499, "ok"),
        (0.5, 500, "alert"),
        (0.5, 999, "alert"),
        (0.5, 1000, "exhausted"),
        (1.0, 999, "ok"),
        (1.0, 1000, "exhausted"),
    ],
)
def test_alert_at_moves_the_alert_line(alert_at: float, tokens: int, level: str) -> None:
    """The alert starts exactly at alert_at of the cap; with alert_at=1.0 there is no alert
    stage, only the cap."""
    status = Budget("run", max_tokens=1000, alert_at=alert_at).check(tokens, Decimal(0))
    assert (status.level, status.share) == (level, tokens / 1000)


def test_the_larger_of_the_token_and_money_shares_decides() -> None:
    """With both caps, the level follows whichever is nearer its cap."""
    budget = Budget("run", max_tokens=1000, max_cost=Decimal("2"))
    assert budget.check(100, Decimal("1.7")).level == "alert"
    assert budget.check(900, Decimal("0.1")).level == "alert"
    assert budget.check(100, Decimal("0.1")).level == "ok"


@pytest.mark.parametrize("alert_at", [0.0, -0.1, 1.01])
def test_alert_at_outside_zero_to_one_is_refused(alert_at: float) -> None:
    """An alert line outside (0, 1] is a ConfigError naming the value."""
    with pytest.raises(ConfigError, match=f"alert_at must be in \\(0, 1\\], got {alert_at}"):
        Budget("run", max_tokens=10, alert_at=alert_at)


# --- at the boundary -----------------------------------------------------------------------


@pytest.fixture
def rt(store: SqlStore, clock: VirtualClock) -> Runtime:
    return Runtime(store, clock)


async def test_decline_at_the_alert_line_fails_typed_without_calling_the_model(
    rt: Runtime, store: SqlStore
) -> None:
    """Past the alert line with the Decline route the boundary ends Failed('budget_alert'),
    not retryable, with no model call, no commit, and one budget_alert event naming the
    route and the share spent."""
    await spend(store, 850)
    model = ScriptedModel([OFFER])
    budget = Budget("run", max_tokens=1000, on_alert=Decline())
    result = await offer_boundary(model).run(
        Customer(id="c1"), runtime=rt, run_id="run", budget=budget
    )
    assert isinstance(result, Failed)
    assert (result.reason_code, result.retryable) == ("budget_alert", False)
    assert result.message == "budget alert: 85% of the cap for run run is spent"
    assert model.requests == [] and result.attempts == ()
    assert await store.get_commit(result.key) is None
    [event] = await store.read_stream("budget:run")
    assert (event.type, event.payload) == (
        "budget_alert",
        {"share": 0.85, "tokens": 850, "cost": "0.000000", "route": "decline"},
    )
    ended = [e.type for e in await store.read_stream(f"sdb:offer:{result.key}")]
    assert ended == ["failed"]


@pytest.mark.parametrize(("spent", "outcome"), [(499, "committed"), (500, "failed")])
async def test_a_lower_alert_line_declines_earlier(
    rt: Runtime, store: SqlStore, spent: int, outcome: str
) -> None:
    """With alert_at=0.5, a run at 49.9% of its cap still calls the model and commits; at
    50% it declines without a call."""
    await spend(store, spent)
    model = ScriptedModel([OFFER])
    budget = Budget("run", max_tokens=1000, alert_at=0.5)
    result = await offer_boundary(model).run(
        Customer(id="c1"), runtime=rt, run_id="run", budget=budget
    )
    assert result.kind == outcome
    if outcome == "committed":
        assert len(model.requests) == 1 and await budget_events(store) == []
    else:
        assert isinstance(result, Failed) and result.reason_code == "budget_alert"
        assert model.requests == [] and await budget_events(store) == [("budget_alert", "decline")]


@pytest.mark.parametrize("level", ["alert", "exhausted"])
async def test_a_budget_level_survives_closing_and_reopening_the_store(
    store_url: str, clock: VirtualClock, level: str
) -> None:
    """Spend recorded by one boundary puts the run at its alert line (or cap); after the
    store is closed and reopened, the next boundary still sees that level, declines without
    calling the model, and the level's event is not written a second time."""
    prices = PriceTable().with_price("sim:scripted", Price(Decimal("1"), Decimal("1")))
    first = open_store(store_url, clock=clock)
    spent_run = await offer_boundary(ScriptedModel([offer_for("c1")])).run(
        Customer(id="c1"), runtime=Runtime(first, clock, prices), run_id="run"
    )
    assert isinstance(spent_run, Committed)
    spent = (await first.usage_totals("run")).total_tokens
    cap = spent if level == "exhausted" else math.ceil(spent / 0.85)
    budget = Budget("run", max_tokens=cap)
    before = await offer_boundary(ScriptedModel([offer_for("c2")])).run(
        Customer(id="c2"), runtime=Runtime(first, clock, prices), run_id="run", budget=budget
    )
    assert isinstance(before, Failed) and before.reason_code == f"budget_{level}"
    await first.close()

    reopened = open_store(store_url, clock=clock)
    try:
        model = ScriptedModel([offer_for("c3")])
        after = await offer_boundary(model).run(
            Customer(id="c3"), runtime=Runtime(reopened, clock, prices), run_id="run", budget=budget
        )
        assert isinstance(after, Failed) and after.reason_code == f"budget_{level}"
        assert model.requests == []
        assert await budget_events(reopened) == [(f"budget_{level}", "decline")]
        totals = await reopened.usage_totals("run", include_children=True)
        assert (totals.calls, totals.total_tokens) == (1, spent)
    finally:
        await reopened.close()


async def test_sub_runs_spend_from_the_parent_budget(rt: Runtime, store: SqlStore) -> None:
    """Spend recorded under a sub-run id (Budget.child) counts against the parent's budget."""
    budget = Budget("run", max_tokens=1000)
    await spend(store, 900, run_id=budget.child("research"))
    model = ScriptedModel([OFFER])
    result = await offer_boundary(model).run(
        Customer(id="c1"), runtime=rt, run_id=budget.child("offer"), budget=budget
    )
    assert isinstance(result, Failed) and result.reason_code == "budget_alert"
    assert model.requests == []


@pytest.mark.parametrize("shared", [True, False])
async def test_exclusive_and_shared_budgets_decide_the_same(
    rt: Runtime, store: SqlStore, shared: bool
) -> None:
    """An exclusive budget (shared=False) declines at the same line as a shared one and
    counts the same usage, without a ledger row; a shared one keeps its reservations in the
    `budget:<run>` row."""
    budget = Budget("run", max_tokens=1000, alert_at=0.5, shared=shared)
    committed = await offer_boundary(ScriptedModel([OFFER])).run(
        Customer(id="c1"), runtime=rt, run_id="run", budget=budget
    )
    assert isinstance(committed, Committed)
    used = (await store.usage_totals("run")).total_tokens
    assert used > 0
    await spend(store, 500 - used)
    declined = await offer_boundary(ScriptedModel([offer_for("c2")])).run(
        Customer(id="c2"), runtime=rt, run_id="run", budget=budget
    )
    assert isinstance(declined, Failed) and declined.reason_code == "budget_alert"
    assert (await store.usage_totals("run")).total_tokens == 500
    ledger_row = await store.get_row("budget:run")
    assert (ledger_row is not None) == shared
