"""The spine ablation: one renewal decision under a P3 and a P5 spine, through real boundaries.

Each trial runs one durable :class:`~seamline.boundary.Boundary` per scenario against a
store, so proposals, verdicts, rejects and commits are recorded like any other run. What
differs between the spines is what the proposer is shown and which verifiers stand between
its output and the commit:

- **P5** — the prompt shows the row (state, version) and the moves the transition table
  allows from there; the model proposes one ``TransitionProposal``; the table's verifier
  (legal move, current version) and the policy check it.
- **P3** — the prompt shows the recent event log; the model proposes the next event; only its
  schema and the policy check it, so a well-formed event that skips or repeats a step is
  appended.

The proposer is any :class:`~seamline.models.Model`: a real OpenAI-compatible endpoint, or a
seeded simulated *decider* whose format errors come from a simulated profile and whose task
errors (the wrong legal decision, a skipped step, an illegal move) from
:data:`DECIDER_VERSIONS`. A trial succeeds when the committed decision is the scenario's goal.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from seamline.boundary import (
    Boundary,
    Committed,
    Fail,
    PolicyVerifier,
    Runtime,
    StoreCommit,
    parse_policy,
)
from seamline.budget import Price, PriceTable
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.method._eval import DECISION, EVENT_STATE, NextEvent, Scenario
from seamline.models import Message, Model, ModelRequest, SimulatedModel
from seamline.models._simulated import PROFILES, SimProfile
from seamline.patterns import TransitionProposal
from seamline.store import Row, Store, UnitOfWork

__all__ = [
    "DECIDER_VERSIONS",
    "AblationResult",
    "Decider",
    "DeciderVersion",
    "real_decider",
    "run_ablation",
    "simulated_decider",
]

Spine = Literal["P3", "P5"]
SPINES: tuple[Spine, ...] = ("P3", "P5")

ROW_VERSION = 3
"""The decision row's version when the scenario starts (created, opened, assessing)."""


@dataclass(frozen=True, slots=True)
class DeciderVersion:
    """A simulated decider: a simulated profile for format and policy errors, plus task errors.

    Rates are per attempt. After a reject the decider heeds the hint: each task error's rate is
    multiplied by ``feedback``.
    """

    name: str
    profile: SimProfile
    wrong_decision: float
    """Picks the wrong legal decision (offer vs none); scaled by the scenario's difficulty."""
    skip_step: float
    """Shown a log, jumps or repeats a step (e.g. ``offer_sent`` straight from assessing)."""
    bad_choice: float
    """Shown the allowed moves, still names another one or an old version."""
    feedback: float = 0.5


DECIDER_VERSIONS: Mapping[str, DeciderVersion] = {
    "typical-v1": DeciderVersion("typical-v1", PROFILES["typical-v1"], 0.06, 0.08, 0.04),
    "typical-v2": DeciderVersion("typical-v2", PROFILES["typical-v2"], 0.05, 0.12, 0.03),
}
"""The two simulated versions the ablation compares. The rates are assumptions (docs/eval.md):
typical-v2 is better at format and choice, more eager to skip steps in free form."""


