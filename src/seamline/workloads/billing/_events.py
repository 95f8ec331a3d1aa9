"""The billing workload's typed events, and the streams they live on.

Three kinds of fact share one registry (one codec for the log):

* **billing facts**, appended by the (simulated) billing and network systems to the log
  ``billing:<scope>`` — the source of truth the scanner consumes;
* **decisions**, appended by the scanner to ``credits:<scope>`` — what it detected, what the
  model proposed, what the gate and the saga made of it;
* **effects**, appended by the (simulated) billing ledger and notification service to
  ``ledger:<scope>:<customer>`` and ``notices:<scope>`` — idempotent on the key they are given.

``scope`` is the job id for a live run and ``<job>@replay-<n>`` for a replay on a fork, so a
replay's effects land in a sandbox of its own and never in the original's ledger.

Events whose content came from a model (an amount, a reason, an explanation) are in
:data:`MODEL_DERIVED` and are always published with ``model_version`` and ``prompt_hash``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import pydantic

from seamline.patterns import EventRegistry

__all__ = [
    "ANOMALY_TYPES",
    "FORK_MARKER",
    "MODEL_DERIVED",
    "REGISTRY",
    "AnomalyDetected",
    "AnomalyType",
    "BillingFact",
    "ChargePosted",
    "CreditCompensated",
    "CreditDenied",
    "CreditEscalated",
    "CreditIssued",
    "CreditNeedsHuman",
    "CreditNotice",
    "CreditPosted",
    "CreditProposed",
    "CreditReversed",
    "Money",
    "OutageRecorded",
    "PlanChanged",
    "CreditOutcome",
    "decisions_stream",
    "ledger_stream",
    "log_stream",
    "notices_stream",
]

AnomalyType = Literal["double_charge", "charge_after_downgrade", "outage"]
ANOMALY_TYPES: tuple[AnomalyType, ...] = ("double_charge", "charge_after_downgrade", "outage")
Money = Annotated[Decimal, pydantic.Field(ge=0, le=1_000_000, decimal_places=2)]
FORK_MARKER = "forked"
"""The event ``fork_stream`` appends after the copied history; it carries no billing fact."""


class _Event(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


# --- billing facts (the log) -----------------------------------------------------------------


class PlanChanged(_Event):
    """The customer moved to another plan, billed at ``to_price`` from ``effective_cycle``."""

    event_id: str
    customer_id: str
    effective_cycle: int = pydantic.Field(ge=1)
    from_price: Money
    to_price: Money


class ChargePosted(_Event):
    """The billing system charged the customer for one cycle."""

    event_id: str
    customer_id: str
    cycle: int = pydantic.Field(ge=1)
    amount: Money


class OutageRecorded(_Event):
    """The network recorded a service outage for the customer during one cycle."""

    event_id: str
    customer_id: str
    cycle: int = pydantic.Field(ge=1)
    hours: int = pydantic.Field(ge=0, le=24 * 31)


# --- decisions (the scanner) -----------------------------------------------------------------


class AnomalyDetected(_Event):
    """A deterministic rule found a candidate anomaly at ``log_position`` of the log."""

    anomaly_id: str
    type: AnomalyType
    customer_id: str
    cycle: int
    amount: Money
    evidence: str
    log_position: int


class CreditProposed(_Event):
    """The model's credit, accepted by every verifier of the boundary."""

    anomaly_id: str
    amount: Money
    reason_code: AnomalyType
    explanation: str
    attempts: int
    flags: tuple[str, ...] = ()
    model: str
    simulated: bool


class CreditDenied(_Event):
    """No credit: the monthly cap was already reached (``scanner``), no proposal passed the
    boundary (``boundary``), or the gate refused it (``gate``)."""

    anomaly_id: str
    stage: Literal["scanner", "boundary", "gate"]
    rule: str
    reason: str


class CreditEscalated(_Event):
    """Attempts ran out: a person decides. On a replay nothing is opened (``approval_id`` is
    None): a branch never puts work in a person's queue."""

    anomaly_id: str
    approval_id: str | None
    reason: str


class CreditIssued(_Event):
    """The credit saga completed: posted to the ledger and the customer notified."""

    anomaly_id: str
    customer_id: str
    cycle: int
    amount: Money
    reason_code: AnomalyType
    saga_id: str
    policy_version: str


class CreditCompensated(_Event):
    """A saga step failed and the steps done were undone (the credit reversed)."""

    anomaly_id: str
    amount: Money
    failed_step: str
    reason: str
    undone: tuple[str, ...]


class CreditNeedsHuman(_Event):
    """A compensation kept failing; the saga's escalation asks a person."""

    anomaly_id: str
    approval_id: str
    reason: str


# --- effects (the simulated ledger and notification service) ---------------------------------


class CreditPosted(_Event):
    credit_id: str
    customer_id: str
    cycle: int
    amount: Money
    reason_code: AnomalyType


class CreditReversed(_Event):
    credit_id: str
    customer_id: str
    cycle: int
    amount: Money
    reason: str


class CreditNotice(_Event):
    credit_id: str
    customer_id: str
    amount: Money
    message: str


BillingFact = PlanChanged | ChargePosted | OutageRecorded
"""What the billing and network systems append to the log."""

CreditOutcome = (
    CreditProposed
    | CreditDenied
    | CreditEscalated
    | CreditIssued
    | CreditCompensated
    | CreditNeedsHuman
)
"""What the scanner appends after an ``AnomalyDetected``, for the same anomaly."""

REGISTRY = EventRegistry(
    [
        PlanChanged,
        ChargePosted,
        OutageRecorded,
        AnomalyDetected,
        CreditProposed,
        CreditDenied,
        CreditEscalated,
        CreditIssued,
        CreditCompensated,
        CreditNeedsHuman,
        CreditPosted,
        CreditReversed,
        CreditNotice,
    ]
)
"""Every event type of the workload, by name."""

MODEL_DERIVED: frozenset[str] = frozenset(
    {
        "CreditProposed",
        "CreditIssued",
        "CreditCompensated",
        "CreditNeedsHuman",
        "CreditPosted",
        "CreditReversed",
        "CreditNotice",
    }
)
"""Event types whose content a model produced: each carries model_version and prompt_hash."""


def log_stream(scope: str) -> str:
    return f"billing:{scope}"


def decisions_stream(scope: str) -> str:
    return f"credits:{scope}"


def ledger_stream(scope: str, customer_id: str) -> str:
    return f"ledger:{scope}:{customer_id}"


def notices_stream(scope: str) -> str:
    return f"notices:{scope}"
