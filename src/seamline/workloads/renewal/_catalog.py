"""The catalog as the renewal rows see it: list prices and plans at end of life, folded from
the job's P3 stream ``catalog:<job>``.

The world changes on fixed campaign days (:data:`WORLD_SCHEDULE`): the policy moves to a new
version on day 30; the end of life of the DSL plan is announced on day 43 and takes effect for
each contract on day -47 of its own renewal window; fibre-300's list price rises on day 60.
The job's world row publishes each change as a typed event two days before it takes effect,
carrying the instant it does. A row folds the events in force at its step's instant
(:func:`catalog_at`): its facts then depend on that instant alone, never on how steps were
batched. Checking an offer against the facts (:func:`recheck`) is a pure function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import pydantic

from seamline.patterns import EventRegistry
from seamline.store import Event

__all__ = [
    "CATALOG",
    "CATALOG_EVENTS",
    "EOL_WINDOW_DAY",
    "PRICE_FLOOR",
    "PUBLISHED_AHEAD",
    "WORLD_SCHEDULE",
    "Catalog",
    "PolicyVersionChanged",
    "PriceChanged",
    "ProductEndOfLife",
    "Recheck",
    "catalog_at",
    "catalog_stream",
    "decode",
    "expected_changes",
    "recheck",
]

CATALOG: Mapping[str, Decimal] = {
    "dsl-basic": Decimal("45.00"),
    "fiber-300": Decimal("70.00"),
    "fiber-1g": Decimal("95.00"),
    "phone-only": Decimal("20.00"),
}
"""List prices when the campaign starts."""

PRICE_FLOOR = Decimal("0.60")
"""No offer below 60% of the plan's list price in force."""

EOL_WINDOW_DAY = -47
"""The day of each contract's window on which an announced end of life takes effect for it."""

WORLD_SCHEDULE: tuple[tuple[str, timedelta], ...] = (
    ("policy_bumped", timedelta(days=30)),
    ("dsl_end_of_life", timedelta(days=43)),
    ("price_changed", timedelta(days=60)),
)
"""The world row's states and the campaign day each change takes effect on, in order."""

PUBLISHED_AHEAD = timedelta(days=2)
"""Each change is published this long before it takes effect, as catalog teams announce
changes: a row stepping at the very instant a change takes effect finds it on the stream."""


class PolicyVersionChanged(pydantic.BaseModel):
    """A new version of the offer policy is in force from ``effective_at``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    version: str
    effective_at: datetime


class ProductEndOfLife(pydantic.BaseModel):
    """``plan`` reaches end of life: announced at ``effective_at``, no contract may renew onto
    it from day ``window_day`` of its own window; ``replacement`` is the natural successor."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    plan: str
    replacement: str
    effective_at: datetime
    window_day: int = EOL_WINDOW_DAY


class PriceChanged(pydantic.BaseModel):
    """``plan``'s list price is ``new_price`` from ``effective_at``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    plan: str
    old_price: Decimal
    new_price: Decimal
    effective_at: datetime


CATALOG_EVENTS = EventRegistry([PolicyVersionChanged, ProductEndOfLife, PriceChanged])


def catalog_stream(job: str) -> str:
    return f"catalog:{job}"


def expected_changes(start: datetime, now: datetime) -> int:
    """How many world changes are due by ``now``: the rows' facts need that many events."""
    return sum(start + after <= now for _, after in WORLD_SCHEDULE)


@dataclass(frozen=True, slots=True)
class Catalog:
    """The facts in force at one instant. ``seq`` is how many catalog events they fold (the
    stream offset they were read as of)."""

    prices: Mapping[str, Decimal] = field(default_factory=lambda: dict(CATALOG))
    announced_eol: Mapping[str, ProductEndOfLife] = field(default_factory=dict)
    policy_version: str | None = None
    seq: int = 0

    def end_of_life(self) -> tuple[str, ...]:
        """Plans announced at end of life: no new offer may name them."""
        return tuple(sorted(self.announced_eol))

    def end_of_life_for(self, opens: datetime, now: datetime) -> tuple[str, ...]:
        """Plans whose end of life has taken effect for the contract whose window opened at
        ``opens``: from day ``window_day`` of that window on."""
        return tuple(
            sorted(
                plan
                for plan, e in self.announced_eol.items()
                if now >= opens + timedelta(days=90 + e.window_day)
            )
        )

    def replacement(self, plan: str) -> str:
        eol = self.announced_eol.get(plan)
        return eol.replacement if eol is not None else plan

    def as_record(self) -> dict[str, Any]:
        return {
            "catalog_seq": self.seq,
            "prices": {k: str(v) for k, v in sorted(self.prices.items())},
            "end_of_life": list(self.end_of_life()),
        }


Change = PolicyVersionChanged | ProductEndOfLife | PriceChanged


def decode(event: Event) -> Change:
    change = CATALOG_EVENTS.decode(event)
    assert isinstance(change, PolicyVersionChanged | ProductEndOfLife | PriceChanged)
    return change


def catalog_at(events: Iterable[Event], now: datetime) -> Catalog:
    """Fold the catalog events that are in force at ``now`` (pure)."""
    prices = dict(CATALOG)
    eol: dict[str, ProductEndOfLife] = {}
    policy: str | None = None
    seq = 0
    for e in events:
        change = decode(e)
        if change.effective_at > now:
            continue
        seq = max(seq, e.stream_seq)
        if isinstance(change, PriceChanged):
            prices[change.plan] = change.new_price
        elif isinstance(change, ProductEndOfLife):
            eol[change.plan] = change
        else:
            policy = change.version
    return Catalog(prices, eol, policy, seq)


@dataclass(frozen=True, slots=True)
class Recheck:
    """An offer checked against the catalog in force. ``problem`` is a reason code (None: the
    offer still stands); ``discount`` is the discount it really gives against ``list_price``."""

    problem: Literal["plan_end_of_life", "below_price_floor", "unknown_plan"] | None
    message: str
    list_price: Decimal
    discount: Decimal


def effective_discount(price: Decimal, discount: Decimal, list_price: Decimal) -> Decimal:
    """The discount ``price`` gives against ``list_price``: the offer's own ``discount`` when
    the price was computed from this list price, more when the list price rose since."""
    if list_price <= 0 or price == (list_price * (1 - discount)).quantize(Decimal("0.01")):
        return discount
    real = (1 - price / list_price).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return max(discount, real)


def recheck(
    offer: Mapping[str, Any], catalog: Catalog, *, opens: datetime, now: datetime
) -> Recheck:
    """Re-verify a committed offer under the catalog in force for its contract at ``now``."""
    plan = str(offer["plan"])
    price, discount = Decimal(str(offer["monthly_price"])), Decimal(str(offer["discount"]))
    list_price = catalog.prices.get(plan)
    if list_price is None:
        return Recheck("unknown_plan", f"plan {plan} is not in the catalog", Decimal(0), discount)
    real = effective_discount(price, discount, list_price)
    if plan in catalog.end_of_life_for(opens, now):
        return Recheck("plan_end_of_life", f"plan {plan} reached end of life", list_price, real)
    if price < list_price * PRICE_FLOOR:
        return Recheck(
            "below_price_floor",
            f"price {price} below {PRICE_FLOOR:.0%} of {plan}'s list price {list_price}",
            list_price,
            real,
        )
    return Recheck(None, "offer stands", list_price, real)
