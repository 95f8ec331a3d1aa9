"""``seamline runs``: the recorded runs and, for one of them, its trace.

``runs show`` draws the spans the store kept for the run (see ``docs/traces.md``); a run that
was not traced still has its boundary's events, and those are shown instead, so the attempt
history (proposed, rejected or accepted, then committed, escalated or failed) is always there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from seamline._cli_common import StoreOption, command_errors, fail, open_existing_store
from seamline.errors import ConfigError
from seamline.store import DEFAULT_STORE_URL, Event, RunRecord, SpanRecord

__all__ = ["runs_app"]

runs_app = typer.Typer(help="Recorded runs and their traces.", no_args_is_help=True)
_out = Console()

_STATUS_STYLE = {"committed": "green", "escalated": "yellow", "failed": "red"}
# the attributes worth a glance in the tree; everything else is in the store
_SHOWN = (
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.tool.name",
    "seamline.outcome",
    "seamline.verdict",
    "seamline.reason_code",
    "seamline.tool.outcome",
    "seamline.gate.decision",
    "seamline.gate.rule",
    "seamline.transition.from",
    "seamline.transition.to",
    "seamline.decision",
    "seamline.simulated",
)


@runs_app.command("list")
def list_runs(
    store: StoreOption = DEFAULT_STORE_URL,
    kind: Annotated[str | None, typer.Option(help="Only runs of this workflow kind.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only runs that ended so: committed, escalated, failed.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
) -> None:
    """The latest run endings, newest first."""
    if status is not None and status not in _STATUS_STYLE:
        raise fail(
            ConfigError(f"--status must be one of {', '.join(_STATUS_STYLE)}, got {status!r}")
        )

    async def go() -> list[RunRecord]:
        st = open_existing_store(store)
        try:
            return await st.list_runs(kind=kind, status=status, limit=limit)
        finally:
            await st.close()

    with command_errors():
        runs = asyncio.run(go())
    if not runs:
        _out.print("no runs recorded (with these filters)")
        return
    table = Table(title=f"{len(runs)} run(s), newest first", title_justify="left")
    widest = min(20, max(len(r.id) for r in runs))
    columns = ["id", "kind", "status", "tries", "tokens", "ms", "ended"]
    columns += ["reason"] if any(r.reason for r in runs) else []
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in {"tries", "tokens", "ms"} else "left",
            # the id is what 'runs show' needs: folded when too wide, never cut
            min_width=widest if column == "id" else None,
            no_wrap=column == "status",
            overflow="fold",
        )
    for r in runs:
        style = _STATUS_STYLE.get(r.status, "")
        table.add_row(
            escape(r.id),
            escape(r.kind),
            f"[{style}]{r.status}[/]",
            str(r.attempts),
            f"{r.prompt_tokens + r.completion_tokens:,}",
            f"{r.latency_ms:,.1f}",
            r.ended_at.strftime("%m-%d %H:%M"),
            *([escape(r.reason or "")] if len(columns) > 7 else []),
        )
    _out.print(table)
    _out.print("details: seamline runs show ID")


@runs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id, as 'seamline runs list' shows.")],
    store: StoreOption = DEFAULT_STORE_URL,
) -> None:
    """One run's trace as a tree; its recorded events when no spans were kept."""

    async def go() -> tuple[RunRecord, list[SpanRecord], list[Event]]:
        st = open_existing_store(store)
        try:
            run = await st.get_run(run_id)
            if run is None:
                raise ConfigError(
                    f"no run {run_id!r} in {st.url}; list the recorded ones with "
                    "'seamline runs list'"
                )
            spans = await st.spans(trace_id=run.trace_id) if run.trace_id else []
            events = [] if spans else await st.read_stream(f"sdb:{run.boundary}:{run.id}")
            return run, spans, events
        finally:
            await st.close()

    with command_errors():
        run, spans, events = asyncio.run(go())
    style = _STATUS_STYLE.get(run.status, "")
    _out.print(
        f"run [bold]{escape(run.id)}[/] ({escape(run.kind)}): [{style}]{run.status}[/]"
        + (f" ({escape(run.reason)})" if run.reason else "")
        + f", {run.attempts} attempt(s), {run.prompt_tokens + run.completion_tokens:,} tokens, "
        f"{run.latency_ms:,.1f} ms",
        highlight=False,
    )
    if spans:
        _out.print(_span_tree(run, spans))
    else:
        _out.print("[dim]no spans kept for this run (not traced); its recorded events:[/]")
        _out.print(_event_tree(run, events))


def _span_tree(run: RunRecord, spans: Sequence[SpanRecord]) -> Tree:
    tree = Tree(f"trace {run.trace_id}", guide_style="dim")
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanRecord]] = {}
    for s in spans:
        parent = s.parent_id if s.parent_id in ids else None
        children.setdefault(parent, []).append(s)

    def add(node: Tree, parent: str | None) -> None:
        for s in children.get(parent, []):
            add(node.add(_span_label(s)), s.span_id)

    add(tree, None)
    return tree


def _span_label(s: SpanRecord) -> str:
    ms = (s.ended_at - s.started_at).total_seconds() * 1000
    attributes = s.attributes
    shown = ", ".join(
        f"{k.rsplit('.', 1)[-1]}={_short(attributes[k])}" for k in _SHOWN if k in attributes
    )
    status = " [red]ERROR[/]" if s.status == "error" else ""
    description = attributes.get("otel.status_description")
    if status and description:
        status += f" [red]{escape(str(description))[:120]}[/]"
    return (
        f"[bold]{escape(s.name)}[/] [dim]{ms:,.2f} ms[/]"
        + (f"  {escape(shown)}" if shown else "")
        + status
    )


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _event_tree(run: RunRecord, events: Sequence[Event]) -> Tree:
    tree = Tree(f"stream sdb:{run.boundary}:{run.id}", guide_style="dim")
    attempts: dict[int, Tree] = {}
    for e in events:
        payload = e.payload if isinstance(e.payload, dict) else {}
        number = payload.get("attempt")
        label = f"[bold]{e.type}[/] [dim]{e.recorded_at:%H:%M:%S}[/]" + _event_detail(
            e.type, payload
        )
        if isinstance(number, int) and e.type in {"proposed", "rejected", "model_failed"}:
            if number not in attempts:
                attempts[number] = tree.add(f"attempt {number}")
            attempts[number].add(label)
        else:
            tree.add(label)
    return tree


def _event_detail(type: str, payload: dict[str, Any]) -> str:
    if type == "proposed":
        usage = payload.get("usage") or [0, 0]
        return escape(f"  model={payload.get('model')} tokens={usage[0]}+{usage[1]}")
    if type == "rejected":
        codes = [r.get("reason_code") for r in payload.get("rejects", []) if isinstance(r, dict)]
        return escape(f"  {', '.join(str(c) for c in codes)}")
    if type == "model_failed":
        return escape(f"  {payload.get('code')}")
    if type == "accepted":
        return escape(f"  via={payload.get('via')} verifiers={len(payload.get('verdicts', []))}")
    if type == "escalated":
        return escape(f"  {payload.get('approval_id')}: {payload.get('reason')}")
    if type == "failed":
        return escape(f"  {payload.get('reason_code')}: {payload.get('message')}")
    return ""
