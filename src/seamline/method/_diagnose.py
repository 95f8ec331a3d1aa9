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
_REVIEW = "review:"  # ids and run ids of the re-derivation review queue (method._replay)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a count becomes a finding. The defaults keep a healthy renewal run silent."""

    max_examples: int = 5
    stale_writes_per_row: int = 3
    timer_noops: int = 1
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
    bad: dict[str, list[str]] = defaultdict(list)  # saga id (= row id = stream) → evidence
    for r in rec.rows:
        if r.kind != "saga":
            continue
        stuck = r.state in ("running", "compensating") and (
            horizon is not None and horizon - r.updated_at >= t.saga_stuck_after
        )
        if r.state == "compensation_failed" or stuck:
            bad[r.id].append(f"saga row {r.id} in {r.state} since {r.updated_at.isoformat()}")
    for stream, events in rec.streams("saga:").items():
        if not any(e.type == "step_failed" for e in events):
            continue
        done = {_dict(e.payload).get("step") for e in events if e.type == "step_done"}
        undone = {_dict(e.payload).get("step") for e in events if e.type == "compensation_done"}
        left = sorted(str(s) for s in done - undone)
        if left:
            bad[stream].append(f"{stream}: step(s) {', '.join(left)} done, never compensated")
    if not bad:
        return None
    return _finding(
        "p2.scattered_commitment",
        f"{len(bad)} saga(s) left part-committed (stuck, compensation failed or not fired)",
        len(bad),
        (x for evidence in bad.values() for x in evidence),
        t,
    )


# --- P3 ----------------------------------------------------------------------------------


def _is_review(a: Approval) -> bool:
    """A re-derivation review item (``seamline replay rederive``), not an escalated run."""
    return a.id.startswith(_REVIEW) or (a.run_id or "").startswith(_REVIEW)


def _top_run(run_id: str) -> str:
    """The job a run belongs to: ``job/child`` → ``job``."""
    return run_id.split("/", 1)[0]


def _cross_run_divergence(rec: Recorded) -> tuple[int, int, list[str]]:
    """Inputs run under more than one run id whose runs decided differently."""
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
    examples = [f"{n} input {i}: model/prompt {sorted(labels[(n, i)])}" for n, i in diverged]
    return len(diverged), len(compared), examples


def _review_divergence(rec: Recorded) -> list[tuple[str, int, int, list[str]]]:
    """Per re-derivation (review run): changed decisions held for review, out of the recorded
    instances of the same boundaries and job."""
    boundary_of = {key: name for name, key in map(_boundary_key, rec.streams("sdb:"))}
    runs: dict[str, list[Approval]] = defaultdict(list)
    for a in rec.approvals:
        if _is_review(a) and a.kind == "escalation":
            runs[a.run_id or a.id].append(a)
    out: list[tuple[str, int, int, list[str]]] = []
    for review_run, items in sorted(runs.items()):
        requests = [_dict(a.request) for a in items]
        names = {boundary_of.get(str(r.get("key"))) for r in requests} - {None}
        jobs = {_top_run(str(r.get("run_id", ""))) for r in requests}
        compared = sum(
            1
            for key, name in boundary_of.items()
            if name in names and any(key.startswith((f"{j}/", f"{j}:")) for j in jobs)
        )
        pending = sum(a.status == "pending" for a in items)
        examples = [
            f"{a.id} ({a.status}): " + "; ".join(str(d) for d in r.get("diff") or [])
            for a, r in zip(items, requests, strict=True)
        ]
        label = f"{review_run} ({pending} pending)"
        out.append((label, len(items), max(compared, len(items)), examples))
    return out


def _replay_divergence(rec: Recorded, t: Thresholds) -> Finding | None:
    parts: list[str] = []
    examples: list[str] = []
    count = 0
    diverged, compared, cross = _cross_run_divergence(rec)
    if compared and diverged / compared > t.replay_divergence:
        parts.append(
            f"{diverged} of {compared} inputs run more than once decided differently "
            f"({diverged / compared:.0%} > {t.replay_divergence:.0%})"
        )
        examples += cross
        count += diverged
    for label, changed, instances, held in _review_divergence(rec):
        if changed / instances > t.replay_divergence:
            parts.append(
                f"re-derivation {label}: {changed} of {instances} decisions changed "
                f"({changed / instances:.0%} > {t.replay_divergence:.0%}), held for review"
            )
            examples += held
            count += changed
    if not parts:
        return None
    return _finding("p3.replay_divergence", "; ".join(parts), count, examples, t)


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