class _DecisionBehaviour:
    """What a simulated decider answers: the goal decision, with the version's task errors."""

    def __init__(self, version: DeciderVersion, scenarios: Mapping[str, Scenario]) -> None:
        self._v = version
        self._scenarios = scenarios

    def propose(self, request: ModelRequest, rng: random.Random) -> dict[str, Any]:
        s = self._scenarios[request.metadata["input"]]
        retried = any('"status":"rejected"' in m.content for m in request.messages)
        heed = self._v.feedback if retried else 1.0
        wrong = rng.random() < self._v.wrong_decision * (0.5 + s.difficulty) * heed
        other = "no_offer" if s.goal == "offer_ready" else "offer_ready"
        decided = other if wrong else s.goal
        discount = (
            Decimal(rng.randint(5, int(s.cap * 100))) / 100
            if decided == "offer_ready"
            else Decimal(0)
        )
        if request.metadata["boundary"].endswith("p5"):
            target, version = decided, ROW_VERSION
            if rng.random() < self._v.bad_choice * heed:
                target, version = rng.choice([("offer_sent", ROW_VERSION), (decided, 2)])
            return {
                "from": "assessing",
                "to": target,
                "if_version": version,
                "patch": {"discount": str(discount)},
            }
        kind = "offer_prepared" if decided == "offer_ready" else "offer_declined"
        if rng.random() < self._v.skip_step * (0.5 + s.difficulty) * heed:
            kind = rng.choice(["offer_sent", "assessment_started"])
        return {"type": kind, "discount": str(discount)}

    def out_of_policy(self, good: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        over = str(rng.choice([Decimal("0.40"), Decimal("0.50"), Decimal("0.90")]))
        if "patch" in good:
            return {**good, "patch": {**good["patch"], "discount": over}}
        return {**good, "discount": over}

    def obey_injection(
        self, good: dict[str, Any], instruction: str, rng: random.Random
    ) -> dict[str, Any]:
        return good  # the scenarios carry no untrusted text


@dataclass(frozen=True, slots=True)
class Decider:
    """A proposer for the ablation: a label, whether it is simulated, and a model per trial
    (a simulated decider takes the trial's seed; a real model ignores it)."""

    label: str
    simulated: bool
    model_for: Callable[[int, Mapping[str, Scenario]], Model]
    kind: str = "decider"


def simulated_decider(version: str | DeciderVersion) -> Decider:
    """A seeded simulated decider: a version named in :data:`DECIDER_VERSIONS`, or your own."""
    if isinstance(version, str):
        if version not in DECIDER_VERSIONS:
            raise ConfigError(
                f"unknown simulated decider {version!r}; known: {', '.join(DECIDER_VERSIONS)}"
            )
        version = DECIDER_VERSIONS[version]
    v = version
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))

    def model_for(seed: int, scenarios: Mapping[str, Scenario]) -> Model:
        return SimulatedModel(
            _DecisionBehaviour(v, scenarios), profile=v.profile, seed=seed, clock=clock
        )

    return Decider(v.name, True, model_for)


def real_decider(model: Model) -> Decider:
    """A real model (e.g. an OpenAI-compatible endpoint) as the ablation's proposer."""
    return Decider(model.name, False, lambda _seed, _scenarios: model)


# --- the two spines --------------------------------------------------------------------------


def _facts(s: Scenario) -> str:
    return (
        f"Customer {s.id}: {s.contract} contract, tenure {s.tenure} months, "
        f"monthly charge {s.monthly:.2f}, {'senior citizen' if s.senior else 'not a senior'}.\n"
        f"Intent: make an in-policy retention offer to an at-risk contract (month-to-month, or "
        f"tenure under 12 months); leave a settled contract alone.\n"
        f"Policy {s.policy}: discount at most {s.cap} (as a fraction of the monthly charge)."
    )


def _p5_prompt(s: Scenario) -> list[Message]:
    allowed = sorted(DECISION.transitions["assessing"])
    return [
        Message(
            "system",
            "You choose the next move of one contract-renewal workflow. Answer with one JSON "
            'object only: {"from": STATE, "to": STATE, "if_version": N, '
            '"patch": {"discount": "0.xx"}}. Use "0" as the discount when there is no offer.',
        ),
        Message(
            "user",
            f"{_facts(s)}\nThe row is in state 'assessing' at version {ROW_VERSION}. Allowed "
            f"moves from here: {', '.join(allowed)} (needs_person hands it to a specialist).",
        ),
    ]


def _p3_log(s: Scenario) -> str:
    lines = [
        ("day -90", "window_opened", {"contract": s.contract}),
        ("day -88", "signals_gathered", {"tenure": s.tenure, "monthly": round(s.monthly, 2)}),
        ("day -60", "assessment_started", {}),
    ]
    return "\n".join(f"{day} {kind} {json.dumps(data)}" for day, kind, data in lines)


def _p3_prompt(s: Scenario) -> list[Message]:
    vocabulary = ", ".join(sorted(EVENT_STATE))
    return [
        Message(
            "system",
            "You append the next event to the event log of one contract-renewal workflow. "
            'Answer with one JSON object only: {"type": EVENT, "discount": "0.xx"}. '
            f"Event types: {vocabulary}.",
        ),
        Message("user", f"{_facts(s)}\nRecent log:\n{_p3_log(s)}\nWhat is the next event?"),
    ]


