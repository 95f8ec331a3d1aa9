"""``seamline support``: the conversational plan-change assistant over simulated chats."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption
from seamline.clock import Clock, SystemClock, VirtualClock
from seamline.errors import SeamlineError
from seamline.store import DEFAULT_STORE_URL, open_store, parse_store_url

__all__ = ["cli"]

START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

cli = typer.Typer(
    help="The conversational plan-change support assistant: simulated customers chat to "
    "change their plan; lookups (P1), a boundary per turn, a gate before every change (P4), "
    "and a latency budget per turn.",
    no_args_is_help=True,
)


@cli.callback()
def _group() -> None:
    """The conversational plan-change support assistant."""


@cli.command("run")
def run(
    store: StoreOption = DEFAULT_STORE_URL,
    conversations: Annotated[
        int, typer.Option(min=0, max=7043, help="How many simulated conversations.")
    ] = 200,
    seed: SeedOption = 7,
    latency_budget: Annotated[
        float, typer.Option(min=0.001, max=120.0, help="Model latency allowed per turn, seconds.")
    ] = 2.0,
    principal: Annotated[
        str,
        typer.Option(help="Who the assistant acts as (only support-assistant may change plans)."),
    ] = "support-assistant",
    real_time: Annotated[
        bool,
        typer.Option(help="Use the real clock: the simulated model's latency is really waited."),
    ] = False,
) -> None:
    """Run a batch of simulated support conversations and print what happened.

    Running the same command again on the same store replays the recorded turns: no model
    call, no second change, the same summary.
    """
    from seamline.workloads.support._job import run_support
    from seamline.workloads.support._simulated import PROFILE

    out = Console()
    clock: Clock = SystemClock() if real_time else VirtualClock(START)
    out.print(
        f"[yellow]SIMULATED model sim:{PROFILE} (seeded, seed {seed}); customers, their "
        "messages and the account systems are SIMULATED (synthetic Telco cohort)[/]"
    )
    try:
        out.print(f"store: {parse_store_url(store).display}")

        async def go() -> object:
            st = open_store(store, clock=clock)
            try:
                return await run_support(
                    st,
                    conversations=conversations,
                    seed=seed,
                    clock=clock,
                    principal=principal,
                    latency_budget_s=latency_budget,
                )
            finally:
                await st.close()

        summary = asyncio.run(go())
    except SeamlineError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    from seamline.workloads.support._job import SupportSummary

    assert isinstance(summary, SupportSummary)
    table = Table(title=f"support job {summary.job}", title_justify="left", show_header=False)
    table.add_column()
    table.add_column(justify="right")
    label = " (SIMULATED)" if summary.simulated else ""
    for name, value in (
        ("model", f"{summary.model}{label}"),
        ("conversations (simulated customers)", f"{summary.conversations:,}"),
        ("turns", f"{summary.turns:,}"),
        ("answered with a verified action", f"{summary.answered:,}"),
        (
            f"within the {summary.latency_budget_ms / 1000:g} s latency budget",
            f"{summary.within_budget:,}",
        ),
        (
            f"p95 model latency{' (simulated)' if summary.simulated else ''}",
            f"{summary.p95_latency_ms:,.0f} ms",
        ),
        ("plan changes committed", f"{summary.changes_committed:,}"),
        ("escalations (a person follows up)", f"{summary.escalations:,}"),
        ("injection attempts (conversations)", f"{summary.injection_conversations:,}"),
        ("changes from injection attempts", f"{summary.injection_changes:,}"),
        ("tokens", f"{summary.tokens:,}"),
        ("wall time", f"{summary.wall_seconds:.1f} s"),
    ):
        table.add_row(name, value)
    for groups, title in (
        (summary.actions, "actions"),
        (summary.fallbacks, "fallbacks"),
        (summary.gate_denials, "gate denials"),
        (summary.rejects, "rejects by verifier"),
    ):
        for key, n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"{title}: {key}", f"{n:,}")
    out.print(table)
