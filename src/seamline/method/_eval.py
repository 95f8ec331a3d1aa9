"""Evaluation: pass^k over scenarios, bootstrap intervals, and the P3-vs-P5 spine ablation.

pass^k is the share of scenarios that succeed in all ``k`` trials. With ``n >= k`` trials of
which ``c`` succeeded, C(c, k) / C(n, k) is the unbiased estimate of a scenario's
probability of ``k`` successes out of ``k`` independent trials; pass^k is its mean over
scenarios.

The ablation is a compact SIMULATED decision task, not the 90-day job: every scenario is a
renewal contract paused in ``assessing``; the simulated model proposes the next move, the
spine's verifiers accept or reject it (up to three attempts, rejects fed back), and the trial
succeeds when the committed move is the scenario's goal. The model's error rates are
assumptions in :data:`MODEL_VERSIONS`; the checks are the real ones: the P5 spine runs
``StateMachine.verifier`` on a ``TransitionProposal``, the P3 spine validates a free-form
next event against its schema and the policy only.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import pydantic

from seamline.boundary import Reject, VerifyContext
from seamline.errors import ConfigError
from seamline.patterns import StateMachine, TransitionProposal
from seamline.store import Row
from seamline.workloads.renewal import Customer

__all__ = [
    "DECISION",
    "MODEL_VERSIONS",
    "AblationResult",
    "DeltaCI",
    "ModelVersion",
    "NextEvent",
    "Scenario",
    "bootstrap_delta",
    "pass_hat_k",
    "run_ablation",
    "scenarios_from",
]

S = TypeVar("S", bound=Hashable)
Spine = Literal["P3", "P5"]


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


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """Assumed per-proposal error rates of a simulated model version (see docs/eval.md)."""

    name: str
    wrong_decision: float
    """Picks the wrong legal move (offer vs none); scaled by the scenario's difficulty."""
    over_cap: float
    """Proposes a discount above the cap."""
    skip_step: float
    """Free-form only: jumps or repeats a step (e.g. ``offer_sent`` from ``assessing``)."""
    malformed: float
    """Free-form only: an event outside the vocabulary or with unknown fields."""
    bad_choice: float
    """P5 only: a target outside the allowed list, or a stale version."""
    feedback: float = 0.5
    """How much a reject's hint cuts the same error on the next attempt."""


MODEL_VERSIONS = {
    "typical-v1": ModelVersion("typical-v1", 0.06, 0.10, 0.08, 0.06, 0.04),
    "typical-v2": ModelVersion("typical-v2", 0.05, 0.06, 0.12, 0.03, 0.03),
}


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _row(s: Scenario) -> Row:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Row(s.id, DECISION.kind, "assessing", 3, "{}", at, at)


def _discount(s: Scenario, rng: random.Random, over: bool) -> Decimal:
    if over:
        return s.cap + Decimal(rng.randint(1, 20)) / 100
    return Decimal(rng.randint(5, int(s.cap * 100))) / 100


def _trial(s: Scenario, m: ModelVersion, spine: Spine, seed: int, attempts: int = 3) -> bool:
    """One trial: True when the goal move is committed in policy within ``attempts``."""
    row = _row(s)
    ctx: VerifyContext[Any] = VerifyContext("renewal-decision", s.id, s, 1, row.updated_at)
    verifier = DECISION.verifier(lambda _ctx: row)
    scale = {"cap": 1.0, "choice": 1.0, "malformed": 1.0}
    for attempt in range(1, attempts + 1):
        rng = _rng(m.name, spine, s.id, seed, attempt)
        wrong = rng.random() < m.wrong_decision * (0.5 + s.difficulty)
        decided = ("no_offer" if s.goal == "offer_ready" else "offer_ready") if wrong else s.goal
        over = decided == "offer_ready" and rng.random() < m.over_cap * scale["cap"]
        discount = _discount(s, rng, over) if decided == "offer_ready" else Decimal(0)
        if spine == "P5":
            target: str = decided
            version = 3
            if rng.random() < m.bad_choice * scale["choice"]:
                target, version = rng.choice([("offer_sent", 3), (decided, 2)])
            proposal = TransitionProposal.model_validate(
                {"from": "assessing", "to": target, "if_version": version}
            )
            verdict = verifier.verify(proposal, ctx)
            if isinstance(verdict, Reject):
                scale["choice"] *= m.feedback
                continue
            if discount > s.cap:  # the policy verifier
                scale["cap"] *= m.feedback
                continue
            return target == s.goal
        raw: dict[str, Any] = {
            "type": "offer_prepared" if decided == "offer_ready" else "offer_declined",
            "discount": str(discount),
        }
        if rng.random() < m.malformed * scale["malformed"]:
            raw = {**raw, "type": rng.choice(["send_offer", "offer-prepared"])}
        elif rng.random() < m.skip_step * (0.5 + s.difficulty):
            raw = {**raw, "type": rng.choice(["offer_sent", "assessment_started"])}
        try:
            event = NextEvent.model_validate(raw)
        except pydantic.ValidationError:
            scale["malformed"] *= m.feedback
            continue
        if event.discount > s.cap:
            scale["cap"] *= m.feedback
            continue
        # Schema and policy passed: the event is appended; nothing checks the sequence.
        return EVENT_STATE[event.type] == s.goal
    return False  # attempts ran out: escalated to a person, not the goal


@dataclass(frozen=True, slots=True)
class AblationResult:
    config: str
    spine: Spine
    model: str
    results: dict[str, list[bool]]
    kind: str = "ablation_result"


def run_ablation(
    scenarios: Sequence[Scenario],
    *,
    trials: int,
    seed: int = 0,
    versions: Sequence[str] = ("typical-v1", "typical-v2"),
) -> list[AblationResult]:
    """Every scenario ``trials`` times (model seeds ``seed``..) under each spine and version."""
    if trials < 1 or not scenarios:
        raise ConfigError(f"need trials >= 1 and a scenario; got {trials}, {len(scenarios)}")
    unknown = [v for v in versions if v not in MODEL_VERSIONS]
    if unknown:
        raise ConfigError(f"unknown model versions {unknown}; known: {sorted(MODEL_VERSIONS)}")
    out: list[AblationResult] = []
    for v in versions:
        for spine in ("P3", "P5"):
            m = MODEL_VERSIONS[v]
            res = {s.id: [_trial(s, m, spine, seed + t) for t in range(trials)] for s in scenarios}
            out.append(AblationResult(f"{spine} / {v}", spine, v, res))
    return out
