"""Budgets: what a run may spend on models, and what happens as it nears the cap.

Spend lives in the store's usage ledger, so a budget survives restarts and durable retries,
and is shared by a run's sub-runs (run ids ``parent/child``). Checking a budget is a pure
function of the totals (:meth:`Budget.check`); the boundary reads the totals and acts on the
answer: at the alert threshold (80% by default) it records a ``budget_alert`` event once and
takes the declared route — a cheaper model, a person, or a graceful decline; at the hard cap
no further model call is made.

:class:`BudgetLedger` makes the cap hold across concurrent boundaries and processes that
share a budget: each model call *reserves* an estimate in the store before it starts (a
compare-and-swap on the budget's row, refused once the cap is reached) and is *charged* —
a usage row plus the reservation's removal, in one unit — as soon as it returns. So spend is
durable per call, not per boundary, and a call in flight when its process is killed stays
counted at its reservation; once its lease runs out it is folded into the usage ledger.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

import pydantic

from seamline import codec
from seamline.clock import Clock
from seamline.context import estimate_tokens
from seamline.errors import ConfigError, StoreError
from seamline.models import Model, ModelRequest, ModelResponse, Usage
from seamline.store import Applied, Duplicate, Row, StaleVersion, Store, UnitOfWork, UsageTotals

__all__ = [
    "DEFAULT_PRICES",
    "Budget",
    "BudgetLedger",
    "BudgetStatus",
    "CheaperModel",
    "Decline",
    "EscalateToHuman",
    "Price",
    "PriceTable",
    "Reservation",
]

MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    """Money per million tokens, in the budget's currency."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def cost(self, usage: Usage) -> Decimal:
        return (
            Decimal(usage.prompt_tokens) * self.input_per_mtok
            + Decimal(usage.completion_tokens) * self.output_per_mtok
        ) / MTOK


DEFAULT_PRICES: Mapping[str, Price] = {
    # Simulated models are priced like a small hosted model so experiments show realistic
    # cost figures; the numbers are illustrative, not any provider's list price.
    "sim:*": Price(Decimal("0.15"), Decimal("0.60")),
    "recorded": Price(Decimal(0), Decimal(0)),
}


@dataclass(frozen=True)
class PriceTable:
    """Prices by model id. A key ending in ``*`` matches ids with that prefix."""

    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def with_price(self, model: str, price: Price) -> PriceTable:
        return PriceTable({**self.prices, model: price})

    @functools.cached_property
    def _wildcards(self) -> tuple[str, ...]:
        return tuple(sorted((k for k in self.prices if k.endswith("*")), key=len, reverse=True))

    def price(self, model: str) -> Price:
        if model in self.prices:
            return self.prices[model]
        for key in self._wildcards:
            if model.startswith(key[:-1]):
                return self.prices[key]
        raise ConfigError(
            f"no price for model {model!r}; add one with "
            f"PriceTable().with_price({model!r}, Price(input_per_mtok=..., output_per_mtok=...))"
        )

    def cost(self, model: str, usage: Usage) -> Decimal:
        return self.price(model).cost(usage)


@dataclass(frozen=True, slots=True)
class CheaperModel:
    """At the alert threshold, switch to this model for the rest of the run."""

    model: Model
    kind: Literal["cheaper_model"] = "cheaper_model"


@dataclass(frozen=True, slots=True)
class EscalateToHuman:
    """At the alert threshold, stop calling models and hand the decision to a person."""

    kind: Literal["human"] = "human"


@dataclass(frozen=True, slots=True)
class Decline:
    """At the alert threshold, stop and decline gracefully (a typed failure, never silent)."""

    kind: Literal["decline"] = "decline"


Route = CheaperModel | EscalateToHuman | Decline


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    level: Literal["ok", "alert", "exhausted"]
    spent_tokens: int
    spent_cost: Decimal
    share: float
    """The larger of tokens / token cap and money / money cap, reservations included."""
    reserved_tokens: int = 0
    """Held for calls still in flight (see :class:`BudgetLedger`); counted in ``share``."""
    reserved_cost: Decimal = Decimal(0)


