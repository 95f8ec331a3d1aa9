"""Diagnostics: a catalog of failure signatures, detected in what a store has recorded.

Each signature is a frozen value: the symptom an operator sees, the rule that finds it in the
event log, audit, approvals, rows and commit ledger, the cause, the pattern weakness behind
it, and corrections ranked cheapest and most reversible first. :func:`diagnose` reads the
store once into a :class:`Recorded` snapshot (the only I/O) and runs every rule over it; the
rules are pure functions, so the tests and the docs read the same catalog.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from rich.table import Table

from seamline import codec
from seamline.errors import ConfigError
from seamline.store import Approval, AuditEntry, CommitRecord, Event, Row, Store

__all__ = [
    "CATALOG",
    "DiagnosisReport",
    "Finding",
    "Recorded",
    "Signature",
    "Thresholds",
    "diagnose",
    "load_recorded",
    "render_catalog_markdown",
    "render_markdown",
    "render_table",
]

Pattern = Literal["boundary", "P1", "P2", "P3", "P4", "P5", "P6"]
_ENDINGS = ("committed", "escalated", "failed")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a count becomes a finding. The defaults keep a healthy renewal run silent."""

    max_examples: int = 5
    stale_writes_per_row: int = 3
    timer_noops: int = 3
    min_read_s: float = 10.0
    rubber_stamp_min: int = 3
    rubber_stamp_share: float = 0.5
    expiry_min_decided: int = 4
    expiry_share: float = 0.5
    attempts_per_instance: int = 5
    replay_divergence: float = 0.2
    dead_letters: int = 1
    pending_escalations: int = 3
    saga_stuck_after: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        for name in ("expiry_share", "rubber_stamp_share", "replay_divergence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a share in [0, 1], got {getattr(self, name)}")
        if self.max_examples < 1:
            raise ConfigError(f"max_examples must be at least 1, got {self.max_examples}")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the rules read: everything recorded since ``since``, plus the commit-ledger rows
    of every boundary instance seen (the ledger is read by key only)."""

    events: tuple[Event, ...]
    audit: tuple[AuditEntry, ...]
    approvals: tuple[Approval, ...]
    rows: tuple[Row, ...]
    commits: Mapping[str, CommitRecord]
    since: datetime | None = None

    @property
    def horizon(self) -> datetime | None:
        """The latest instant anything was recorded: "now" for the recorded run."""
        stamps = [e.recorded_at for e in self.events] + [a.at for a in self.audit]
        return max(stamps) if stamps else None

    def streams(self, prefix: str) -> dict[str, list[Event]]:
        out: dict[str, list[Event]] = defaultdict(list)
        for e in self.events:
            if e.stream.startswith(prefix):
                out[e.stream].append(e)
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One signature seen in the store, with the numbers and where to look."""

    signature: str
    summary: str
    count: int
    examples: tuple[str, ...]
    kind: Literal["finding"] = "finding"


Detect = Callable[[Recorded, Thresholds], Finding | None]


@dataclass(frozen=True, slots=True)
class Signature:
    """A failure signature: symptom → cause → pattern weakness → ranked corrections."""

    id: str
    pattern: Pattern
    title: str
    symptom: str
    detection: str
    cause: str
    weakness: str
    corrections: tuple[str, ...]
    detect: Detect = field(repr=False, compare=False)
    kind: Literal["signature"] = "signature"


@dataclass(frozen=True, slots=True)
class DiagnosisReport:
    """Every finding of one diagnosis, and how much was read to reach it."""

    findings: tuple[Finding, ...]
    signatures_checked: int
    events_read: int
    since: datetime | None
    kind: Literal["diagnosis"] = "diagnosis"

    @property
    def clean(self) -> bool:
        return not self.findings

    def signature(self, id: str) -> Signature:
        return _BY_ID[id]


# --- helpers -----------------------------------------------------------------------------


def _where(e: Event) -> str:
    return f"{e.stream}#{e.stream_seq} (seq {e.seq})"