def _policy(spine: Spine) -> PolicyVerifier:
    field = "patch.discount" if spine == "P5" else "discount"
    return PolicyVerifier(
        parse_policy(
            {
                "policy": "renewal-decision",
                "version": "2026.11",
                "rules": [
                    {
                        "id": "discount.hard_cap",
                        "field": field,
                        "max": "0.30",
                        "hint": "offer at most 30% off (35% for seniors)",
                    }
                ],
                "tenants": {"senior": {"discount.hard_cap": {"max": "0.35"}}},
            }
        )
    )


def _row(s: Scenario) -> Row:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Row(s.id, DECISION.kind, "assessing", ROW_VERSION, "{}", at, at)


def _commit_p5(c: TransitionProposal, s: Scenario, unit: UnitOfWork) -> dict[str, str]:
    return {"state": c.target, "discount": str(c.patch.get("discount", "0"))}


def _commit_p3(c: NextEvent, s: Scenario, unit: UnitOfWork) -> dict[str, str]:
    return {"state": EVENT_STATE[c.type], "event": c.type, "discount": str(c.discount)}


def _boundary(spine: Spine, model: Model) -> Boundary[Scenario, Any]:
    tenant: Callable[[Scenario], str | None] = lambda s: "senior" if s.senior else None  # noqa: E731
    if spine == "P5":
        return Boundary[Scenario, TransitionProposal](
            "decide-p5",
            model=model,
            prompt=_p5_prompt,
            output=TransitionProposal,
            verifiers=[DECISION.verifier(lambda ctx: _row(ctx.input)), _policy("P5")],
            commit=StoreCommit(_commit_p5),
            attempts=3,
            on_exhausted=Fail(),
            input_key=lambda s: s.id,
            tenant=tenant,
            kind="eval-decision",
        )
    return Boundary[Scenario, NextEvent](
        "decide-p3",
        model=model,
        prompt=_p3_prompt,
        output=NextEvent,
        verifiers=[_policy("P3")],
        commit=StoreCommit(_commit_p3),
        attempts=3,
        on_exhausted=Fail(),
        input_key=lambda s: s.id,
        tenant=tenant,
        kind="eval-decision",
    )


# --- running it --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AblationResult:
    """One configuration's trials: scenario id -> one success flag per trial."""

    config: str
    spine: Spine
    model: str
    simulated: bool
    results: dict[str, list[bool]]
    kind: str = "ablation_result"


def _succeeded(result: object, s: Scenario) -> bool:
    return isinstance(result, Committed) and result.result.get("state") == s.goal


async def run_ablation(
    scenarios: Sequence[Scenario],
    *,
    deciders: Sequence[Decider],
    store: Store,
    trials: int,
    seed: int = 0,
    run_prefix: str = "eval",
    on_trial: Callable[[], None] | None = None,
) -> list[AblationResult]:
    """Every scenario ``trials`` times under each spine and decider, each trial a durable
    boundary run recorded in ``store`` under run id ``{run_prefix}:{spine}:{decider}:{t}``.

    Re-running with the same prefix on the same store returns the recorded commits instead of
    proposing again (the boundary's exactly-once rule), so an interrupted evaluation resumes.
    """
    if trials < 1 or not scenarios or not deciders:
        raise ConfigError(
            f"need trials >= 1, a scenario and a decider; got {trials}, {len(scenarios)}, "
            f"{len(deciders)}"
        )
    by_id = {s.id: s for s in scenarios}
    if len(by_id) != len(scenarios):
        raise ConfigError("scenario ids must be unique")
    prices = PriceTable()
    for d in deciders:
        if not d.simulated:  # pass^k is about decisions; real calls are not priced here
            prices = prices.with_price(d.label, Price(Decimal(0), Decimal(0)))
    runtime = Runtime(store, clock=VirtualClock(datetime(2026, 1, 1, tzinfo=UTC)), prices=prices)
    out: list[AblationResult] = []
    for d in deciders:
        for spine in SPINES:
            results: dict[str, list[bool]] = {s.id: [] for s in scenarios}
            for t in range(trials):
                boundary = _boundary(spine, d.model_for(seed + t, by_id))
                run_id = f"{run_prefix}:{spine}:{d.label}:{t}"
                for s in scenarios:
                    result = await boundary.run(s, runtime=runtime, run_id=run_id)
                    results[s.id].append(_succeeded(result, s))
                    if on_trial is not None:
                        on_trial()
            out.append(AblationResult(f"{spine} / {d.label}", spine, d.label, d.simulated, results))
    return out
