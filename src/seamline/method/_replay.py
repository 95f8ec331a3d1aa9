"""Replay divergence: recovery replay and re-derivation, two tools that are never confused.

*Recovery replay* answers "can this run be reproduced from its record?". It rebuilds a
:class:`RecordedModel` from the ``proposed`` events of a boundary, runs the same boundary on
the same inputs into a scratch store, and compares the two records attempt by attempt: prompt
hash, raw output, verdicts, accepted candidate and committed result must be identical.

*Re-derivation* answers "what would another model or prompt version have decided?". It runs
the recorded inputs through the new model into a scratch store, diffs proposals, verdicts and
would-be commits against the original, and holds every changed decision for a person in the
approval queue. The original history (events, rows, commit ledger) is only read.

Both take the boundary as declared (its model is swapped on a shallow copy) and the inputs as
:class:`ReplayInput` values: the boundary records neither its input nor how it was built, so
the caller supplies them. :func:`renewal_inputs` rebuilds them for the renewal workload.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from seamline import codec
from seamline.boundary import Boundary, Runtime
from seamline.budget import PriceTable
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.models import Model, RecordedModel, ToolCall, Usage
from seamline.models._recorded import RecordingKey
from seamline.models._types import ModelResponse
from seamline.store import Event, Store, UnitOfWork

__all__ = [
    "AttemptTrace",
    "ChangedDecision",
    "FieldDivergence",
    "InstanceTrace",
    "Mismatch",
    "RecoveryReport",
    "RederivationReport",
    "ReplayInput",
    "SpineRecommendation",
    "read_trace",
    "recovery_replay",
    "recommend",
    "rederive",
    "renewal_inputs",
]

I = TypeVar("I")  # noqa: E741 - the boundary's input type
Spine = Literal["P3", "P5"]


@dataclass(frozen=True)
class ReplayInput(Generic[I]):
    """One recorded boundary instance: the run id and idempotency key it ran under, and the
    input it was given."""

    run_id: str
    key: str
    input: I


# --- what a record says ----------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptTrace:
    """One attempt as recorded: what was asked (hash), said (raw) and decided (codes)."""

    number: int
    prompt_hash: str | None
    raw: str | None
    outcome: Literal["accepted", "rejected", "failed", "proposed"]
    codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceTrace:
    """One boundary instance read back from its event stream."""

    key: str
    attempts: tuple[AttemptTrace, ...]
    candidate_json: str | None
    ending: Literal["committed", "escalated", "failed", "open"]
    result_json: str | None
    failure: str | None
    models: tuple[str, ...]
    simulated: bool

    @property
    def candidate(self) -> dict[str, Any]:
        value = codec.decode(self.candidate_json) if self.candidate_json else {}
        return value if isinstance(value, dict) else {}

    def summary(self) -> str:
        return f"failed:{self.failure}" if self.ending == "failed" else self.ending


def read_trace(key: str, events: Sequence[Event]) -> InstanceTrace:
    """Fold one instance's events (stream ``sdb:<boundary>:<key>``) into a trace."""
    attempts: dict[int, AttemptTrace] = {}
    candidate: str | None = None
    ending: Literal["committed", "escalated", "failed", "open"] = "open"
    result: str | None = None
    failure: str | None = None
    models: list[str] = []
    simulated = False
    for e in events:
        p = e.payload
        if e.type == "proposed":
            attempts[p["attempt"]] = AttemptTrace(p["attempt"], e.prompt_hash, p["raw"], "proposed")
            models.append(p["model"])
            simulated = simulated or bool(p["simulated"])
        elif e.type == "rejected":
            codes = tuple(r["reason_code"] for r in p["rejects"])
            old = attempts.get(p["attempt"])
            attempts[p["attempt"]] = AttemptTrace(
                p["attempt"],
                old.prompt_hash if old else None,
                old.raw if old else None,
                "rejected",
                codes,
            )
        elif e.type == "model_failed":
            attempts[p["attempt"]] = AttemptTrace(
                p["attempt"], e.prompt_hash, None, "failed", (p["code"],)
            )
        elif e.type == "accepted":
            candidate = codec.encode(p["candidate"])
            old = attempts.get(p["attempt"]) if p["attempt"] is not None else None
            if old is not None:
                attempts[old.number] = AttemptTrace(
                    old.number, old.prompt_hash, old.raw, "accepted", tuple(p["flags"])
                )
        elif e.type == "committed":
            ending, result = "committed", codec.encode(p["result"])
        elif e.type == "escalated":
            ending = "escalated"
        elif e.type == "failed":
            ending, failure = "failed", p["reason_code"]
    return InstanceTrace(
        key,
        tuple(attempts[n] for n in sorted(attempts)),
        candidate,
        ending,
        result,
        failure,
        tuple(dict.fromkeys(models)),
        simulated,
    )