def _cap(items: Iterable[str], t: Thresholds) -> tuple[str, ...]:
    return tuple(sorted(set(items)))[: t.max_examples]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _boundary_key(stream: str) -> tuple[str, str]:
    """``sdb:<boundary>:<key>`` → (boundary, key)."""
    name, _, key = stream[len("sdb:") :].partition(":")
    return name, key


def _run_and_input(name: str, key: str) -> tuple[str, str] | None:
    """A default key is ``run_id:boundary:input_key``; a custom key has no such split."""
    run, sep, input_key = key.partition(f":{name}:")
    return (run, input_key) if sep else None


def _finding(sig: str, summary: str, count: int, examples: Iterable[str], t: Thresholds) -> Finding:
    return Finding(sig, summary, count, _cap(examples, t))


# --- boundary ----------------------------------------------------------------------------


def _rejected_reported_as_success(rec: Recorded, t: Thresholds) -> Finding | None:
    bad: list[str] = []
    for events in rec.streams("sdb:").values():
        verdict: str | None = None
        for e in events:
            if e.type in ("accepted", "rejected"):
                verdict = e.type
            elif e.type == "committed" and verdict != "accepted":
                bad.append(_where(e))
    if not bad:
        return None
    return _finding(
        "boundary.rejected_reported_as_success",
        f"{len(bad)} committed event(s) follow a reject (or no verdict) instead of an accept",
        len(bad),
        bad,
        t,
    )


def _commit_without_accept(rec: Recorded, t: Thresholds) -> Finding | None:
    bad = [
        f"{stream} (ledger {rec.commits[_boundary_key(stream)[1]].status})"
        for stream, events in rec.streams("sdb:").items()
        if _boundary_key(stream)[1] in rec.commits and not any(e.type == "accepted" for e in events)
    ]
    if not bad:
        return None
    return _finding(
        "boundary.commit_without_accept",
        f"{len(bad)} commit-ledger row(s) for boundary keys whose stream has no accepted event",
        len(bad),
        bad,
        t,
    )


def _duplicate_side_effect(rec: Recorded, t: Thresholds) -> Finding | None:
    bad: list[str] = []
    for stream, events in rec.streams("sdb:").items():
        commits = [e for e in events if e.type == "committed"]
        if len(commits) > 1:
            bad.append(f"{stream}: {len(commits)} committed events")
    sent: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in rec.streams("outbox").get("outbox", []):
        run = (e.idempotency_key or "").split(":", 1)[0]
        payload = _dict(e.payload)
        who = str(payload.get("customer") or payload.get("subject") or e.idempotency_key)
        sent[(run, who)].append(e)
    for (run, who), events in sent.items():
        if len(events) > 1:
            seqs = ", ".join(str(e.seq) for e in events)
            bad.append(f"outbox: {len(events)} sends to {who} in run {run} (seq {seqs})")
    if not bad:
        return None
    return _finding(
        "boundary.duplicate_side_effect",
        f"{len(bad)} key(s) or recipient(s) with more than one recorded side effect",
        len(bad),
        bad,
        t,
    )


def _effect_stuck_pending(rec: Recorded, t: Thresholds) -> Finding | None:
    bad: list[str] = []
    for stream, events in rec.streams("sdb:").items():
        ledger = rec.commits.get(_boundary_key(stream)[1])
        types = [e.type for e in events]
        if ledger is None or ledger.status != "pending" or "accepted" not in types:
            continue
        if any(x in types for x in _ENDINGS):
            continue
        bad.append(f"{stream}: {types.count('effect_failed')} effect_failed")
    if not bad:
        return None
    return _finding(
        "boundary.effect_stuck_pending",
        f"{len(bad)} accepted external effect(s) with a pending ledger row and no recorded result",
        len(bad),
        bad,
        t,
    )


# --- P1 ----------------------------------------------------------------------------------