def _unexplained_noop(noop: Event, moves: Mapping[tuple[str, int], Event]) -> str | None:
    """Why a timer no-op is not the harmless kind, or None when a recorded transition moved
    the row out of the version and state the timer was set for (a timeout beaten by an
    answer, a person's move): the normal life of a long-horizon row."""
    p = _dict(noop.payload)
    version, state = p.get("scheduled_at_version"), str(p.get("timer", "")).removeprefix("step:")
    if not isinstance(version, int):
        return "no scheduled version recorded"
    move = moves.get((noop.stream, version + 1))
    if move is None:
        return f"v{version} left with no recorded transition (row at v{p.get('row_version')})"
    left = _dict(move.payload).get("from")
    if left != state:
        return f"timer for {state} at v{version}, but the row was in {left}"
    row = noop.stream.split(":", 2)[2]
    cause = move.causation_id or ""
    if cause != noop.causation_id and cause.startswith(f"{row}:v{version}:{state}:"):
        return f"a second timer for {state} at v{version} ({cause}) moved the row"
    return None


def _timer_on_moved_row(rec: Recorded, t: Thresholds) -> Finding | None:
    moves: dict[tuple[str, int], Event] = {}
    first: dict[str, int] = {}
    noops: list[Event] = []
    for e in rec.events:
        if not e.stream.startswith("wf:"):
            continue
        first.setdefault(e.stream, e.stream_seq)
        version = _dict(e.payload).get("version")
        if e.type == "transitioned" and isinstance(version, int):
            moves[(e.stream, version)] = e
        elif e.type == "timer_noop":
            noops.append(e)
    # A stream read from the middle (``since``) may have lost the move that explains a no-op.
    judged = [e for e in noops if first[e.stream] == 1]
    bad = [(e, why) for e in judged if (why := _unexplained_noop(e, moves)) is not None]
    if len(bad) < t.timer_noops:
        return None
    kinds = Counter(e.stream.split(":", 2)[1] for e, _ in bad)
    return _finding(
        "p5.timer_on_moved_row",
        f"{len(bad)} timer(s) fired on rows moved without a recorded transition or by a second "
        f"timer ({len(judged) - len(bad)} other no-op(s) superseded by recorded moves); "
        + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())),
        len(bad),
        (f"{_where(e)}: {why}" for e, why in bad),
        t,
    )


def _dead_letter_pileup(rec: Recorded, t: Thresholds) -> Finding | None:
    dead = [e for e in rec.events if e.type == "dead_lettered"]
    pending = [
        a
        for a in rec.approvals
        if a.kind == "escalation" and a.status == "pending" and not _is_review(a)
    ]
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
    # Approvals only, as in the share: an escalation is a run parked for a person, not a
    # gate's yes/no, and pending escalations are p5.dead_letter_pileup's.
    overdue = [
        a
        for a in rec.approvals
        if a.kind == "approval"
        and a.status == "pending"
        and a.due_at is not None
        and horizon is not None
        and a.due_at < horizon
    ]
    share = len(expired) / len(decided) if decided else 0.0
    high = len(decided) >= t.expiry_min_decided and share > t.expiry_share
    if not high and not overdue:
        return None
    return _finding(
        "p6.approval_timeouts",
        f"{len(expired)} of {len(decided)} decided approvals expired ({share:.0%}); "
        f"{len(overdue)} approval(s) pending past their SLA",
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
        "Two sources, each firing above `replay_divergence`. The re-derivation review queue: "
        "per review run, the `review:*` escalations `seamline replay rederive` opened (one per "
        "changed decision) over the recorded instances of the same boundary and job. And "
        "inputs run under more than one run id (default keys, grouped by boundary and input "
        "key): an input diverges when its runs end differently or accept different "
        "candidates; evidence lists the model versions and prompt hashes seen.",
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
        "A `timer_noop` is normal when the row's stream records the transition out of the "
        "version and state the timer was set for (a timeout beaten by an answer, a person's "
        "move). Fires at `timer_noops` or more of the others: the version moved with no "
        "recorded transition, the timer named a state the row was not in, or a second timer "
        "for the same state and version moved the row.",
        "A write that bypassed the state machine (a manual fix to the row, a stale writer), "
        "or two schedules for one state entry.",
        "Timers are tied to a row version so stale ones are harmless, but a move the machine "
        "did not record is one its timers and console cannot account for.",
        (
            "Inspect the listed rows' streams for the write that moved them outside the runner",
            "Route every move of a workflow row through `Workflow.move` (recorded, and it "
            "schedules the next step)",
            "Schedule one timer per state entry (one timer id per row version and state)",
        ),
        _timer_on_moved_row,
    ),
    Signature(
        "p5.dead_letter_pileup",
        "P5",
        "Dead-lettered or escalated steps piling up",
        "Instances stop without ending; the human queue grows.",
        "Any `dead_lettered` event (at least `dead_letters`), or at least "
        "`pending_escalations` escalations still pending (re-derivation review items, "
        "`review:*`, are not escalated runs and are read by `p3.replay_divergence`).",
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
        "`expiry_share` with at least `expiry_min_decided`; or any approval still pending "
        "past its SLA at the latest recorded instant. Escalations count in neither part: they "
        "are runs parked for a person, not a gate's yes/no (pending ones are "
        "`p5.dead_letter_pileup`'s).",
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