async def _stream(store: Store, stream: str) -> list[Event]:
    out: list[Event] = []
    while page := await store.read_stream(stream, after=out[-1].stream_seq if out else 0):
        out.extend(page)
    return out


async def _trace(store: Store, boundary: Boundary[Any, Any], key: str) -> InstanceTrace | None:
    events = await _stream(store, boundary.stream_for(key))
    return read_trace(key, events) if events else None


def _with_model(boundary: Boundary[I, Any], model: Model) -> Boundary[I, Any]:
    twin = copy.copy(boundary)
    twin.model = model
    return twin


def _input_id(boundary: Boundary[I, Any], item: I) -> str:
    # key_for builds "run:name:input-key"; with an empty run id only the input key follows.
    return boundary.key_for(item, "")[len(boundary.name) + 2 :]


# --- recovery replay ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """Where a replayed instance differs from its record."""

    key: str
    what: str
    recorded: str
    replayed: str


@dataclass(frozen=True)
class RecoveryReport:
    """The outcome of a recovery replay; ``exact`` when every instance was reproduced."""

    boundary: str
    instances: int
    reproduced: int
    mismatches: tuple[Mismatch, ...]
    not_recorded: tuple[str, ...]
    kind: Literal["recovery_replay"] = "recovery_replay"

    @property
    def exact(self) -> bool:
        return not self.mismatches and not self.not_recorded and self.reproduced == self.instances


def _compare(a: InstanceTrace, b: InstanceTrace) -> list[Mismatch]:
    out: list[Mismatch] = []
    if len(a.attempts) != len(b.attempts):
        out.append(Mismatch(a.key, "attempts", str(len(a.attempts)), str(len(b.attempts))))
    for x, y in zip(a.attempts, b.attempts, strict=False):
        for what in ("prompt_hash", "raw", "outcome", "codes"):
            if getattr(x, what) != getattr(y, what):
                where = f"attempt {x.number} {what}"
                out.append(Mismatch(a.key, where, str(getattr(x, what)), str(getattr(y, what))))
    for what in ("candidate_json", "ending", "result_json", "failure"):
        if getattr(a, what) != getattr(b, what):
            out.append(Mismatch(a.key, what, str(getattr(a, what)), str(getattr(b, what))))
    return out


def _recordings(
    boundary: Boundary[I, Any], item: I, events: Sequence[Event]
) -> dict[RecordingKey, ModelResponse]:
    found: dict[RecordingKey, ModelResponse] = {}
    input_id = _input_id(boundary, item)
    for e in events:
        if e.type != "proposed":
            continue
        p = e.payload
        found[(boundary.name, input_id, p["attempt"])] = ModelResponse(
            text=p["raw"],
            model=p["model"],
            model_version=e.model_version or "",
            usage=Usage(*p["usage"]),
            latency_ms=p["latency_ms"],
            tool_calls=tuple(ToolCall(*c) for c in p["tool_calls"]),
            finish_reason=p["finish_reason"],
            simulated=p["simulated"],
        )
    return found


async def recovery_replay(
    store: Store,
    boundary: Boundary[I, Any],
    inputs: Sequence[ReplayInput[I]],
    *,
    scratch: Store,
    prices: PriceTable | None = None,
) -> RecoveryReport:
    """Re-run ``inputs`` through ``boundary`` with the recorded outputs into ``scratch`` and
    prove the result matches the record in ``store`` exactly.

    Each instance runs under its recorded run id and key, so its stream has the same name in
    both stores. ``scratch`` must not hold these instances yet (a fresh store); ``store`` is
    only read. Budgets are not re-applied: the recorded outputs already reflect any switch.
    ``prices`` is the price table the run used (the default table prices ``sim:*``).
    """
    recordings: dict[RecordingKey, ModelResponse] = {}
    originals: dict[str, InstanceTrace] = {}
    missing: list[str] = []
    started: dict[str, datetime] = {}
    for item in inputs:
        events = await _stream(store, boundary.stream_for(item.key))
        if not events:
            missing.append(item.key)
            continue
        recordings.update(_recordings(boundary, item.input, events))
        originals[item.key] = read_trace(item.key, events)
        started[item.key] = events[0].recorded_at
    names = Counter(r.model for r in recordings.values())
    recorded = RecordedModel(recordings, name=names.most_common(1)[0][0] if names else "sim:none")
    twin = _with_model(boundary, recorded)
    mismatches: list[Mismatch] = []
    reproduced = 0
    for item in inputs:
        if item.key not in originals:
            continue
        runtime = Runtime(scratch, VirtualClock(started[item.key]), prices or PriceTable())
        await twin.run(item.input, runtime=runtime, run_id=item.run_id, key=item.key)
        again = await _trace(scratch, boundary, item.key)
        assert again is not None  # the run just ended and wrote its stream
        found = _compare(originals[item.key], again)
        mismatches.extend(found)
        reproduced += not found
    return RecoveryReport(boundary.name, len(inputs), reproduced, tuple(mismatches), tuple(missing))