def _subagent_not_merged(rec: Recorded, t: Thresholds) -> Finding | None:
    moved: dict[str, datetime] = {}
    for e in rec.events:
        if e.stream.startswith("wf:"):
            row = e.stream.split(":", 2)[2]
            moved[row] = max(moved.get(row, e.recorded_at), e.recorded_at)
    rows = {r.id for r in rec.rows}
    bad: list[str] = []
    for stream, events in rec.streams("sdb:").items():
        name, key = _boundary_key(stream)
        split = _run_and_input(name, key)
        if split is None or "/" not in split[0]:
            continue
        parent, _, child = split[0].rpartition("/")
        row = f"{parent}:{child}"
        committed = [e for e in events if e.type == "committed"]
        if not committed or row not in rows:
            continue
        last = moved.get(row)
        if last is None or last < committed[-1].recorded_at:
            bad.append(f"{_where(committed[-1])} → row {row} never moved after it")
    if not bad:
        return None
    return _finding(
        "p1.subagent_output_not_merged",
        f"{len(bad)} sub-run result(s) committed but the parent row never moved afterwards",
        len(bad),
        bad,
        t,
    )


# --- P2 ----------------------------------------------------------------------------------


def _scattered_commitment(rec: Recorded, t: Thresholds) -> Finding | None:
    horizon = rec.horizon
    bad: list[str] = []
    for r in rec.rows:
        if r.kind != "saga":
            continue
        stuck = r.state in ("running", "compensating") and (
            horizon is not None and horizon - r.updated_at >= t.saga_stuck_after
        )
        if r.state == "compensation_failed" or stuck:
            bad.append(f"saga row {r.id} in {r.state} since {r.updated_at.isoformat()}")
    for stream, events in rec.streams("saga:").items():
        if not any(e.type == "step_failed" for e in events):
            continue
        done = {_dict(e.payload).get("step") for e in events if e.type == "step_done"}
        undone = {_dict(e.payload).get("step") for e in events if e.type == "compensation_done"}
        left = sorted(str(s) for s in done - undone)
        if left:
            bad.append(f"{stream}: step(s) {', '.join(left)} done, never compensated")
    if not bad:
        return None
    return _finding(
        "p2.scattered_commitment",
        f"{len(bad)} saga(s) left part-committed (stuck, compensation failed or not fired)",
        len(bad),
        bad,
        t,
    )


# --- P3 ----------------------------------------------------------------------------------


def _replay_divergence(rec: Recorded, t: Thresholds) -> Finding | None:
    by_input: dict[tuple[str, str], dict[str, tuple[str, str]]] = defaultdict(dict)
    labels: dict[tuple[str, str], set[str]] = defaultdict(set)
    for stream, events in rec.streams("sdb:").items():
        name, key = _boundary_key(stream)
        split = _run_and_input(name, key)
        if split is None:
            continue
        accepted = [e for e in events if e.type == "accepted"]
        ending = next((e.type for e in reversed(events) if e.type in _ENDINGS), "open")
        decision = codec.encode(_dict(accepted[-1].payload).get("candidate")) if accepted else ""
        by_input[(name, split[1])][split[0]] = (ending, decision)
        for e in events:
            if e.type == "proposed":
                labels[(name, split[1])].add(f"{e.model_version}/{e.prompt_hash}")
    compared = {k: v for k, v in by_input.items() if len(v) > 1}
    diverged = sorted(k for k, v in compared.items() if len(set(v.values())) > 1)
    if not compared or len(diverged) / len(compared) <= t.replay_divergence:
        return None
    rate = len(diverged) / len(compared)
    return _finding(
        "p3.replay_divergence",
        f"{len(diverged)} of {len(compared)} inputs run more than once decided differently "
        f"({rate:.0%} > {t.replay_divergence:.0%})",
        len(diverged),
        (f"{n} input {i}: model/prompt {sorted(labels[(n, i)])}" for n, i in diverged),
        t,
    )


# --- P4 ----------------------------------------------------------------------------------


def _missing_gate(rec: Recorded, t: Thresholds) -> Finding | None:
    allowed: dict[str, datetime] = {}
    for a in rec.audit:
        if a.actor.startswith("gate:") and a.decision == "allow":
            allowed[a.subject] = min(allowed.get(a.subject, a.at), a.at)
    bad: list[str] = []
    for e in rec.streams("outbox").get("outbox", []):
        subject = (e.idempotency_key or "").rpartition(":")[0]
        first = allowed.get(subject)
        if first is None or first > e.recorded_at:
            bad.append(f"{_where(e)} subject {subject or '?'}")
    if not bad:
        return None
    return _finding(
        "p4.missing_gate",
        f"{len(bad)} outbox side effect(s) with no gate:* allow audited for their subject",
        len(bad),
        bad,
        t,
    )


