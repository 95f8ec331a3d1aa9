"""The plan-change domain as values: plans and their list prices, what the account systems
answer, what the model may propose, and the pure checks over them.

Nothing here does I/O. The eligibility reasons, the confirmation test and the terms view are
the same functions the verifiers and the gate call, so a proposal is judged one way wherever
it is judged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import pydantic

from seamline.boundary import normalise_text
from seamline.workloads.renewal import Customer

__all__ = [
    "CATALOG_PRICES",
    "AccountFacts",
    "Action",
    "Eligibility",
    "Exchange",
    "Plan",
    "Quote",
    "QuoteSheet",
    "SupportAction",
    "TurnInput",
    "all_plans",
    "describe_plan",
    "draw",
    "ineligible_reason",
    "is_confirmation",
    "list_price",
    "plan_of",
    "terms_of",
]

Internet = Literal["dsl", "fiber", "none"]
Action = Literal["change_plan", "quote", "reply", "refuse"]
"""``change_plan`` makes a confirmed change; ``quote`` prices a change and asks the customer
to confirm it; ``reply`` answers without acting; ``refuse`` says the change cannot be made."""

CATALOG_PRICES: Mapping[str, Decimal] = {
    "dsl": Decimal("45.00"),
    "fiber": Decimal("70.00"),
    "none": Decimal("0.00"),
    "phone": Decimal("20.00"),
    "streaming": Decimal("15.00"),
}
"""List prices a month, by service: what the (simulated) billing system quotes."""


def draw(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts: seeded simulation without state."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Plan(pydantic.BaseModel):
    """The services on an account."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    internet: Internet
    phone: bool
    streaming: bool

    @property
    def id(self) -> str:
        parts: list[str] = [self.internet] if self.internet != "none" else []
        parts += ["phone"] * self.phone + ["streaming"] * self.streaming
        return "+".join(parts) or "none"


_TELCO_INTERNET: Mapping[str, Internet] = {"DSL": "dsl", "Fiber optic": "fiber", "No": "none"}
_INTERNETS: tuple[Internet, ...] = ("dsl", "fiber", "none")


def plan_of(c: Customer) -> Plan:
    """The plan a Telco customer is on, in this workload's terms."""
    internet = _TELCO_INTERNET[c.internet_service]
    streaming = "Yes" in (c.streaming_tv, c.streaming_movies)
    return Plan(internet=internet, phone=c.phone_service, streaming=streaming)


def all_plans() -> tuple[Plan, ...]:
    """Every plan the catalog sells: at least one service; streaming needs internet."""
    plans = []
    for internet in _INTERNETS:
        for phone in (True, False):
            for streaming in (True, False):
                if internet == "none" and (streaming or not phone):
                    continue
                plans.append(Plan(internet=internet, phone=phone, streaming=streaming))
    return tuple(plans)


def list_price(plan: Plan) -> Decimal:
    return (
        CATALOG_PRICES[plan.internet]
        + CATALOG_PRICES["phone"] * plan.phone
        + CATALOG_PRICES["streaming"] * plan.streaming
    )


def describe_plan(plan: Plan) -> str:
    internet = {"dsl": "DSL internet", "fiber": "fiber internet", "none": ""}[plan.internet]
    parts = [p for p in (internet, "a phone line" * plan.phone, "streaming" * plan.streaming) if p]
    return " with ".join([parts[0], " and ".join(parts[1:])]) if len(parts) > 1 else parts[0]


class AccountFacts(pydantic.BaseModel):
    """What the CRM says about the customer."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    plan: Plan
    monthly_charges: Decimal
    contract: Literal["Month-to-month", "One year", "Two year"]
    tenure: int
    tenant: Literal["standard", "seniors"]


class Eligibility(pydantic.BaseModel):
    """What the network and contract systems allow for this customer."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    fiber_available: bool
    downgrade_allowed: bool


class QuoteSheet(pydantic.BaseModel):
    """The billing system's list price a month for every plan it sells."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    quotes: dict[str, Decimal]


class Quote(pydantic.BaseModel):
    """A change the assistant priced and asked the customer to confirm."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    plan: Plan
    monthly_price: Decimal


class Exchange(pydantic.BaseModel):
    """One earlier turn of the conversation, as the customer saw it."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    customer: str
    assistant: str


class SupportAction(pydantic.BaseModel):
    """The model's proposal for one turn: what to do, and what to tell the customer."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    customer_id: str = pydantic.Field(max_length=20)
    action: Action
    plan: Plan | None = None
    monthly_price: Decimal | None = pydantic.Field(default=None, ge=0, le=1000, decimal_places=2)
    reply: str = pydantic.Field(min_length=1, max_length=600)


class TurnInput(pydantic.BaseModel):
    """Everything the proposer is shown for one turn. The conversation so far is part of the
    input, so the turn's state is rebuilt from the conversation, never stored beside it."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    conversation_id: str
    turn: int
    account: AccountFacts
    eligibility: Eligibility
    quotes: dict[str, Decimal]
    history: tuple[Exchange, ...] = ()
    pending_quote: Quote | None = None
    message: str

    @property
    def customer_messages(self) -> tuple[str, ...]:
        return (*(e.customer for e in self.history), self.message)


# --- pure checks ---------------------------------------------------------------------------

_YES = re.compile(
    r"\b(yes|yep|yeah|sure|ok|okay|confirm(ed)?|go ahead|please do|do it|sounds good)\b"
)
_NO = re.compile(r"\b(no|not|don't|dont|never|stop|wait|leave it|too much|expensive)\b")


def is_confirmation(text: str) -> bool:
    """True when the customer's message agrees to what was asked, with no hedge or refusal."""
    norm = normalise_text(text).casefold()
    return bool(_YES.search(norm)) and not _NO.search(norm)


def ineligible_reason(
    current: Plan, target: Plan, eligibility: Eligibility, quotes: Mapping[str, Decimal]
) -> str | None:
    """Why ``target`` cannot replace ``current`` (a reason code), or None when it can."""
    if target == current:
        return "no_change"
    if target.internet == "none" and not target.phone:
        return "cancellation_needs_person"
    if target.streaming and target.internet == "none":
        return "streaming_needs_internet"
    if target.id not in quotes:
        return "no_quote"
    new_fiber = target.internet == "fiber" and current.internet != "fiber"
    if new_fiber and not eligibility.fiber_available:
        return "fiber_unavailable"
    cheaper = quotes[target.id] < quotes.get(current.id, Decimal(0))
    if cheaper and not eligibility.downgrade_allowed:
        return "contract_locks_downgrade"
    return None


def terms_of(action: SupportAction, turn: TurnInput) -> dict[str, Any]:
    """The view of a proposal that policy is written against: the action, the plan, the
    price, the quoted list price and the goodwill discount it implies, and the reply."""
    terms: dict[str, Any] = {
        "customer_id": action.customer_id,
        "action": action.action,
        "reply": action.reply,
    }
    if action.plan is not None and action.monthly_price is not None:
        quoted = turn.quotes.get(action.plan.id)
        terms["plan"] = action.plan.id
        terms["monthly_price"] = str(action.monthly_price)
        if quoted is not None and quoted > 0:
            terms["list_price"] = str(quoted)
            goodwill = (1 - action.monthly_price / quoted).quantize(Decimal("0.0001"))
            terms["goodwill_discount"] = str(goodwill)
    return terms
