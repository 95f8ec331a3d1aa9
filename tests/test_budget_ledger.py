"""BudgetLedger: per-call reservations and charges in the store, so a budget's cap holds
across concurrent callers and spend is durable per model call, on both backends."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from decimal import Decimal

import pytest

from seamline.budget import Budget, BudgetLedger, BudgetStatus, Price, PriceTable, Reservation
from seamline.clock import VirtualClock
from seamline.context import estimate_tokens
from seamline.errors import ConfigError
from seamline.models import Message, ModelRequest, ModelResponse, ToolSpec, Usage
from seamline.store import SqlStore, UnitOfWork, open_store

PRICES = PriceTable().with_price("m", Price(Decimal("1"), Decimal("2")))
MILLION = 1_000_000


def budget(**kw: object) -> Budget:
    options: dict[str, object] = {"max_tokens": 1000, "prices": PRICES, **kw}
    return Budget("run", **options)  # type: ignore[arg-type]


def response(prompt: int, completion: int, *, model: str = "m") -> ModelResponse:
    return ModelResponse("{}", model, "v1", Usage(prompt, completion), latency_ms=12.5)


async def reserved(ledger: BudgetLedger, prompt: int, completion: int, **kw: str) -> Reservation:
    taken = await ledger.reserve(model="m", estimate=Usage(prompt, completion), **kw)
    assert isinstance(taken, Reservation), taken
    return taken


async def spend(store: SqlStore, tokens: int) -> None:
    await store.apply(
        UnitOfWork().record_usage(
            run_id="run",
            model="m",
            prompt_tokens=tokens,
            completion_tokens=0,
            cost=Decimal(tokens) / MILLION,
            latency_ms=1,
        )
    )


@pytest.fixture
def ledger(store: SqlStore, clock: VirtualClock) -> BudgetLedger:
    return BudgetLedger(store, budget(), clock=clock)


# --- pure ----------------------------------------------------------------------------------


def test_reservations_count_towards_the_level() -> None:
    """check() adds what is held for calls in flight to what was spent."""
    status = budget().check(500, Decimal(0), reserved_tokens=350, reserved_cost=Decimal(0))
    assert (status.level, status.share, status.reserved_tokens) == ("alert", 0.85, 350)


@pytest.mark.parametrize(
    ("strict", "spent", "held", "estimate", "admitted"),
    [
        (False, 900, 0, 200, True),  # under the cap: the last call may cross it
        (False, 900, 100, 1, False),  # spent + held reached the cap
        (True, 900, 0, 200, False),  # the reservation does not fit
        (True, 700, 100, 200, True),  # it fits exactly
        (True, 1000, 0, 1, False),
    ],
)
def test_admission_by_headroom_or_by_fit(
    strict: bool, spent: int, held: int, estimate: int, admitted: bool
) -> None:
    """By default a call starts while spend plus reservations is under the cap; strict
    budgets start it only if its reservation fits under the cap too."""
    b = budget(strict=strict)
    status = b.check(spent, Decimal(0), reserved_tokens=held)
    assert b.admits(status, estimate, Decimal(0)) is admitted


def test_the_estimate_errs_high_and_takes_max_tokens_as_the_completion_bound() -> None:
    """The prompt estimate is at least the usual chars/4 estimate and grows with the schema
    and tools; the completion part is max_tokens when set, else completion_reserve."""
    messages = (Message("system", "Propose an offer." * 20), Message("user", "Customer c1."))
    plain = ModelRequest(messages=messages)
    b = budget(completion_reserve=300)
    assert b.estimate(plain).prompt_tokens >= estimate_tokens(messages)
    assert b.estimate(plain).completion_tokens == 300
    assert b.estimate(ModelRequest(messages=messages, max_tokens=64)).completion_tokens == 64
    tool = ToolSpec("lookup", "Look a customer up.", {"type": "object"})
    richer = ModelRequest(messages=messages, json_schema={"type": "object"}, tools=(tool,))
    assert b.estimate(richer).prompt_tokens > b.estimate(plain).prompt_tokens


def test_completion_reserve_must_be_positive() -> None:
    """A zero completion reserve is refused with the value in the message."""
    with pytest.raises(ConfigError, match="completion_reserve must be >= 1, got 0"):
        budget(completion_reserve=0)


# --- reserve, charge, release --------------------------------------------------------------


async def test_a_reservation_holds_spend_until_the_call_is_charged(
    ledger: BudgetLedger, store: SqlStore
) -> None:
    """While a call is in flight its estimate counts; charging replaces it with the real,
    priced usage row, written under the run that made the call."""
    held = await reserved(ledger, 100, 200, run_id="run/offer")
    assert (held.status.reserved_tokens, held.cost) == (300, Decimal("0.0005"))
    status = await ledger.status()
    assert (status.spent_tokens, status.reserved_tokens, status.share) == (0, 300, 0.3)

    await ledger.charge(held, response(60, 90))
    status = await ledger.status()
    assert (status.spent_tokens, status.reserved_tokens) == (150, 0)
    totals = await store.usage_totals("run/offer")
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens) == (1, 60, 90)
    assert totals.cost == Decimal("0.000240")


async def test_release_drops_a_reservation_without_charging(
    ledger: BudgetLedger, store: SqlStore
) -> None:
    """A call that produced no response gives its reservation back and records no usage."""
    held = await reserved(ledger, 100, 200)
    await ledger.release(held)
    await ledger.release(held)  # a second release finds nothing to drop
    status = await ledger.status()
    assert (status.reserved_tokens, status.spent_tokens) == (0, 0)
    assert (await store.usage_totals("run")).calls == 0


async def test_an_exhausted_budget_refuses_the_reservation(
    ledger: BudgetLedger, store: SqlStore
) -> None:
    """At the cap reserve returns the exhausted status instead of a reservation."""
    await spend(store, 1000)
    refused = await ledger.reserve(model="m", estimate=Usage(1, 1))
    assert isinstance(refused, BudgetStatus)
    assert (refused.level, refused.spent_tokens, refused.reserved_tokens) == ("exhausted", 1000, 0)


async def test_in_flight_reservations_close_the_budget_to_new_calls(ledger: BudgetLedger) -> None:
    """Once spend plus reservations reaches the cap, further calls are refused until one
    is charged for less than it reserved."""
    first = await reserved(ledger, 300, 300)
    await reserved(ledger, 200, 200)
    refused = await ledger.reserve(model="m", estimate=Usage(1, 1))
    assert isinstance(refused, BudgetStatus) and refused.reserved_tokens == 1000
    await ledger.charge(first, response(100, 100))
    assert isinstance(await ledger.reserve(model="m", estimate=Usage(1, 1)), Reservation)


async def test_a_strict_budget_refuses_a_reservation_that_does_not_fit(
    store: SqlStore, clock: VirtualClock
) -> None:
    """With strict=True a call is refused when its reservation would cross the cap, and the
    refusal reports the level as it stands (here still an alert, not exhausted)."""
    await spend(store, 850)
    strict = BudgetLedger(store, budget(strict=True), clock=clock)
    refused = await strict.reserve(model="m", estimate=Usage(100, 100))
    assert isinstance(refused, BudgetStatus) and refused.level == "alert"
    assert isinstance(await strict.reserve(model="m", estimate=Usage(100, 50)), Reservation)


async def test_only_the_budget_run_and_its_sub_runs_may_spend(ledger: BudgetLedger) -> None:
    """A run id outside the budget's scope, or a reservation from another budget, is a
    ConfigError rather than silent spend on the wrong ledger."""
    with pytest.raises(ConfigError, match="run 'runaway' cannot spend from budget 'run'"):
        await ledger.reserve(model="m", estimate=Usage(1, 1), run_id="runaway")
    other = BudgetLedger(
        ledger.store, Budget("other", max_tokens=10, prices=PRICES), clock=ledger.clock
    )
    foreign = await reserved(other, 1, 1)
    with pytest.raises(ConfigError, match="taken from budget 'other'"):
        await ledger.charge(foreign, response(1, 1))


async def test_an_unpriced_model_cannot_reserve(ledger: BudgetLedger) -> None:
    """Reserving for a model missing from the price table is a ConfigError before any write."""
    with pytest.raises(ConfigError, match="no price for model 'gpt-unknown'"):
        await ledger.reserve(model="gpt-unknown", estimate=Usage(1, 1))


# --- crashes, leases, restarts -------------------------------------------------------------


async def test_a_reservation_past_its_lease_is_charged_at_its_reserved_amount(
    ledger: BudgetLedger, store: SqlStore, clock: VirtualClock
) -> None:
    """A reservation never settled (its process died) keeps counting; after the lease it is
    folded into the usage ledger at the reserved amount, and a late charge for it records
    only what the call used beyond that."""
    held = await reserved(ledger, 100, 200, run_id="run/lost")
    clock.advance(ledger.lease + timedelta(seconds=1))
    status = await ledger.status()
    assert (status.spent_tokens, status.reserved_tokens) == (300, 0)
    assert (await store.usage_totals("run/lost")).calls == 0  # counted, not yet folded

    await reserved(ledger, 10, 10)  # the next reservation folds it
    lost = await store.usage_totals("run/lost")
    assert (lost.calls, lost.total_tokens, lost.cost) == (1, 300, held.cost)
    await ledger.charge(held, response(150, 180))
    lost = await store.usage_totals("run/lost")
    assert (lost.calls, lost.prompt_tokens, lost.completion_tokens) == (2, 150, 200)


async def test_reservations_survive_closing_and_reopening_the_store(
    store_url: str, clock: VirtualClock
) -> None:
    """What is held lives in the store: a new ledger on the reopened store still counts it
    and can charge it."""
    first = open_store(store_url, clock=clock)
    held = await reserved(BudgetLedger(first, budget(), clock=clock), 100, 200)
    await first.close()
    reopened = open_store(store_url, clock=clock)
    try:
        again = BudgetLedger(reopened, budget(), clock=clock)
        assert (await again.status()).reserved_tokens == 300
        await again.charge(held, response(10, 20))
        status = await again.status()
        assert (status.spent_tokens, status.reserved_tokens) == (30, 0)
    finally:
        await reopened.close()


async def test_concurrent_callers_on_two_ledgers_never_cross_a_strict_cap(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Twenty tasks on two ledger instances (so their writes conflict and are retried) spend
    until refused: the total charged never crosses the cap and comes close to it."""
    cap = 2000
    ledgers = [BudgetLedger(store, budget(max_tokens=cap, strict=True), clock=clock) for _ in "ab"]

    async def spender(n: int) -> int:
        rng, ledger, calls = random.Random(n), ledgers[n % 2], 0
        while isinstance(
            held := await ledger.reserve(model="m", estimate=Usage(50, 50)), Reservation
        ):
            await asyncio.sleep(0)
            await ledger.charge(held, response(rng.randint(25, 50), rng.randint(25, 50)))
            calls += 1
        return calls

    calls = await asyncio.gather(*(spender(n) for n in range(20)))
    totals = await store.usage_totals("run")
    assert totals.calls == sum(calls)
    # Each task stops at its first refusal, when less than one reservation (100) was left;
    # the other 19 may then settle for as little as half of what they held.
    assert cap - 100 - 19 * 50 <= totals.total_tokens <= cap
    assert (await ledgers[0].status()).reserved_tokens == 0
