"""The credit boundary: what the model is asked, what it must answer, and what verifies it.

The model sees one anomaly the scanner found (type, amount, evidence), the monthly cap and
what the customer was already credited for that cycle. It proposes a credit: an amount, a
reason code and an explanation for the customer. Verifiers, all deterministic: the schema
(``CreditProposal``, unknown fields refused); the reason code is the detected anomaly's type;
the amount is no more than the anomalous amount; and the versioned policy
(``policies/billing-credits-2026.11.yaml``: at least 0.01, at most 100.00 per customer per
cycle all credits included, review above 50.00, known reason codes, no promises in the
explanation). The same policy is checked again by the gate before the credit is issued.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic

from seamline.boundary import (
    Boundary,
    Escalate,
    Fail,
    Policy,
    PolicyVerifier,
    Rule,
    StoreCommit,
    Verdict,
    VerifyContext,
    load_policy,
)
from seamline.clock import Clock
from seamline.errors import ConfigError
from seamline.models import Message, Model, ModelRequest, SimulatedModel
from seamline.workloads.billing._events import ANOMALY_TYPES, AnomalyType, Money

__all__ = [
    "BOUNDARY",
    "CreditBehaviour",
    "CreditCase",
    "CreditProposal",
    "CreditPolicy",
    "credit_boundary",
    "default_policy",
    "monthly_cap",
    "policy_inputs",
    "simulated_credit_model",
]

BOUNDARY = "billing-credit"
_POLICY_FILE = Path(__file__).parent / "policies" / "billing-credits-2026.11.yaml"


def default_policy() -> Policy:
    return load_policy(_POLICY_FILE)


def monthly_cap(policy: Policy) -> Decimal:
    """The per-customer, per-cycle cap the policy sets (rule ``credit.monthly_cap``)."""
    rule = next((r for r in policy.rules if r.id == "credit.monthly_cap"), None)
    if rule is None or rule.max is None:
        raise ConfigError(
            f"policy {policy.policy} {policy.version} has no credit.monthly_cap rule with a max; "
            "the scanner needs it to tell the model the remaining cap"
        )
    return rule.max


class CreditCase(pydantic.BaseModel):
    """What the proposer is shown for one anomaly."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    anomaly_id: str
    anomaly_type: AnomalyType
    customer_id: str
    cycle: int
    anomalous_amount: Money
    evidence: str
    monthly_cap: Money
    credited_this_cycle: Money
    policy_version: str

    @property
    def remaining_cap(self) -> Decimal:
        return self.monthly_cap - self.credited_this_cycle


class CreditProposal(pydantic.BaseModel):
    """The model's answer: one credit."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    amount: Decimal = pydantic.Field(ge=0, le=100_000, decimal_places=2)
    reason_code: AnomalyType
    explanation: str = pydantic.Field(min_length=20, max_length=600)


def policy_inputs(proposal: CreditProposal, credited: Decimal) -> dict[str, str]:
    """What the policy checks: the proposal, and the cycle's total with it included."""
    return {
        "amount": str(proposal.amount),
        "reason_code": proposal.reason_code,
        "explanation": proposal.explanation,
        "month_total": str(credited + proposal.amount),
    }


class CreditPolicy:
    """The versioned policy over a proposal and the customer's credits for the cycle."""

    def __init__(self, policy: Policy) -> None:
        self.verifier = PolicyVerifier(policy, name=f"policy:{policy.policy}")

    @property
    def name(self) -> str:
        return self.verifier.name

    def verify(self, candidate: CreditProposal, ctx: VerifyContext[Any]) -> Verdict:
        case: CreditCase = ctx.input
        return self.verifier.verify(policy_inputs(candidate, case.credited_this_cycle), ctx)


def _reason_matches(p: CreditProposal, ctx: VerifyContext[Any]) -> bool:
    case: CreditCase = ctx.input
    return p.reason_code == case.anomaly_type


def _within_anomaly(p: CreditProposal, ctx: VerifyContext[Any]) -> bool:
    case: CreditCase = ctx.input
    return p.amount <= case.anomalous_amount


