"""Budgets: what a run may spend on models, and what happens as it nears the cap.

Spend lives in the store's usage ledger, so a budget survives restarts and durable retries,
and is shared by a run's sub-runs (run ids ``parent/child``). Checking a budget is a pure
function of the totals (:meth:`Budget.check`); the boundary reads the totals and acts on the
answer: at the alert threshold (80% by default) it records a ``budget_alert`` event once and
takes the declared route — a cheaper model, a person, or a graceful decline; at the hard cap
no further model call is made.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from seamline.errors import ConfigError
from seamline.models import Model, Usage

__all__ = [
    "DEFAULT_PRICES",
    "Budget",
    "BudgetStatus",
    "CheaperModel",
    "Decline",
    "EscalateToHuman",
    "Price",
    "PriceTable",
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
    """The larger of tokens spent / token cap and money spent / money cap."""


@dataclass(frozen=True)
class Budget:
    """A run's spending limits. ``run_id`` is the scope: sub-runs charge it too."""

    run_id: str
    max_tokens: int | None = None
    max_cost: Decimal | None = None
    alert_at: float = 0.8
    on_alert: Route = field(default_factory=Decline)
    prices: PriceTable = field(default_factory=PriceTable)

    def __post_init__(self) -> None:
        if self.max_tokens is None and self.max_cost is None:
            raise ConfigError("a budget needs max_tokens, max_cost or both")
        if not 0.0 < self.alert_at <= 1.0:
            raise ConfigError(f"alert_at must be in (0, 1], got {self.alert_at}")
        if (self.max_tokens is not None and self.max_tokens <= 0) or (
            self.max_cost is not None and self.max_cost <= 0
        ):
            raise ConfigError("budget caps must be positive")

    def child(self, name: str) -> str:
        """The run id of a sub-run that spends from this budget."""
        return f"{self.run_id}/{name}"

    def check(self, tokens: int, cost: Decimal) -> BudgetStatus:
        shares = []
        if self.max_tokens is not None:
            shares.append(tokens / self.max_tokens)
        if self.max_cost is not None:
            shares.append(float(cost / self.max_cost))
        share = max(shares)
        level: Literal["ok", "alert", "exhausted"] = (
            "exhausted" if share >= 1.0 else "alert" if share >= self.alert_at else "ok"
        )
        return BudgetStatus(level, tokens, cost, share)
