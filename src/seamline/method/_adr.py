"""Pattern selection in five steps, ending in a six-line architecture decision record.

1. Classify the runtime: conversational (seconds), autonomous (minutes), long-horizon (hours
   to days, or minutes while the outside world changes under the run).
2. Choose the state spine: P5 when the workflow pauses for long or waits on the outside world,
   its state cannot be rebuilt from the original input, and the world can change during a
   pause; P3 when the log must be the truth because replay and branching matter; otherwise
   none.
3. Wrap with coordination: P1 (single owner, deterministic merge) when the work splits into
   sub-tasks; P2 when there are side effects on external systems and partial failure.
4. Bound with control: P4 whenever there are side effects; P6 for legal or financial
   consequences, out-of-policy cases or audit needs.
5. Sequence the build: state schema and console first, then gate and audit, then the
   orchestrator and one worker, then the other workers, then P6 in the order kill switch,
   escalation, approval, throttling.

Everything here is a pure function of the answers: the same answers give the same record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydantic
import yaml

from seamline.errors import ConfigError

__all__ = ["Adr", "AdrAnswers", "decide", "load_answers", "render", "render_reasoning"]


class AdrAnswers(pydantic.BaseModel):
    """The facts about a workload the five steps decide from."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = pydantic.Field(min_length=1)
    work_unit: Literal["seconds", "minutes", "hours", "days"]
    """How long one unit of work takes from start to end."""
    world_changes_mid_run: bool = False
    long_pauses_or_external_waits: bool = False
    state_reconstructible_from_input: bool = True
    world_changes_during_pause: bool = False
    log_is_the_truth: bool = False
    """Replay, branching or 'what did we know when' matter."""
    subtasks: bool = False
    """The work splits into independent sub-tasks for workers."""
    side_effects: bool = True
    external_side_effects_with_partial_failure: bool = False
    legal_or_financial_consequences: bool = False
    out_of_policy_cases: bool = False
    audit_needs: bool = False
    model: str = pydantic.Field(min_length=1)
    date: dt.date


@dataclass(frozen=True, slots=True)
class Adr:
    name: str
    runtime_class: str
    spine: str
    coordination: str
    control: str
    build_sequence: str
    date_and_model: str
    reasons: dict[str, tuple[str, ...]]


_LOG_IS_TRUTH = "the log must be the truth: replay and branching matter"
_NOT = {
    "long pauses or waits on the outside world": "no long pauses or waits on the outside world",
    "state not reconstructible from the original input": (
        "state reconstructible from the original input"
    ),
    "the world can change during a pause": "the world cannot change during a pause",
}
"""Each P5 predicate as it reads when it does not hold: the spine line names these."""


def load_answers(path: str | Path) -> AdrAnswers:
    """Answers from a YAML file; a bad file is a ConfigError naming each problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read answers file {path}: {exc}") from exc
    try:
        return AdrAnswers.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"answers file {path} is not valid: {problems}") from exc


def decide(a: AdrAnswers) -> Adr:
    reasons: dict[str, tuple[str, ...]] = {}

    # 1. runtime class
    if a.work_unit in ("hours", "days"):
        runtime = "long-horizon"
        reasons["runtime"] = (f"a unit of work takes {a.work_unit}",)
    elif a.work_unit == "minutes" and a.world_changes_mid_run:
        runtime = "long-horizon"
        reasons["runtime"] = (
            "a unit of work takes minutes and the outside world changes while it runs",
        )
    elif a.work_unit == "minutes":
        runtime = "autonomous"
        reasons["runtime"] = ("a unit of work takes minutes and the world holds still",)
    else:
        runtime = "conversational"
        reasons["runtime"] = ("a unit of work takes seconds",)

    # 2. spine: the line names the predicates that decided it, whichever way it went
    p5 = {
        "long pauses or waits on the outside world": a.long_pauses_or_external_waits,
        "state not reconstructible from the original input": not a.state_reconstructible_from_input,
        "the world can change during a pause": a.world_changes_during_pause,
    }
    p5_failed = [_NOT[k] for k, v in p5.items() if not v]
    p5_reasons = tuple(f"{k}: {'yes' if v else 'no'}" for k, v in p5.items())
    if all(p5.values()):
        spine = "P5 shared state machine (" + "; ".join(p5) + ")"
        reasons["spine"] = p5_reasons
    elif a.log_is_the_truth:
        spine = "P3 event log (" + "; ".join([_LOG_IS_TRUTH, *p5_failed]) + ")"
        reasons["spine"] = (*p5_reasons, "the log must be the truth: yes")
    else:
        spine = "none (" + "; ".join([*p5_failed, "the log need not be the truth"]) + ")"
        reasons["spine"] = (*p5_reasons, "the log must be the truth: no")
        if runtime == "long-horizon":
            reasons["spine"] += (
                "caution: a long-horizon run with no spine has nothing durable to hold its "
                "state across a pause",
            )

    # 3. coordination
    coordination = []
    why = []
    if a.subtasks:
        coordination.append("P1 hierarchical delegation (single owner, deterministic merge)")
        why.append("the work splits into sub-tasks")
    if a.external_side_effects_with_partial_failure:
        coordination.append("P2 scatter-gather + saga (compensations for partial failure)")
        why.append("side effects on external systems can partly fail")
    reasons["coordination"] = tuple(why) or ("one worker, no external partial failure",)

    # 4. control
    control = []
    why = []
    if a.side_effects:
        control.append("P4 supervisor + gate before every side effect")
        why.append("there are side effects")
    human = [
        label
        for label, on in (
            ("legal or financial consequences", a.legal_or_financial_consequences),
            ("out-of-policy cases", a.out_of_policy_cases),
            ("audit needs", a.audit_needs),
        )
        if on
    ]
    if human:
        control.append("P6 human in the loop (" + ", ".join(human) + ")")
        why.extend(human)
    reasons["control"] = tuple(why) or ("no side effects",)

    # 5. build sequence: state first even without a spine (a session has a state schema too)
    steps = ["state schema and console"]
    if a.side_effects:
        steps.append("gate and audit")
    if coordination:
        steps += ["orchestrator and one worker", "the other workers"]
    else:
        steps.append("the worker")
    if human:
        steps.append("P6: kill switch, escalation, approval, throttling")
    reasons["build"] = ("the method's order: state first, control before scale, people last",)

    return Adr(
        name=a.name,
        runtime_class=runtime,
        spine=spine,
        coordination=" + ".join(coordination) or "none",
        control=" + ".join(control) or "none",
        build_sequence=" -> ".join(steps),
        date_and_model=f"{a.date.isoformat()}; {a.model}",
        reasons=reasons,
    )


def render(adr: Adr) -> str:
    """The six-line record, as Markdown."""
    return "\n".join(
        [
            f"1. Runtime class: {adr.runtime_class}",
            f"2. Spine: {adr.spine}",
            f"3. Coordination: {adr.coordination}",
            f"4. Control: {adr.control}",
            f"5. Build sequence: {adr.build_sequence}",
            f"6. Date and model: {adr.date_and_model}",
        ]
    )


def render_reasoning(adr: Adr) -> str:
    """Why each line is what it is."""
    titles = {
        "runtime": "Runtime class",
        "spine": "Spine",
        "coordination": "Coordination",
        "control": "Control",
        "build": "Build sequence",
    }
    out = [f"# ADR: {adr.name}", "", render(adr), "", "## Reasoning", ""]
    for key, title in titles.items():
        out.append(f"- **{title}**: " + "; ".join(adr.reasons.get(key, ())))
    return "\n".join(out) + "\n"
