"""The simulated billing and network systems: seeded monthly charges with planted anomalies.

Every customer is charged their monthly amount once per cycle. Planted, at seeded rates:

* **double charges** — a cycle's charge posted a second time;
* **charges after a downgrade** — the customer moves to a cheaper plan from some cycle, and
  for some customers the billing system keeps charging the old price for a cycle or two;
* **outages** — hours without service in a cycle (short ones are not worth a credit).

Draws are made per customer and per cycle from the seed, so a run over more cycles extends a
shorter run's log instead of changing it, and the same seed always gives the same log.
Everything here is SIMULATED.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from seamline.errors import ConfigError
from seamline.workloads.billing._events import (
    BillingFact,
    ChargePosted,
    OutageRecorded,
    PlanChanged,
)

if TYPE_CHECKING:  # the renewal package is imported only for the type: it loads its report
    from seamline.workloads.renewal import Customer

__all__ = ["BILLING_START", "MAX_CYCLES", "Rates", "billing_events", "cycle_start"]

BILLING_START = datetime(2026, 1, 1, tzinfo=UTC)
MAX_CYCLES = 120
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Rates:
    """How often each anomaly is planted (per customer and cycle; downgrades per customer)."""

    double_charge: float = 0.03
    downgrade: float = 0.10
    stale_price_after_downgrade: float = 0.6
    outage: float = 0.06

    def __post_init__(self) -> None:
        for name in ("double_charge", "downgrade", "stale_price_after_downgrade", "outage"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"rate {name} must be in [0, 1], got {value}")


def cycle_start(cycle: int) -> datetime:
    """The first instant of billing cycle ``cycle`` (cycle 1 is January 2026)."""
    months = BILLING_START.month - 1 + cycle - 1
    return BILLING_START.replace(year=BILLING_START.year + months // 12, month=months % 12 + 1)


@dataclass(frozen=True, slots=True)
class _Downgrade:
    cycle: int
    to_price: Decimal
    stale_cycles: int


def _downgrade(c: Customer, seed: int, rates: Rates) -> _Downgrade | None:
    rng = random.Random(f"{seed}:{c.customer_id}:plan")
    if rng.random() >= rates.downgrade:
        return None
    at = rng.randint(2, 12)
    share = Decimal(str(round(rng.uniform(0.5, 0.8), 2)))
    to_price = (c.monthly_charges * share).quantize(_CENT, ROUND_HALF_UP)
    stale = rng.randint(1, 2) if rng.random() < rates.stale_price_after_downgrade else 0
    return _Downgrade(at, to_price, stale)


def billing_events(
    customers: Sequence[Customer], *, cycles: int, seed: int, rates: Rates | None = None
) -> list[tuple[int, BillingFact]]:
    """The log's facts in publishing order, each with the cycle it is published in."""
    if not 1 <= cycles <= MAX_CYCLES:
        raise ConfigError(f"cycles must be 1..{MAX_CYCLES}, got {cycles}")
    rates = rates or Rates()
    plans = {c.customer_id: _downgrade(c, seed, rates) for c in customers}
    out: list[tuple[int, BillingFact]] = []
    for cycle in range(1, cycles + 1):
        for c in customers:  # plan changes take effect before the cycle's charges
            d = plans[c.customer_id]
            if d is not None and d.cycle == cycle and d.to_price < c.monthly_charges:
                change = PlanChanged(
                    event_id=f"{c.customer_id}-c{cycle:02d}-plan",
                    customer_id=c.customer_id,
                    effective_cycle=cycle,
                    from_price=c.monthly_charges,
                    to_price=d.to_price,
                )
                out.append((cycle, change))
        outages: list[tuple[int, BillingFact]] = []
        for c in customers:
            rng = random.Random(f"{seed}:{c.customer_id}:{cycle}")
            d = plans[c.customer_id]
            price = c.monthly_charges
            if d is not None and cycle >= d.cycle + d.stale_cycles:
                price = d.to_price
            charge_id = f"{c.customer_id}-c{cycle:02d}"
            charge = ChargePosted(
                event_id=f"{charge_id}-1", customer_id=c.customer_id, cycle=cycle, amount=price
            )
            out.append((cycle, charge))
            if rng.random() < rates.double_charge:
                out.append((cycle, charge.model_copy(update={"event_id": f"{charge_id}-2"})))
            if rng.random() < rates.outage:
                hours = rng.choice((1, 2, 3, 6, 8, 12, 18, 24, 36, 48, 72))
                outage = OutageRecorded(
                    event_id=f"{charge_id}-outage",
                    customer_id=c.customer_id,
                    cycle=cycle,
                    hours=hours,
                )
                outages.append((cycle, outage))
        out.extend(outages)  # the network reports outages after the cycle's charges
    return out
