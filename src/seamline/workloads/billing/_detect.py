"""Anomaly detection: deterministic rules over what the log has said so far.

:func:`detect` is a pure function of a :class:`History` (the log's facts before an event) and
the event; it never looks ahead, so a scan of a log prefix always finds the same anomalies —
which is what makes a replay on a fork comparable with the original. The rules:

``double_charge``
    a charge for a cycle that repeats an earlier charge of the same customer, cycle and
    amount; the whole repeated charge is anomalous.
``charge_after_downgrade``
    a charge (not a repeat) above the price of the plan the customer moved down to, for a
    cycle the new plan was in force; the excess is anomalous.
``outage``
    an outage of at least :data:`OUTAGE_MIN_HOURS` in a cycle the customer was charged for;
    the charge pro rata for the hours without service is anomalous.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import pydantic

from seamline.workloads.billing._events import (
    AnomalyType,
    ChargePosted,
    OutageRecorded,
    PlanChanged,
)

__all__ = ["HOURS_PER_CYCLE", "OUTAGE_MIN_HOURS", "Anomaly", "History", "detect"]

OUTAGE_MIN_HOURS = 4
HOURS_PER_CYCLE = 720
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A candidate anomaly. ``id`` is derived from the billing fact that revealed it (never
    from a log position), so the same fact gives the same id on a fork."""

    id: str
    type: AnomalyType
    customer_id: str
    cycle: int
    amount: Decimal
    evidence: str
    kind: Literal["anomaly"] = "anomaly"


class History:
    """The facts of the log so far that the rules need, per customer."""

    def __init__(self) -> None:
        self._changes: dict[str, list[PlanChanged]] = defaultdict(list)
        self._charges: dict[tuple[str, int], list[ChargePosted]] = defaultdict(list)

    def record(self, event: pydantic.BaseModel) -> None:
        if isinstance(event, PlanChanged):
            self._changes[event.customer_id].append(event)
        elif isinstance(event, ChargePosted):
            self._charges[(event.customer_id, event.cycle)].append(event)

    def plan_at(self, customer_id: str, cycle: int) -> PlanChanged | None:
        """The latest plan change in force at ``cycle``, if any."""
        changes = [c for c in self._changes.get(customer_id, ()) if c.effective_cycle <= cycle]
        return max(changes, key=lambda c: c.effective_cycle, default=None)

    def charges(self, customer_id: str, cycle: int) -> tuple[ChargePosted, ...]:
        return tuple(self._charges.get((customer_id, cycle), ()))


def detect(history: History, event: pydantic.BaseModel) -> tuple[Anomaly, ...]:
    """The anomalies ``event`` reveals, given everything the log said before it."""
    if isinstance(event, ChargePosted):
        return _charge(history, event)
    if isinstance(event, OutageRecorded):
        return _outage(history, event)
    return ()


def _charge(history: History, charge: ChargePosted) -> tuple[Anomaly, ...]:
    earlier = history.charges(charge.customer_id, charge.cycle)
    repeated = next((c for c in earlier if c.amount == charge.amount), None)
    if repeated is not None:
        evidence = (
            f"charge {charge.event_id} of {charge.amount} repeats charge {repeated.event_id} "
            f"for cycle {charge.cycle}"
        )
        return (_anomaly("double_charge", charge.event_id, charge, charge.amount, evidence),)
    plan = history.plan_at(charge.customer_id, charge.cycle)
    if plan is not None and plan.to_price < plan.from_price and charge.amount > plan.to_price:
        excess = charge.amount - plan.to_price
        evidence = (
            f"charge {charge.event_id} of {charge.amount} for cycle {charge.cycle}; the plan "
            f"at {plan.to_price} has been in force since cycle {plan.effective_cycle}"
        )
        return (_anomaly("charge_after_downgrade", charge.event_id, charge, excess, evidence),)
    return ()


def _outage(history: History, outage: OutageRecorded) -> tuple[Anomaly, ...]:
    if outage.hours < OUTAGE_MIN_HOURS:
        return ()
    charges = history.charges(outage.customer_id, outage.cycle)
    if not charges:
        return ()  # nothing was billed for the cycle, so there is nothing to credit
    base = charges[0].amount
    plan = history.plan_at(outage.customer_id, outage.cycle)
    if plan is not None:
        base = min(base, plan.to_price)
    share = Decimal(outage.hours) / HOURS_PER_CYCLE
    amount = (base * share).quantize(_CENT, ROUND_HALF_UP)
    if amount <= 0:
        return ()
    evidence = (
        f"outage {outage.event_id}: {outage.hours} h without service in cycle {outage.cycle}, "
        f"billed {base}; {outage.hours}/{HOURS_PER_CYCLE} of it is {amount}"
    )
    return (_anomaly("outage", outage.event_id, outage, amount, evidence),)


def _anomaly(
    type: AnomalyType,
    source_id: str,
    fact: ChargePosted | OutageRecorded,
    amount: Decimal,
    evidence: str,
) -> Anomaly:
    return Anomaly(f"{type}:{source_id}", type, fact.customer_id, fact.cycle, amount, evidence)
