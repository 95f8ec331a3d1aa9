"""Evaluation: pass^k over scenarios, bootstrap intervals, and the renewal decision task.

pass^k is the share of scenarios that succeed in all ``k`` trials. With ``n >= k`` trials of
which ``c`` succeeded, C(c, k) / C(n, k) is the unbiased estimate of a scenario's
probability of ``k`` successes out of ``k`` independent trials; pass^k is its mean over
scenarios.

A scenario is a renewal contract paused at its decision (``assessing``), derived from a Telco
row; the spine ablation that runs it through real boundaries is in ``_ablation``.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypeVar

import pydantic

from seamline.errors import ConfigError
from seamline.patterns import StateMachine
from seamline.workloads.renewal import Customer

__all__ = [
    "DECISION",
    "EVENT_STATE",
    "DeltaCI",
    "NextEvent",
    "Scenario",
    "bootstrap_delta",
    "pass_hat_k",
    "scenarios_from",
]

S = TypeVar("S", bound=Hashable)


def pass_hat_k(results: Mapping[S, Sequence[bool]], k: int) -> float:
    """Mean over scenarios of C(c, k) / C(n, k): c successes of n trials, n >= k."""
    if k < 1:
        raise ConfigError(f"k must be at least 1; got {k}")
    if not results:
        raise ConfigError("pass^k needs at least one scenario; got none")
    return statistics.fmean(_scenario_pass(trials, k, s) for s, trials in results.items())


def _scenario_pass(trials: Sequence[bool], k: int, scenario: object = "?") -> float:
    n = len(trials)
    if n < k:
        raise ConfigError(
            f"scenario {scenario!r} has {n} trials; pass^{k} needs at least {k}. "
            "Run more trials or lower k."
        )
    return math.comb(sum(trials), k) / math.comb(n, k)


@dataclass(frozen=True, slots=True)
class DeltaCI:
    """pass^k(b) - pass^k(a) with a percentile bootstrap interval over scenarios."""

    delta: float
    low: float
    high: float
    resamples: int
    kind: str = "delta_ci"


def bootstrap_delta(
    a: Mapping[S, Sequence[bool]],
    b: Mapping[S, Sequence[bool]],
    k: int,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> DeltaCI:
    """The change in pass^k from configuration ``a`` to ``b`` on the same scenarios, with a
    paired bootstrap: scenarios are resampled with replacement, each keeping its pair."""
    if set(a) != set(b):
        raise ConfigError(
            f"the two configurations must share their scenarios; {len(set(a) ^ set(b))} differ"
        )
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ConfigError(f"need resamples >= 1 and 0 < level < 1; got {resamples}, {level}")
    keys = sorted(a, key=repr)
    diffs = [_scenario_pass(b[s], k, s) - _scenario_pass(a[s], k, s) for s in keys]
    if not diffs:
        raise ConfigError("bootstrap needs at least one scenario; got none")
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(resamples))
    tail = (1.0 - level) / 2.0
    lo = means[min(math.floor(tail * resamples), resamples - 1)]
    hi = means[min(math.ceil((1.0 - tail) * resamples) - 1, resamples - 1)]
    return DeltaCI(statistics.fmean(diffs), lo, hi, resamples)


# --- the compact renewal decision task ---------------------------------------------------

DECISION = StateMachine(
    kind="renewal-decision",
    initial="window_open",
    transitions={
        "window_open": frozenset({"assessing"}),
        "assessing": frozenset({"offer_ready", "no_offer", "needs_person"}),
        "needs_person": frozenset({"offer_ready", "no_offer"}),
        "offer_ready": frozenset({"offer_sent"}),
        "offer_sent": frozenset({"accepted", "churning"}),
    },
    terminal=frozenset({"accepted", "churning", "no_offer"}),
)

EVENT_STATE = {
    "offer_prepared": "offer_ready",
    "offer_declined": "no_offer",
    "escalated": "needs_person",
    "offer_sent": "offer_sent",
    "customer_accepted": "accepted",
    "customer_churned": "churning",
    "assessment_started": "assessing",
}
"""The P3 spine's event vocabulary and the state each event implies when folded."""


class NextEvent(pydantic.BaseModel):
    """The P3 spine's schema for a free-form next event."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    type: Literal[
        "offer_prepared",
        "offer_declined",
        "escalated",
        "offer_sent",
        "customer_accepted",
        "customer_churned",
        "assessment_started",
    ]
    discount: Decimal = pydantic.Field(default=Decimal(0), ge=0, le=1)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One contract at its decision point: the initial row, the goal, the policy and the
    intent. ``allowed_tools`` names what the proposer may do at all."""

    id: str
    contract: str
    tenure: int
    monthly: float
    senior: bool
    goal: Literal["offer_ready", "no_offer"]
    cap: Decimal
    intent: str
    difficulty: float
    allowed_tools: tuple[str, ...] = ("propose_next",)
    policy: str = "renewal-2026.11"
    kind: str = "scenario"


def scenarios_from(customers: Sequence[Customer], *, limit: int | None = None) -> list[Scenario]:
    """Scenarios from Telco rows: at-risk contracts (month-to-month, or short tenure) should get
    an in-policy offer; the rest should get none. Borderline rows are harder."""
    out: list[Scenario] = []
    for c in customers[:limit] if limit is not None else customers:
        at_risk = c.contract == "Month-to-month" or c.tenure < 12
        borderline = (c.contract == "Month-to-month") != (c.tenure < 12)
        difficulty = min(1.0, (0.6 if borderline else 0.2) + float(c.monthly_charges) / 400)
        out.append(
            Scenario(
                id=c.customer_id,
                contract=c.contract,
                tenure=c.tenure,
                monthly=float(c.monthly_charges),
                senior=c.senior_citizen,
                goal="offer_ready" if at_risk else "no_offer",
                cap=Decimal("0.35") if c.senior_citizen else Decimal("0.30"),
                intent="retain an at-risk customer within policy"
                if at_risk
                else "leave a settled contract alone",
                difficulty=difficulty,
            )
        )
    return out