# --- re-derivation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDivergence:
    """How often one candidate field changed among instances accepted on both sides."""

    field: str
    compared: int
    changed: int

    @property
    def rate(self) -> float:
        return self.changed / self.compared if self.compared else 0.0


@dataclass(frozen=True)
class ChangedDecision:
    """One instance whose decision differs under the new model, as held for review."""

    key: str
    original: str
    new: str
    changes: tuple[str, ...]
    review_id: str | None = None


@dataclass(frozen=True)
class SpineRecommendation:
    """Advice to move a workload's state spine from P3 to P5."""

    move: str
    divergence: float
    threshold: float
    reason: str
    kind: Literal["spine_recommendation"] = "spine_recommendation"


@dataclass(frozen=True)
class RederivationReport:
    """What changed when the recorded inputs were run through another model or prompt."""

    boundary: str
    original_models: tuple[str, ...]
    new_model: str
    simulated: bool
    instances: int
    proposals_changed: int
    verdicts_changed: int
    decisions_changed: int
    fields: tuple[FieldDivergence, ...]
    changed: tuple[ChangedDecision, ...]
    not_recorded: tuple[str, ...]
    spine: Spine
    threshold: float
    recommendation: SpineRecommendation | None
    kind: Literal["rederivation"] = "rederivation"

    @property
    def divergence_rate(self) -> float:
        """The share of instances whose decision (ending or would-be commit) changed."""
        return self.decisions_changed / self.instances if self.instances else 0.0


def _show(value: object) -> str:
    return value if isinstance(value, str) else codec.encode(value)


def _decision_changes(
    a: InstanceTrace, b: InstanceTrace, fields: Sequence[str] | None
) -> tuple[str, ...]:
    changes: list[str] = []
    if a.summary() != b.summary():
        changes.append(f"{a.summary()}→{b.summary()}")
    if a.candidate_json and b.candidate_json:
        old, new = a.candidate, b.candidate
        for name in fields if fields is not None else sorted(old.keys() | new.keys()):
            if old.get(name) != new.get(name):
                changes.append(f"{name}: {_show(old.get(name))}→{_show(new.get(name))}")
        if not changes and a.result_json != b.result_json:
            changes.append("commit result changed")
    return tuple(changes)


