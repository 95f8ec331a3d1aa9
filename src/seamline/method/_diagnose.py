"""Diagnostics: a catalog of failure signatures, detected in what a store has recorded.

Each signature is a frozen value: the symptom an operator sees, the rule that finds it in the
event log, audit, approvals, rows and commit ledger, the cause, the pattern weakness behind
it, and corrections ranked cheapest and most reversible first. :func:`diagnose` reads the
store once into a :class:`Recorded` snapshot (the only I/O) and runs every rule over it; the
rules are pure functions, so the tests and the docs read the same catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rich.table import Table

from seamline.store import AuditEntry, CommitRecord, Event, Row, Store

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

from seamline.method._diagnose_rules import (
    _approval_timeouts,
    _boundary_key,
    _commit_without_accept,
    _dead_letter_pileup,
    _duplicate_side_effect,
    _effect_stuck_pending,
    _missing_gate,
    _rejected_reported_as_success,
    _replay_divergence,
    _rubber_stamping,
    _runaway_retry,
    _scattered_commitment,
    _stale_write_storm,
    _subagent_not_merged,
    _timer_on_moved_row,
)
from seamline.method._diagnose_types import (
    Finding,
    Recorded,
    Signature,
    Thresholds,
)


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
        "Share of decided approvals (kind `approval`) that `expired`, firing when its 95% "
        "Wilson lower bound is above `expiry_share` (so a small sample's luck does not fire "
        "it) with at least `expiry_min_decided`; or any approval still pending "
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