@dataclass(frozen=True)
class Budget:
    """A run's spending limits. ``run_id`` is the scope: sub-runs charge it too.

    ``shared`` (the default) says several spenders may draw on the budget at once —
    concurrent boundaries, other processes — so every model call reserves and is charged
    through the store-backed :class:`BudgetLedger`. ``shared=False`` declares one spender at a
    time (e.g. the steps of one workflow row, which its compare-and-swap serialises): a
    boundary then checks the usage ledger plus its own spend before each call and writes the
    usage with its ending, with no extra writes — and a call cut off by a crash before the
    ending is not counted.

    ``strict`` and ``completion_reserve`` only matter to a :class:`BudgetLedger`. By default
    a call is admitted while spend plus in-flight reservations is under the cap, so the cap
    can be crossed by the one call that was admitted last (as with a single caller). With
    ``strict=True`` a call is admitted only if its reservation fits under the cap, so the cap
    is never crossed as long as each reservation bounds its call's usage.
    ``completion_reserve`` is the completion tokens reserved for a request that sets no
    ``max_tokens``.
    """

    run_id: str
    max_tokens: int | None = None
    max_cost: Decimal | None = None
    alert_at: float = 0.8
    on_alert: Route = field(default_factory=Decline)
    prices: PriceTable = field(default_factory=PriceTable)
    strict: bool = False
    completion_reserve: int = 1024
    shared: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens is None and self.max_cost is None:
            raise ConfigError("a budget needs max_tokens, max_cost or both")
        if not 0.0 < self.alert_at <= 1.0:
            raise ConfigError(f"alert_at must be in (0, 1], got {self.alert_at}")
        if (self.max_tokens is not None and self.max_tokens <= 0) or (
            self.max_cost is not None and self.max_cost <= 0
        ):
            raise ConfigError("budget caps must be positive")
        if self.completion_reserve < 1:
            raise ConfigError(f"completion_reserve must be >= 1, got {self.completion_reserve}")

    def child(self, name: str) -> str:
        """The run id of a sub-run that spends from this budget."""
        return f"{self.run_id}/{name}"

    def check(
        self,
        tokens: int,
        cost: Decimal,
        *,
        reserved_tokens: int = 0,
        reserved_cost: Decimal = Decimal(0),
    ) -> BudgetStatus:
        """The budget's level given what was spent and what is held for calls in flight."""
        shares = []
        if self.max_tokens is not None:
            shares.append((tokens + reserved_tokens) / self.max_tokens)
        if self.max_cost is not None:
            shares.append(float((cost + reserved_cost) / self.max_cost))
        share = max(shares)
        level: Literal["ok", "alert", "exhausted"] = (
            "exhausted" if share >= 1.0 else "alert" if share >= self.alert_at else "ok"
        )
        return BudgetStatus(level, tokens, cost, share, reserved_tokens, reserved_cost)

    def admits(self, status: BudgetStatus, tokens: int, cost: Decimal) -> bool:
        """Whether a call reserving ``tokens`` and ``cost`` may start, given ``status``."""
        if status.level == "exhausted":
            return False
        if not self.strict:
            return True
        after = self.check(
            status.spent_tokens,
            status.spent_cost,
            reserved_tokens=status.reserved_tokens + tokens,
            reserved_cost=status.reserved_cost + cost,
        )
        return after.share <= 1.0

    def estimate(self, request: ModelRequest) -> Usage:
        """What to reserve for ``request``: its prompt at two characters a token (most text
        runs nearer four, so this errs high) and ``max_tokens``, else ``completion_reserve``."""
        prompt = estimate_tokens(request.messages, chars_per_token=2.0)
        extras: list[object] = [[t.name, t.description, t.parameters] for t in request.tools]
        if request.json_schema is not None:
            extras.append(request.json_schema)
        if extras:
            prompt += math.ceil(len(codec.encode(extras)) / 2)
        return Usage(prompt, request.max_tokens or self.completion_reserve)


# --- the ledger: per-call reservations and charges in the store -----------------------------