def recommend(divergence: float, *, spine: Spine, threshold: float) -> SpineRecommendation | None:
    """A P3 → P5 move when a P3-spined workload diverges above ``threshold`` under re-derivation.

    On a P3 spine the model proposes the next event from the log, so the log only stays the
    truth while a new model would propose the same events. Above the threshold it does not:
    keep the decided state in a P5 row and let the model choose among allowed transitions.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
    if spine != "P3" or divergence <= threshold:
        return None
    return SpineRecommendation(
        move="P3 → P5",
        divergence=divergence,
        threshold=threshold,
        reason=(
            f"{divergence:.1%} of decisions changed under the new model, above the "
            f"{threshold:.1%} threshold: a P3 log re-derived by this model would not be the same "
            "history. Hold the state in a P5 row (the model proposes one allowed transition, "
            "verified and CAS-applied) and keep the log as the audit."
        ),
    )


async def rederive(
    store: Store,
    boundary: Boundary[I, Any],
    inputs: Sequence[ReplayInput[I]],
    *,
    model: Model,
    scratch: Store,
    review_run: str,
    spine: Spine,
    threshold: float = 0.10,
    decision_fields: Sequence[str] | None = None,
    queue: bool = True,
    prices: PriceTable | None = None,
) -> RederivationReport:
    """Run the recorded ``inputs`` through ``model`` into ``scratch`` and diff against ``store``.

    Nothing of the original history is written: each changed decision is opened in ``store``
    as a pending escalation ``review:<review_run>:<key>`` (run id ``review:<review_run>``)
    holding the original, the new decision and the diff; ``queue=False`` skips that.
    ``decision_fields`` names the candidate fields whose change is a changed decision (all by
    default); every field is still counted in the per-field divergence.
    """
    twin = _with_model(boundary, model)
    field_counts: dict[str, list[int]] = {}
    changed: list[ChangedDecision] = []
    missing: list[str] = []
    proposals = verdicts = 0
    original_models: dict[str, None] = {}
    simulated = False
    compared = 0
    for item in inputs:
        events = await _stream(store, boundary.stream_for(item.key))
        if not events:
            missing.append(item.key)
            continue
        before = read_trace(item.key, events)
        compared += 1
        original_models.update(dict.fromkeys(before.models))
        runtime = Runtime(scratch, VirtualClock(events[0].recorded_at), prices or PriceTable())
        await twin.run(item.input, runtime=runtime, run_id=item.run_id, key=item.key)
        after = await _trace(scratch, boundary, item.key)
        assert after is not None  # the run just ended and wrote its stream
        simulated = simulated or before.simulated or after.simulated
        proposals += [a.raw for a in before.attempts] != [a.raw for a in after.attempts]
        verdicts += [(a.outcome, a.codes) for a in before.attempts] != [
            (a.outcome, a.codes) for a in after.attempts
        ]
        if before.candidate_json and after.candidate_json:
            old, new = before.candidate, after.candidate
            for name in sorted(old.keys() | new.keys()):
                counts = field_counts.setdefault(name, [0, 0])
                counts[0] += 1
                counts[1] += old.get(name) != new.get(name)
        changes = _decision_changes(before, after, decision_fields)
        if not changes:
            continue
        review_id = None
        if queue:
            review_id = await _queue_review(store, review_run, item, before, after, changes, model)
        changed.append(
            ChangedDecision(item.key, before.summary(), after.summary(), changes, review_id)
        )
    divergence = len(changed) / compared if compared else 0.0
    return RederivationReport(
        boundary=boundary.name,
        original_models=tuple(original_models),
        new_model=model.name,
        simulated=simulated,
        instances=compared,
        proposals_changed=proposals,
        verdicts_changed=verdicts,
        decisions_changed=len(changed),
        fields=tuple(FieldDivergence(n, c[0], c[1]) for n, c in sorted(field_counts.items())),
        changed=tuple(changed),
        not_recorded=tuple(missing),
        spine=spine,
        threshold=threshold,
        recommendation=recommend(divergence, spine=spine, threshold=threshold),
    )


def _side(trace: InstanceTrace) -> dict[str, Any]:
    return {
        "ending": trace.summary(),
        "candidate": trace.candidate or None,
        "result": codec.decode(trace.result_json) if trace.result_json else None,
        "attempts": [[a.number, a.outcome, list(a.codes)] for a in trace.attempts],
        "models": list(trace.models),
    }


async def _queue_review(
    store: Store,
    review_run: str,
    item: ReplayInput[Any],
    before: InstanceTrace,
    after: InstanceTrace,
    changes: tuple[str, ...],
    model: Model,
) -> str:
    review_id = f"review:{review_run}:{item.key}"
    # A Duplicate outcome means this review is queued already: one item per changed decision.
    await store.apply(
        UnitOfWork().open_approval(
            kind="escalation",
            id=review_id,
            reason="re-derivation changed a decision",
            request={
                "key": item.key,
                "run_id": item.run_id,
                "input": item.input,
                "new_model": model.name,
                "simulated": before.simulated or after.simulated,
                "original": _side(before),
                "new": _side(after),
                "diff": list(changes),
            },
            requested_by="replay:rederive",
            run_id=f"review:{review_run}",
        )
    )
    return review_id


# --- the renewal workload's inputs ---------------------------------------------------------------


async def renewal_inputs(
    store: Store, customers: Sequence[Any], *, seed: int
) -> list[ReplayInput[Any]]:
    """Rebuild the ``RenewalInput`` of every recorded assessment of a renewal job (how: the
    workload's ``_inputs`` module). Recovery replay checks the rebuild: the prompt hash of
    every replayed attempt must equal the recorded one."""
    from seamline.workloads.renewal._inputs import recorded_inputs

    return [ReplayInput(*t) for t in await recorded_inputs(store, customers, seed=seed)]