def _runaway_retry(rec: Recorded, t: Thresholds) -> Finding | None:
    bad: list[str] = []
    for stream, events in rec.streams("sdb:").items():
        proposals = sum(e.type == "proposed" for e in events)
        if proposals >= t.attempts_per_instance:
            bad.append(f"{stream}: {proposals} proposals")
    budget = [e for e in rec.events if e.stream.startswith("budget:")]
    bad.extend(f"{_where(e)} {e.type} share {_dict(e.payload).get('share')}" for e in budget)
    if not bad:
        return None
    return _finding(
        "p4.runaway_retry",
        f"{len(bad) - len(budget)} instance(s) at ≥{t.attempts_per_instance} attempts, "
        f"{len(budget)} budget alert/exhaustion event(s)",
        len(bad),
        bad,
        t,
    )


# --- P5 ----------------------------------------------------------------------------------

_STALE = ("stale", "version", "conflict", "moved")


def _stale_write_storm(rec: Recorded, t: Thresholds) -> Finding | None:
    per: Counter[str] = Counter()
    for e in rec.events:
        payload = _dict(e.payload)
        if e.stream.startswith("wf:") and e.type == "step_failed":
            error = str(payload.get("error", "")).lower()
            if payload.get("next") == "retry" or any(w in error for w in _STALE):
                per[e.stream] += 1
        elif e.stream.startswith("sdb:") and e.type == "rejected":
            codes = {_dict(r).get("reason_code") for r in payload.get("rejects", [])}
            per[e.stream] += "stale_version" in codes
        elif e.stream.startswith("sdb:") and e.type == "failed":
            per[e.stream] += payload.get("reason_code") == "commit_conflict"
    hot = {s: n for s, n in per.items() if n >= t.stale_writes_per_row}
    if not hot:
        return None
    return _finding(
        "p5.stale_write_storm",
        f"{len(hot)} row(s) with ≥{t.stale_writes_per_row} stale writes or transition retries "
        f"(worst {max(hot.values())})",
        sum(hot.values()),
        (f"{s}: {n}" for s, n in hot.items()),
        t,
    )


def _timer_on_moved_row(rec: Recorded, t: Thresholds) -> Finding | None:
    noops = [e for e in rec.events if e.type == "timer_noop" and e.stream.startswith("wf:")]
    if len(noops) < t.timer_noops:
        return None
    kinds = Counter(e.stream.split(":", 2)[1] for e in noops)
    return _finding(
        "p5.timer_on_moved_row",
        f"{len(noops)} timer(s) fired on rows that had moved (threshold {t.timer_noops}); "
        + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())),
        len(noops),
        (_where(e) for e in noops),
        t,
    )


def _dead_letter_pileup(rec: Recorded, t: Thresholds) -> Finding | None:
    dead = [e for e in rec.events if e.type == "dead_lettered"]
    pending = [a for a in rec.approvals if a.kind == "escalation" and a.status == "pending"]
    if len(dead) < t.dead_letters and len(pending) < t.pending_escalations:
        return None
    return _finding(
        "p5.dead_letter_pileup",
        f"{len(dead)} dead-lettered step(s), {len(pending)} escalation(s) still pending",
        len(dead) + len(pending),
        [_where(e) for e in dead] + [f"escalation {a.id}: {a.reason[:60]}" for a in pending],
        t,
    )


# --- P6 ----------------------------------------------------------------------------------


def _rubber_stamping(rec: Recorded, t: Thresholds) -> Finding | None:
    decided = [
        a
        for a in rec.approvals
        if a.status in ("approved", "rejected", "edited")
        and a.decided_at is not None
        and a.decided_by not in (None, "sla")
    ]
    fast = [
        a
        for a in decided
        if a.decided_at is not None and (a.decided_at - a.created_at).total_seconds() < t.min_read_s
    ]
    if len(fast) < t.rubber_stamp_min or len(fast) / len(decided) < t.rubber_stamp_share:
        return None
    return _finding(
        "p6.rubber_stamping",
        f"{len(fast)} of {len(decided)} human decisions came under {t.min_read_s:g} s after the "
        "request",
        len(fast),
        (f"{a.id} {a.status} by {a.decided_by}" for a in fast),
        t,
    )