class _Held(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    run_id: str
    model: str
    prompt_tokens: int = pydantic.Field(ge=0)
    completion_tokens: int = pydantic.Field(ge=0)
    cost: Decimal
    at: datetime


class _LedgerData(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    held: dict[str, _Held] = pydantic.Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Spend held in the store for one model call until it is charged or released."""

    id: str
    budget: str
    """The run id of the budget it was taken from."""
    run_id: str
    """The run making the call (the budget's own or a sub-run's): charged usage names it."""
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    at: datetime
    status: BudgetStatus
    """The budget just after this reservation was taken."""
    before: BudgetStatus
    """The budget just before it: what a gate in front of the call decides on."""


class BudgetLedger:
    """Reserves, charges and releases model spend against a :class:`Budget` in the store.

    The budget's row (``budget:<run_id>``, kind ``budget``) holds the reservations of calls in
    flight; every change to it is a compare-and-swap on the row's version, retried on a stale
    version, so any number of processes can share one budget. Spend already charged is read
    from the usage ledger (``Store.usage_totals``, sub-runs included), as the rest of seamline
    reads it. A reservation older than ``lease`` belongs to a call whose process died (or that
    ran far longer than any model timeout): it keeps counting, and the next reservation folds it
    into the usage ledger at its reserved amount, the best bound there is on what it cost.

    Use one ledger per budget and store in a process: it serialises its own callers, so
    compare-and-swap conflicts come only from other processes.
    """

    def __init__(
        self,
        store: Store,
        budget: Budget,
        *,
        clock: Clock,
        prices: PriceTable | None = None,
        lease: timedelta = timedelta(minutes=15),
        max_conflicts: int = 10_000,
    ) -> None:
        if lease <= timedelta(0) or max_conflicts < 1:
            raise ConfigError(
                f"budget ledger needs lease > 0 and max_conflicts >= 1, "
                f"got lease={lease}, max_conflicts={max_conflicts}"
            )
        self.store, self.budget, self.clock = store, budget, clock
        self.prices = prices or budget.prices
        self.lease, self.max_conflicts = lease, max_conflicts
        self.row_id = f"budget:{budget.run_id}"
        self._lock = asyncio.Lock()
        self._rng = random.Random()
        # The row's version and reservations as this ledger last read or wrote them (version
        # 0: no row yet). Writes are compare-and-swaps on that version, so a stale copy costs
        # a retry, never a wrong write; it saves a read per reserve and per charge.
        self._known: tuple[int, dict[str, _Held]] | None = None

    def __repr__(self) -> str:
        return f"BudgetLedger({self.row_id!r}, lease={self.lease})"

    async def status(self) -> BudgetStatus:
        """Spend (charged, and reservations past their lease) and what is held in flight."""
        row = await self.store.get_row(self.row_id)
        held = {} if row is None else self._held(row)
        if not self._lock.locked():
            self._known = (0 if row is None else row.version, held)
        totals = await self.store.usage_totals(self.budget.run_id, include_children=True)
        return self._status(totals, *self._split(held))

    async def reserve(
        self, *, model: str, estimate: Usage, run_id: str | None = None
    ) -> Reservation | BudgetStatus:
        """Hold ``estimate`` (priced for ``model``) for one call by ``run_id`` (default: the
        budget's run). Returns the :class:`Reservation`, or the :class:`BudgetStatus` that
        refused it: exhausted, or (``strict``) too little left for the estimate. No model
        call may be made without a reservation."""
        cost = self.prices.cost(model, estimate)
        run = run_id or self.budget.run_id
        if run != self.budget.run_id and not run.startswith(self.budget.run_id + "/"):
            raise ConfigError(
                f"run {run!r} cannot spend from budget {self.budget.run_id!r}: use the budget's "
                f"run id or a sub-run id from Budget.child()"
            )
        async with self._lock:
            for conflicts in range(self.max_conflicts):
                cached = self._known is not None
                version, held = await self._read()
                totals = await self.store.usage_totals(self.budget.run_id, include_children=True)
                stale, live = self._split(held)
                status = self._status(totals, stale, live)
                unit = self._fold(stale)
                if not self.budget.admits(status, estimate.total_tokens, cost):
                    if cached:  # refuse only on what the store says now
                        self._known = None
                        continue
                    if not stale:
                        return status
                    if await self._apply(self._move(unit, version, live), version, live):
                        return status
                    await self._backoff(conflicts)
                    continue
                now = self.clock.now()
                taken = _Held(
                    run_id=run,
                    model=model,
                    prompt_tokens=estimate.prompt_tokens,
                    completion_tokens=estimate.completion_tokens,
                    cost=cost,
                    at=now,
                )
                rid = uuid.uuid4().hex
                after = {**live, rid: taken}
                if await self._apply(self._move(unit, version, after), version, after):
                    return Reservation(
                        rid,
                        self.budget.run_id,
                        run,
                        model,
                        estimate.prompt_tokens,
                        estimate.completion_tokens,
                        cost,
                        now,
                        self.budget.check(
                            status.spent_tokens,
                            status.spent_cost,
                            reserved_tokens=status.reserved_tokens + estimate.total_tokens,
                            reserved_cost=status.reserved_cost + cost,
                        ),
                        status,
                    )
                await self._backoff(conflicts)
        raise self._contended()

    async def charge(self, reservation: Reservation, response: ModelResponse) -> None:
        """Record the call's real usage and drop its reservation, in one unit. Call it once,
        as soon as the model answers. If the reservation was already folded (its lease ran
        out), only usage beyond the reserved amount is recorded."""
        self._own(reservation)
        usage = response.usage
        async with self._lock:
            for conflicts in range(self.max_conflicts):
                version, held = await self._read()
                unit = UnitOfWork()
                if reservation.id not in held:
                    usage = Usage(
                        max(0, usage.prompt_tokens - reservation.prompt_tokens),
                        max(0, usage.completion_tokens - reservation.completion_tokens),
                    )
                    if usage.total_tokens:
                        await self.store.apply(self._usage(unit, reservation, response, usage))
                    return
                rest = {k: v for k, v in held.items() if k != reservation.id}
                self._move(self._usage(unit, reservation, response, usage), version, rest)
                if await self._apply(unit, version, rest):
                    return
                await self._backoff(conflicts)
        raise self._contended()

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call produced no response (the model call failed)."""
        self._own(reservation)
        async with self._lock:
            for conflicts in range(self.max_conflicts):
                version, held = await self._read()
                if reservation.id not in held:
                    return
                rest = {k: v for k, v in held.items() if k != reservation.id}
                if await self._apply(self._move(UnitOfWork(), version, rest), version, rest):
                    return
                await self._backoff(conflicts)
        raise self._contended()

    # --- internals ------------------------------------------------------------------------

    async def _read(self) -> tuple[int, dict[str, _Held]]:
        if self._known is None:
            row = await self.store.get_row(self.row_id)
            self._known = (0, {}) if row is None else (row.version, self._held(row))
        return self._known

    @staticmethod
    def _held(row: Row) -> dict[str, _Held]:
        return dict(row.data_as(_LedgerData).held)

    def _move(self, unit: UnitOfWork, version: int, held: dict[str, _Held]) -> UnitOfWork:
        """Add the row's new reservations to ``unit``: created at version 1 when there is no
        row yet (another process creating it first makes the unit a Duplicate), else a
        compare-and-swap from ``version``."""
        data = _LedgerData(held=held)
        if version == 0:
            return unit.create_row(self.row_id, kind="budget", state="open", data=data)
        return unit.transition(self.row_id, expect_version=version, to="open", data=data)

    def _split(self, held: Mapping[str, _Held]) -> tuple[dict[str, _Held], dict[str, _Held]]:
        expired = self.clock.now() - self.lease
        stale = {k: h for k, h in held.items() if h.at <= expired}
        live = {k: h for k, h in held.items() if k not in stale}
        return stale, live

    def _status(
        self, totals: UsageTotals, stale: Mapping[str, _Held], live: Mapping[str, _Held]
    ) -> BudgetStatus:
        # Read the row before the totals: a charge landing in between is then counted twice
        # (held and spent), never missed, and its version bump makes our own write stale.
        return self.budget.check(
            totals.total_tokens
            + sum(h.prompt_tokens + h.completion_tokens for h in stale.values()),
            totals.cost + sum((h.cost for h in stale.values()), Decimal(0)),
            reserved_tokens=sum(h.prompt_tokens + h.completion_tokens for h in live.values()),
            reserved_cost=sum((h.cost for h in live.values()), Decimal(0)),
        )

    @staticmethod
    def _fold(stale: Mapping[str, _Held]) -> UnitOfWork:
        unit = UnitOfWork()
        for h in stale.values():
            unit.record_usage(
                run_id=h.run_id,
                model=h.model,
                prompt_tokens=h.prompt_tokens,
                completion_tokens=h.completion_tokens,
                cost=h.cost,
                latency_ms=0.0,
            )
        return unit

    def _usage(
        self, unit: UnitOfWork, reservation: Reservation, response: ModelResponse, usage: Usage
    ) -> UnitOfWork:
        return unit.record_usage(
            run_id=reservation.run_id,
            model=response.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=self.prices.cost(response.model, usage),
            latency_ms=response.latency_ms,
        )

    async def _apply(self, unit: UnitOfWork, version: int, held: dict[str, _Held]) -> bool:
        """Apply a unit that moves the budget row from ``version``: True when it landed, False
        when another process moved (or created) the row first; the next read is then fresh."""
        outcome = await self.store.apply(unit)
        if isinstance(outcome, Applied):
            self._known = (version + 1, held)
            return True
        self._known = None
        if isinstance(outcome, StaleVersion) and outcome.row_id == self.row_id:
            return False
        if isinstance(outcome, Duplicate) and outcome.what == "row" and outcome.key == self.row_id:
            return False
        raise StoreError(
            f"budget row {self.row_id!r}: expected Applied or StaleVersion, got {outcome}"
        )

    async def _backoff(self, conflicts: int) -> None:
        """A short, jittered wait after losing a compare-and-swap to another process."""
        await asyncio.sleep(self._rng.uniform(0, min(0.05, 0.001 * 2 ** min(conflicts, 6))))

    def _own(self, reservation: Reservation) -> None:
        if reservation.budget != self.budget.run_id:
            raise ConfigError(
                f"reservation {reservation.id} was taken from budget {reservation.budget!r}, "
                f"not {self.budget.run_id!r}; settle it on the ledger that took it"
            )

    def _contended(self) -> StoreError:
        return StoreError(
            f"budget row {self.row_id!r} stayed contended for {self.max_conflicts} attempts; "
            "share one BudgetLedger per budget within a process, or raise max_conflicts"
        )
