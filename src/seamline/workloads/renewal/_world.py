"""The campaign's world, on a row of its own (kind ``renewal-world``), and how the contract
rows read it (P3).

The world row moves through :data:`~seamline.workloads.renewal._catalog.WORLD_SCHEDULE`: on
each step it publishes one change to the job's catalog stream, two days before the change
takes effect. A contract row reads the stream as of its step's instant (:meth:`Campaign.catalog`):
the facts depend on that instant alone, however steps are batched or shared among workers. In
the rare case a change in force is not on the stream yet (the world's step is late: another
worker holds it, or it runs in the same batch), the row waits a second and looks again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from seamline.patterns import Goto, StateMachine, StepContext
from seamline.store import Event, Store
from seamline.workloads.renewal._catalog import (
    CATALOG,
    CATALOG_EVENTS,
    PUBLISHED_AHEAD,
    WORLD_SCHEDULE,
    Catalog,
    PolicyVersionChanged,
    PriceChanged,
    ProductEndOfLife,
    catalog_at,
    catalog_stream,
    decode,
    expected_changes,
)
from seamline.workloads.renewal._offer import PolicyBook

__all__ = ["NEW_FIBER_PRICE", "WORLD", "WORLD_LAG", "WORLD_MACHINE", "Campaign"]

WORLD = "renewal-world"
NEW_FIBER_PRICE = Decimal("74.00")
WORLD_LAG = timedelta(seconds=1)
"""How long a step waits when a change in force at its instant is not on the stream yet."""

WORLD_MACHINE = StateMachine(
    kind=WORLD,
    initial="campaign_open",
    transitions={
        "campaign_open": frozenset({"policy_bumped"}),
        "policy_bumped": frozenset({"dsl_end_of_life"}),
        "dsl_end_of_life": frozenset({"price_changed"}),
    },
    terminal=frozenset({"price_changed"}),
)


@dataclass
class Campaign:
    """The job's world: its row's handlers, and the catalog as the rows read it."""

    store: Store
    job: str
    start: datetime
    book: PolicyBook
    _catalog: list[Event] = field(default_factory=list)
    _effective: list[datetime] = field(default_factory=list)
    _facts: dict[tuple[int, ...], Catalog] = field(default_factory=dict)

    def first_step(self) -> timedelta:
        """When the world row's first step runs, from the campaign's start."""
        return WORLD_SCHEDULE[0][1] - PUBLISHED_AHEAD

    def _publish(self, ctx: StepContext, change: Any, key: str) -> None:
        ctx.unit.append_event(
            catalog_stream(self.job),
            CATALOG_EVENTS.name_of(change),
            change,
            idempotency_key=f"{self.job}:{key}",
        )

    def _when(self, state: str) -> datetime:
        """When the change that moves the world to ``state`` takes effect."""
        return self.start + dict(WORLD_SCHEDULE)[state]

    async def bump_policy(self, ctx: StepContext) -> Goto:
        at = self._when("policy_bumped")
        version = self.book.at(at).version
        self._publish(
            ctx, PolicyVersionChanged(version=version, effective_at=at), f"policy:{version}"
        )
        return Goto("policy_bumped", at=self._when("dsl_end_of_life") - PUBLISHED_AHEAD)

    async def end_dsl(self, ctx: StepContext) -> Goto:
        at = self._when("dsl_end_of_life")
        eol = ProductEndOfLife(plan="dsl-basic", replacement="fiber-300", effective_at=at)
        self._publish(ctx, eol, "eol:dsl-basic")
        return Goto("dsl_end_of_life", at=self._when("price_changed") - PUBLISHED_AHEAD)

    async def change_price(self, ctx: StepContext) -> Goto:
        at = self._when("price_changed")
        change = PriceChanged(
            plan="fiber-300",
            old_price=CATALOG["fiber-300"],
            new_price=NEW_FIBER_PRICE,
            effective_at=at,
        )
        self._publish(ctx, change, "price:fiber-300")
        return Goto("price_changed")

    async def catalog(self, now: datetime) -> Catalog | None:
        """The catalog in force at ``now``, read from the job's P3 stream; None while a change
        in force by ``now`` is not published yet (the world's step is late: another worker
        holds it, or it runs in the same batch)."""
        due = expected_changes(self.start, now)
        if len(self._catalog) < due:
            events = await self.store.read_stream(catalog_stream(self.job))
            if len(events) > len(self._catalog):  # a slower read may return an older list
                self._catalog, self._facts = events, {}
                self._effective = [decode(e).effective_at for e in events]
            if len(self._catalog) < due:
                pending = await self.store.next_timer_due(kinds=[WORLD])
                if pending is not None and pending <= now:
                    return None
        in_force = tuple(i for i, at in enumerate(self._effective) if at <= now)
        facts = self._facts.get(in_force)
        if facts is None:
            facts = self._facts[in_force] = catalog_at(self._catalog, now)
        return facts
