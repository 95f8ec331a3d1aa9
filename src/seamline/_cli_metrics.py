"""``seamline metrics``: the figures (and alerts) of a store's recorded runs, per kind."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import pydantic_core
import typer
from rich.console import Console
from rich.table import Table

from seamline._cli_common import StoreOption, command_errors, open_existing_store
from seamline.errors import ConfigError
from seamline.metrics import (
    Alert,
    AlertRules,
    Metrics,
    compute_metrics,
    evaluate_alerts,
    metrics_by_kind,
    parse_window,
)
from seamline.store import DEFAULT_STORE_URL

__all__ = ["metrics"]

_out = Console()


def _instant(flag: str, text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: expected an ISO-8601 instant such as 2026-01-31T00:00:00Z"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _span(
    since: str | None, until: str | None, window: str | None, now: datetime
) -> tuple[datetime, datetime]:
    if since is not None and window is not None:
        raise ConfigError("give --since or --window, not both")
    end = now if until is None else _instant("--until", until)
    start = _instant("--since", since) if since is not None else end - parse_window(window or "24h")
    if start >= end:
        raise ConfigError(f"empty window: {start.isoformat()} is not before {end.isoformat()}")
    return start, end


@dataclass(frozen=True, slots=True)
class _Found:
    metrics: list[Metrics]
    alerts: list[Alert] | None
    newest: datetime | None


async def _gather(
    url: str, kind: str | None, since: datetime, until: datetime, alerts: bool
) -> _Found:
    store = open_existing_store(url)
    try:
        if kind is None:
            found = await metrics_by_kind(store, since=since, until=until)
        else:
            found = [await compute_metrics(store, since=since, until=until, kind=kind)]
        raised = await evaluate_alerts(store, kind, until, rules=AlertRules()) if alerts else None
        newest = await store.list_runs(limit=1)
        return _Found(found, raised, newest[0].ended_at if newest else None)
    finally:
        await store.close()


def _fmt(value: Any, *, pct: bool = False, unit: str = "") -> str:
    if value is None:
        return "[dim]no data[/]"
    if pct:
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def _table(m: Metrics) -> Table:
    table = Table(
        title=f"{m.kind or 'all kinds'}: {m.since:%Y-%m-%d %H:%M} to {m.until:%Y-%m-%d %H:%M} UTC"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        (
            "runs (committed / escalated / failed)",
            f"{m.runs} ({m.committed} / {m.escalated} / {m.failed})",
        ),
        ("attempts", str(m.attempts)),
        ("success rate", _fmt(m.success_rate, pct=True)),
        ("escalation rate", _fmt(m.escalation_rate, pct=True)),
        ("cost per run", _fmt(m.cost_per_run)),
        ("cost, total", str(m.cost_total)),
        ("p95 latency", _fmt(m.latency_p95_ms, unit=" ms")),
        ("context utilisation, mean", _fmt(m.context_utilisation_mean, pct=True)),
        ("context utilisation, p95", _fmt(m.context_utilisation_p95, pct=True)),
    ]
    rows += [
        (f"rejects: {r.verifier}", f"{_fmt(r.rate, pct=True)} ({r.rejected_attempts}/{r.attempts})")
        for r in m.verifier_rejects
    ]
    if not m.verifier_rejects:
        rows.append(("rejects", "none"))
    rows += [(f"gate denials: {d.gate} {d.rule}", str(d.denials)) for d in m.gate_denials]
    if not m.gate_denials:
        rows.append(("gate denials", "none"))
    if m.tool_errors is None:
        rows.append(("tool error rate", "[dim]no spans kept[/]"))
    else:
        rows += [
            (f"tool errors: {t.tool}", f"{_fmt(t.rate, pct=True)} ({t.errors}/{t.calls})")
            for t in m.tool_errors
        ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def metrics(
    store: StoreOption = DEFAULT_STORE_URL,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Only this workflow kind (default: one table per kind)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Window start, an ISO-8601 instant (instead of --window)."),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            "--window", help="Window length before --until: 30m, 24h, 7d, 2w (default 24h)."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Window end, an ISO-8601 instant (default now). Runs recorded in virtual time "
            "end when their clock said: pass an instant of that clock.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    alerts: Annotated[
        bool,
        typer.Option(
            "--alerts",
            help="Also evaluate the alert rules at --until (success 10 points below the 7-day "
            "baseline, cost per run above 2x, at least 20 runs each) and record what fires.",
        ),
    ] = False,
) -> None:
    """Show success rate, escalation rate, cost per run, p95 latency, context utilisation,
    rejects per verifier, gate denials per rule and tool errors per tool, per workflow kind.

    The figures cover runs that ended in the window [since, until): the last 24 hours by
    default, or e.g. --window 7d, or --since 2026-01-01 --until 2026-02-01 for a store
    written in virtual time. Definitions: docs/metrics.md.
    """
    with command_errors():
        start, end = _span(since, until, window, datetime.now(UTC))
        found = asyncio.run(_gather(store, kind, start, end, alerts))
    if as_json:
        plain = pydantic_core.to_jsonable_python({"metrics": found.metrics, "alerts": found.alerts})
        print(json.dumps(plain, indent=2))
        return
    if not any(m.runs for m in found.metrics):
        hint = (
            f"; the newest run ended at {found.newest.isoformat()}: pass --until after it"
            if found.newest is not None and not start <= found.newest < end
            else ""
        )
        _out.print(
            f"no runs ended between {start.isoformat()} and {end.isoformat()}{hint}",
            soft_wrap=True,
        )
    for m in found.metrics:
        if m.runs or kind is not None:
            _out.print(_table(m))
    if found.alerts is not None:
        if not found.alerts:
            _out.print("alerts: none")
        for a in found.alerts:
            _out.print(f"[bold red]alert[/] {a.name}: {a.message}", soft_wrap=True)
