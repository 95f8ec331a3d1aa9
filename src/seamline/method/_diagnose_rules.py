"""The detection rules of the failure-signature catalog: pure functions over a
:class:`~seamline.method._diagnose_types.Recorded` snapshot, one per signature."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from seamline import codec
from seamline.method._diagnose_types import _ENDINGS, _REVIEW, Finding, Recorded, Thresholds
from seamline.store import Approval, Event

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


def wilson_lower(successes: int, n: int, z: float = 1.96) -> float:
    """The lower end of the Wilson score interval for a proportion (0 when ``n`` is 0)."""
    if n == 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


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
    # Credibly above the line, not by the luck of a small sample: the 95% Wilson lower bound
    # of the expired share (4 of 7 is noise; 14 of 17 is not).
    high = (
        len(decided) >= t.expiry_min_decided
        and wilson_lower(len(expired), len(decided)) > t.expiry_share
    )
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