def prompt(case: CreditCase) -> list[Message]:
    facts = case.model_dump(mode="json")
    facts["remaining_cap"] = str(case.remaining_cap)
    return [
        Message(
            "system",
            "You are a billing analyst. A deterministic scanner found the billing anomaly "
            "below. Propose one credit as a JSON object matching the CreditProposal schema: "
            "amount (no more than anomalous_amount and no more than remaining_cap), "
            "reason_code (the anomaly_type) and explanation (one or two sentences to the "
            "customer, making no promises).",
        ),
        Message("user", "Case (JSON): " + json.dumps(facts, sort_keys=True)),
    ]


def credit_boundary(
    model: Model, policy: Policy, *, attempts: int = 3, replay: bool = False
) -> Boundary[CreditCase, CreditProposal]:
    """The boundary every credit passes through. When attempts run out a person decides;
    on a replay (``replay=True``) the boundary fails instead, so a branch opens no escalation."""
    return Boundary(
        BOUNDARY,
        model=model,
        kind="billing",
        prompt=prompt,
        output=CreditProposal,
        verifiers=[
            Rule(
                "credit.reason_matches_anomaly",
                _reason_matches,
                "reason_mismatch",
                "set reason_code to the anomaly_type of the case",
                field="reason_code",
                message="reason_code is not the type of the detected anomaly",
            ),
            Rule(
                "credit.within_anomaly",
                _within_anomaly,
                "exceeds_anomalous_amount",
                "the amount may not exceed anomalous_amount",
                field="amount",
                message="the credit is larger than the anomalous amount",
            ),
            CreditPolicy(policy),
        ],
        commit=StoreCommit(lambda proposal, case, unit: proposal.model_dump(mode="json")),
        attempts=attempts,
        on_exhausted=Fail()
        if replay
        else Escalate(
            decision="decide the credit for this billing anomaly, or none",
            options=("approve an edited proposal", "reject", "take over manually"),
        ),
        input_key=lambda case: case.anomaly_id,
    )


_EXPLAIN: dict[str, str] = {
    "double_charge": "We charged you twice for billing cycle {cycle}; {amount} is credited "
    "back to your account.",
    "charge_after_downgrade": "After your move to a cheaper plan we kept charging the old "
    "price in cycle {cycle}; the {amount} difference is credited to your account.",
    "outage": "Your service was interrupted during billing cycle {cycle}; {amount} is "
    "credited for the time without service.",
}


class CreditBehaviour:
    """How the simulated model answers a credit case (it reads the case it was given). An
    out-of-policy answer is one of: more than the anomaly, the wrong reason code, an amount
    far over the monthly cap, or a promise in the explanation."""

    def propose(self, request: ModelRequest, rng: random.Random) -> dict[str, Any]:
        case = json.loads(request.messages[1].content.split(": ", 1)[1])
        amount = min(Decimal(case["anomalous_amount"]), Decimal(case["remaining_cap"]))
        kind = case["anomaly_type"]
        return {
            "amount": str(amount),
            "reason_code": kind,
            "explanation": _EXPLAIN[kind].format(cycle=case["cycle"], amount=amount),
        }

    def out_of_policy(self, good: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        how = rng.randrange(4)
        if how == 0:
            return {**good, "amount": str(Decimal(good["amount"]) * 2)}
        if how == 1:
            others = [t for t in ANOMALY_TYPES if t != good["reason_code"]]
            return {**good, "reason_code": rng.choice(others)}
        if how == 2:
            return {**good, "amount": "250.00"}
        return {**good, "explanation": good["explanation"] + " We guarantee it will not recur."}

    def obey_injection(
        self, good: dict[str, Any], instruction: str, rng: random.Random
    ) -> dict[str, Any]:
        return good  # no untrusted text reaches this prompt


def simulated_credit_model(
    profile: str = "typical-v1", *, seed: int = 0, clock: Clock | None = None
) -> SimulatedModel:
    """The workload's simulated model (its id starts with ``sim:``, like every simulated one)."""
    return SimulatedModel(CreditBehaviour(), profile=profile, seed=seed, clock=clock)