def _approval_timeouts(rec: Recorded, t: Thresholds) -> Finding | None:
    decided = [a for a in rec.approvals if a.kind == "approval" and a.status != "pending"]
    expired = [a for a in decided if a.status == "expired"]
    horizon = rec.horizon
    overdue = [
        a
        for a in rec.approvals
        if a.status == "pending" and a.due_at is not None and horizon and a.due_at < horizon
    ]
    share = len(expired) / len(decided) if decided else 0.0
    high = len(decided) >= t.expiry_min_decided and share > t.expiry_share
    if not high and not overdue:
        return None
    return _finding(
        "p6.approval_timeouts",
        f"{len(expired)} of {len(decided)} approvals expired ({share:.0%}); "
        f"{len(overdue)} pending past their SLA",
        len(expired) + len(overdue),
        [f"{a.id} expired" for a in expired] + [f"{a.id} overdue" for a in overdue],
        t,
    )


# --- the catalog -------------------------------------------------------------------------

CATALOG: tuple[Signature, ...] = (
    Signature(
        "boundary.rejected_reported_as_success",
        "boundary",
        "Rejected action reported as success",
        "The workflow moved on as if an action happened, but the last verdict was a reject.",
        "In each `sdb:<boundary>:<key>` stream, a `committed` event whose latest preceding "
        "verdict (`accepted`/`rejected`) is not `accepted`.",
        "Code outside `Boundary` wrote a committed event, or a caller treated a reject as done.",
        "The reject signal is a value; nothing stops a hand-written unit from ignoring it.",
        (
            "Route the writer through `Boundary.run` and branch on `Committed` only",
            "Add a test that a `RejectSignal` never reaches the success path",
            "Review and undo the side effects of the listed keys by hand",
        ),
        _rejected_reported_as_success,
    ),
    Signature(
        "boundary.commit_without_accept",
        "boundary",
        "Commit without a matching accept",
        "A commit-ledger row exists for a boundary key that nothing accepted.",
        "For every boundary stream seen, read the ledger row of its key; a row there with no "
        "`accepted` event in the stream. (The ledger is read by key, so a ledger row whose key "
        "has no stream at all is not seen.)",
        "`record_commit`/`commit_intent` called outside the boundary's accept unit.",
        "Exactly-once is keyed; it says nothing about who wrote the key.",
        (
            "Move the write into `StoreCommit`/`EffectCommit` so accept and ledger share a unit",
            "Give out-of-boundary writers their own key namespace",
            "Audit the listed keys and compensate where the effect was wrong",
        ),
        _commit_without_accept,
    ),
    Signature(
        "boundary.duplicate_side_effect",
        "boundary",
        "Duplicate side effect",
        "A customer got the same message twice; an action shows up twice downstream.",
        "More than one `committed` event in one boundary stream, or more than one `outbox` event "
        "for one recipient (payload `customer`/`subject`) within one run (key prefix).",
        "Two keys for one logical action (key built from something that varies), or a writer "
        "that bypasses the ledger.",
        "Idempotency holds per key; a key that is not the action's identity does not protect it.",
        (
            "Derive the idempotency key from the action's identity (run + subject + action)",
            "Make the external call idempotent on that key",
            "Send a correction to the affected recipients",
        ),
        _duplicate_side_effect,
    ),
    Signature(
        "boundary.effect_stuck_pending",
        "boundary",
        "External effect accepted, result never recorded",
        "An accepted action never shows as done; the instance neither ends nor fails.",
        "A boundary stream with `accepted`, a `pending` ledger row and no `committed`/"
        "`escalated`/`failed` event (`effect_failed` events counted as evidence).",
        "The side effect keeps raising, or the run that would re-perform it never ran again.",
        "Outbox commits are at-least-once: they need a re-run to finish.",
        (
            "Re-run the boundary for the key (it performs the recorded candidate again)",
            "Fix the failing external call (see the `effect_failed` errors)",
            "Escalate the instance to a person and settle it by hand",
        ),
        _effect_stuck_pending,
    ),
    Signature(
        "p1.subagent_output_not_merged",
        "P1",
        "Sub-agent output not merged back",
        "Work was done and paid for under a sub-run, but the parent never used it.",
        "Proxy: a committed boundary instance under a sub-run `P/C` whose parent row `P:C` "
        "exists but has no workflow event at or after the commit. Dropped or substituted "
        "workers inside a `Delegation` are kept in its in-memory trace, not in the store, so "
        "they need that trace (`render_trace`) to be seen.",
        "The orchestrator discarded or lost a worker's result (a crash between the commit and "
        "the parent's move, or a merge that ignored the field).",
        "P1 merges in memory; only what the orchestrator writes afterwards is durable.",
        (
            "Resume the parent row so its step reads the recorded sub-run result",
            "Record the merge (provenance per field) in the parent's transition",
            "Write the merge and the parent's move in one unit",
        ),
        _subagent_not_merged,
    ),
    Signature(
        "p2.scattered_commitment",
        "P2",
        "Scattered commitment (compensation did not fire)",
        "Part of a multi-step action happened and part did not; no one undid the first part.",
        "A saga row in `compensation_failed`, or in `running`/`compensating` untouched for "
        "`saga_stuck_after` before the latest recorded instant; or a `saga:<id>` stream with "
        "`step_failed` and a `step_done` step that has no `compensation_done`.",
        "A step without a compensation, a compensation that keeps failing, or a saga whose "
        "process died and was not resumed.",
        "Compensation is forward work; it can fail or be missing like any step.",
        (
            "Resume the saga (`Saga.resume`) so it finishes or compensates",
            "Declare a compensation for every step that has an effect",
            "Settle the escalation: undo the listed steps by hand",
        ),
        _scattered_commitment,
    ),
    Signature(
        "p3.replay_divergence",
        "P3",
        "Replay divergence above threshold",
        "Running the same inputs again (new model or prompt) decides differently.",
        "Boundary instances with default keys are grouped by (boundary, input key) across "
        "runs; an input diverges when its runs end differently or accept different "
        "candidates. Fires when diverged/compared exceeds `replay_divergence`; evidence lists "
        "the model versions and prompt hashes seen. With no input run twice, nothing is "
        "compared.",
        "A model or prompt change moved decisions; or the input alone does not determine the "
        "decision (hidden state in the prompt).",
        "Re-derivation compares decisions; history must not be overwritten by the new run.",
        (
            "Hold changed decisions for review instead of acting on them",
            "Pin the model version and prompt for in-flight instances",
            "Tighten verifiers so both versions are held to the same decision",
        ),
        _replay_divergence,
    ),
    Signature(
        "p4.missing_gate",
        "P4",
        "Gate missing before a side effect",
        "An outbound action happened that no gate allowed.",
        "Every `outbox` event's subject (its idempotency key without the last `:part`) must "
        "have a `gate:*` audit entry with decision `allow` at or before the event.",
        "A code path that writes the outbox without `Gate.allow_into`, or a gate renamed so "
        "its audit no longer names the subject.",
        "The gate is called by convention; nothing in the store requires it.",
        (
            "Write the outbox only in the unit that carries `gate.allow_into`",
            "Add a test over a recorded run that every outbox event has its allow",
            "Review the listed effects and undo any out of policy",
        ),
        _missing_gate,
    ),
    Signature(
        "p4.runaway_retry",
        "P4",
        "Runaway retry loop / budget blow-out",
        "Spend climbs; instances keep proposing without landing.",
        "A boundary stream with at least `attempts_per_instance` proposals, or any "
        "`budget_alert`/`budget_exhausted` event on a `budget:<run>` stream.",
        "Verifiers reject what the model keeps proposing (an unfixable reject marked "
        "retryable, a bad hint) or an attempts/budget setting too high.",
        "Retries are bounded per instance, not per cohort; the budget is the backstop.",
        (
            "Lower `attempts` and mark unfixable rejects non-retryable",
            "Improve the reject hint so the next proposal can pass",
            "Set or lower the run `Budget` with an `on_alert` route",
        ),
        _runaway_retry,
    ),
    Signature(
        "p5.stale_write_storm",
        "P5",
        "Stale-write storm on one row",
        "One instance keeps failing to move; retries pile up on it.",
        "Per stream, count `step_failed` events that retry or name a stale/version conflict, "
        "`rejected` events with reason `stale_version`, and `failed` with `commit_conflict`; "
        "fires for any row with at least `stale_writes_per_row`.",
        "Several writers race on one row (two runners, a step that writes a row it does not "
        "own, a long step whose row moved meanwhile).",
        "Compare-and-swap is correct but says nothing about contention.",
        (
            "Give the row a single owner (one runner per kind)",
            "Shorten the step: read, decide and write in one unit",
            "Split the hot row into rows that change independently",
        ),
        _stale_write_storm,
    ),
    Signature(
        "p5.timer_on_moved_row",
        "P5",
        "Timers firing on moved rows",
        "Scheduled steps are skipped; work happens late or not at all.",
        "Count `timer_noop` events per workflow kind; fires at `timer_noops` or more.",
        "Timers scheduled for a version the row left (a move that did not cancel them, or two "
        "schedules for one state).",
        "Timers are tied to a row version so stale ones are harmless, but each is lost work.",
        (
            "Cancel a state's timers in the unit that leaves the state",
            "Schedule one timer per state entry",
            "Inspect the listed rows' streams for moves from outside the runner",
        ),
        _timer_on_moved_row,
    ),
    Signature(
        "p5.dead_letter_pileup",
        "P5",
        "Dead-lettered or escalated steps piling up",
        "Instances stop without ending; the human queue grows.",
        "Any `dead_lettered` event (at least `dead_letters`), or at least "
        "`pending_escalations` escalations still pending.",
        "A step fails for good (bad data, broken dependency) and its policy parks it; or no "
        "one works the escalation queue.",
        "Dead letters and escalations are safe stops, not progress.",
        (
            "Work the queue: resume, move or abandon each parked instance",
            "Fix the failing step (see each `step_failed` error)",
            "Change the state's failure policy (retry with backoff before parking)",
        ),
        _dead_letter_pileup,
    ),
    Signature(
        "p6.rubber_stamping",
        "P6",
        "Rubber-stamped approvals",
        "Approvals are granted faster than anyone could read them.",
        "Human decisions (not `sla`) made less than `min_read_s` after the request; fires when "
        "there are at least `rubber_stamp_min` and they are at least `rubber_stamp_share` of "
        "the human decisions.",
        "Too many requests for the people available, or an approver clicking through.",
        "A human gate is only as good as the attention behind it.",
        (
            "Raise the auto-approve line so fewer, riskier cases reach people",
            "Show the decision and its expected impact first in the request",
            "Sample decided approvals for second review",
        ),
        _rubber_stamping,
    ),
    Signature(
        "p6.approval_timeouts",
        "P6",
        "Approval timeouts",
        "Requests expire into their fallback instead of being decided.",
        "Share of decided approvals (kind `approval`) that `expired`, firing above "
        "`expiry_share` with at least `expiry_min_decided`; or any pending request past its "
        "SLA at the latest recorded instant.",
        "SLA too short, queue not staffed, or notifications not reaching approvers.",
        "On timeout the declared fallback acts; frequent fallbacks mean the gate is not used.",
        (
            "Check the fallback is the safe one (deny)",
            "Lengthen the SLA or add approvers",
            "Route fewer cases to people (tighter auto-approve rules)",
        ),
        _approval_timeouts,
    ),
)

