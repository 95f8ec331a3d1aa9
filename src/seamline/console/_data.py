"""What the console shows, read from the store: one function per view, shared by the HTML
pages and the JSON API so both say the same thing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from seamline.store import Approval, Event, Row, RunRecord, SpanRecord, Store

__all__ = [
    "RunDetail",
    "SpanLine",
    "approval_view",
    "as_of",
    "attempt_history",
    "controls_view",
    "run_detail",
    "span_lines",
]

PAGE = 100


@dataclass(frozen=True, slots=True)
class SpanLine:
    """A span placed in its trace's tree: ``depth`` 0 is a root."""

    span: SpanRecord
    depth: int
    duration_ms: float


def span_lines(spans: list[SpanRecord]) -> list[SpanLine]:
    """The spans in tree order (each parent before its children, siblings by start time);
    a span whose parent was not kept is shown as a root."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanRecord]] = defaultdict(list)
    for s in spans:
        children[s.parent_id if s.parent_id in ids else None].append(s)
    out: list[SpanLine] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: (x.started_at, x.span_id)):
            ms = (s.ended_at - s.started_at).total_seconds() * 1000
            out.append(SpanLine(s, depth, ms))
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return out


@dataclass(frozen=True, slots=True)
class RunDetail:
    run: RunRecord
    spans: list[SpanLine]
    attempts: list[Event]


def attempt_stream(run: RunRecord) -> str:
    return f"sdb:{run.boundary}:{run.id}"


async def attempt_history(store: Store, run: RunRecord) -> list[Event]:
    """The boundary's record of the instance: proposals, rejects, accept, commit or ending."""
    return await store.read_stream(attempt_stream(run), limit=1000)


async def run_detail(store: Store, run_id: str) -> RunDetail | None:
    run = await store.get_run(run_id)
    if run is None:
        return None
    spans = await store.spans(trace_id=run.trace_id) if run.trace_id else []
    return RunDetail(run, span_lines(spans), await attempt_history(store, run))


async def as_of(store: Store, now: datetime) -> datetime:
    """The end of the console's time windows: now, or when the store's newest run ended if
    that was over a day before now (a store written in virtual time, or an idle system),
    so the pages show the latest activity rather than an empty day."""
    newest = await store.list_runs(limit=1)
    if newest and newest[0].ended_at < now - timedelta(days=1):
        return newest[0].ended_at + timedelta(microseconds=1)  # windows end before `until`
    return now


def row_stream(row: Row) -> str:
    return f"wf:{row.kind}:{row.id}"


async def approval_view(store: Store, approval: Approval) -> dict[str, Any]:
    """What a person needs to decide: what the agent tried, the decision asked for, the
    options with their expected impact, and the row it holds up."""
    request = approval.request if isinstance(approval.request, dict) else {}
    return {
        "tried": request.get("tried", []),
        "decision_needed": request.get("decision_needed") or approval.reason,
        "options": request.get("options", []),
        "input": request.get("input"),
        "boundary": request.get("boundary"),
        "row": await store.get_row(approval.row_id) if approval.row_id else None,
    }


async def controls_view(store: Store, throttle_names: list[str]) -> dict[str, Any]:
    from seamline.patterns import throttle_row_id

    kills = await store.kills()
    overrides = {}
    for name in throttle_names:
        row = await store.get_row(throttle_row_id(name))
        overrides[name] = row.data if row is not None else None
    return {"kills": kills, "throttles": overrides}


def adr_text(kind: str, configured: dict[str, Path]) -> tuple[str | None, str | None]:
    """The ADR for ``kind`` as Markdown, from its answers file (configured, or
    ``examples/workloads/KIND/adr.yaml`` under the working directory); (None, why) when
    there is none or it does not load."""
    from seamline.errors import SeamlineError
    from seamline.method import decide, load_answers, render

    path = configured.get(kind) or Path("examples/workloads") / kind / "adr.yaml"
    if not path.is_file():
        return None, f"no ADR answers file for {kind!r} (looked for {path})"
    try:
        return render(decide(load_answers(path))), None
    except SeamlineError as exc:
        return None, f"{path}: {exc}"