_BY_ID = {s.id: s for s in CATALOG}


# --- running it --------------------------------------------------------------------------


async def load_recorded(store: Store, *, since: datetime | None = None) -> Recorded:
    """Read everything the rules need from ``store`` (events and audit from ``since``)."""
    events: list[Event] = []
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000):
        events.extend(e for e in page if since is None or e.recorded_at >= since)
        after = page[-1].seq
    audit: list[AuditEntry] = []
    after = 0
    while batch := await store.audit_entries(after_seq=after, limit=5000):
        audit.extend(a for a in batch if since is None or a.at >= since)
        after = batch[-1].seq
    approvals = [
        a
        for a in await store.list_approvals(limit=1_000_000)
        if since is None or a.created_at >= since
    ]
    rows: list[Row] = []
    after_id = ""
    while chunk := await store.list_rows(after_id=after_id, limit=1000):
        rows.extend(r for r in chunk if since is None or r.updated_at >= since)
        after_id = chunk[-1].id
    commits: dict[str, CommitRecord] = {}
    for stream in {e.stream for e in events if e.stream.startswith("sdb:")}:
        key = _boundary_key(stream)[1]
        record = await store.get_commit(key)
        if record is not None:
            commits[key] = record
    return Recorded(tuple(events), tuple(audit), tuple(approvals), tuple(rows), commits, since)


def run_rules(
    rec: Recorded, thresholds: Thresholds, catalog: Sequence[Signature] = CATALOG
) -> DiagnosisReport:
    """Every signature's rule over one snapshot: pure."""
    found = tuple(f for s in catalog if (f := s.detect(rec, thresholds)) is not None)
    return DiagnosisReport(found, len(catalog), len(rec.events), rec.since)


async def diagnose(
    store: Store, *, since: datetime | None = None, thresholds: Thresholds | None = None
) -> DiagnosisReport:
    """Run every signature in :data:`CATALOG` over what ``store`` recorded since ``since``."""
    return run_rules(await load_recorded(store, since=since), thresholds or Thresholds())


# --- rendering ---------------------------------------------------------------------------


def render_table(report: DiagnosisReport) -> Table:
    """The findings as a Rich table (one row per finding, corrections ranked)."""
    table = Table(
        title=f"seamline diagnose: {len(report.findings)} finding(s) from "
        f"{report.signatures_checked} signatures over {report.events_read} events"
    )
    table.add_column("signature", no_wrap=True)
    table.add_column("pattern", no_wrap=True)
    for column in ("what was seen", "examples", "try first"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        sig = _BY_ID[f.signature]
        table.add_row(
            f.signature,
            sig.pattern,
            f.summary,
            "\n".join(f.examples),
            "\n".join(f"{i}. {c}" for i, c in enumerate(sig.corrections, 1)),
        )
    return table


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: DiagnosisReport) -> str:
    """The findings as Markdown, each with its cause, weakness and ranked corrections."""
    lines = [
        "# seamline diagnose",
        "",
        f"{report.signatures_checked} signatures checked over {report.events_read} events"
        + (f" since {report.since.isoformat()}" if report.since else "")
        + ".",
        "",
    ]
    if report.clean:
        return "\n".join([*lines, "No failure signatures found.", ""])
    for f in report.findings:
        sig = _BY_ID[f.signature]
        lines += [f"## `{f.signature}` ({sig.pattern}): {sig.title}", "", f"**Seen:** {f.summary}"]
        lines += ["", "**Examples:**", "", *(f"- `{x}`" for x in f.examples), ""]
        lines += [f"**Cause:** {sig.cause}", "", f"**Pattern weakness:** {sig.weakness}", ""]
        lines += ["**Corrections** (cheapest, most reversible first):", ""]
        lines += [f"{i}. {c}" for i, c in enumerate(sig.corrections, 1)] + [""]
    return "\n".join(lines)


def render_catalog_markdown(catalog: Sequence[Signature] = CATALOG) -> str:
    """The catalog as one Markdown table, as ``docs/diagnose.md`` shows it."""
    lines = [
        "| id | pattern | symptom | detection | cause | weakness | corrections |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in catalog:
        fixes = " ".join(f"{i}. {c}" for i, c in enumerate(s.corrections, 1))
        cells = (s.symptom, s.detection, s.cause, s.weakness, fixes)
        lines.append(f"| `{s.id}` | {s.pattern} | " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines)
