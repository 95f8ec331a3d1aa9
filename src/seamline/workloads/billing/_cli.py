"""``seamline billing``: the autonomous billing-anomaly scanner, in virtual time."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption, fail, progress
from seamline.errors import SeamlineError
from seamline.models import PROFILES
from seamline.store import DEFAULT_STORE_URL, open_store, parse_store_url

if TYPE_CHECKING:
    from seamline.workloads.billing._job import BillingSummary, ReplayReport

__all__ = ["cli"]

_out = Console()
_err = Console(stderr=True)

cli = typer.Typer(
    help="The billing-anomaly scanner: monthly charges, plan changes and outages go to an "
    "event log; a scanner finds anomalies, the model proposes credits through a boundary, and "
    "a gated saga issues them. Billing data, model and notification service are SIMULATED.",
    no_args_is_help=True,
)


@cli.callback()
def _group() -> None:
    """The billing-anomaly scanner (P3 event log, P2 saga, P4 gate)."""


@cli.command("run")
def run(
    store: StoreOption = DEFAULT_STORE_URL,
    customers: Annotated[
        int, typer.Option(min=1, max=7043, help="Customers in the synthetic cohort.")
    ] = 500,
    cycles: Annotated[int, typer.Option(min=1, max=120, help="Monthly billing cycles.")] = 6,
    seed: SeedOption = 7,
    profile: Annotated[
        str, typer.Option(help=f"Simulated model profile: {', '.join(PROFILES)}.")
    ] = "typical-v1",
    replay: Annotated[
        bool, typer.Option(help="Then replay the log on a fork and compare every decision.")
    ] = True,
) -> None:
    """Publish each cycle's billing facts, scan them, issue credits, and summarise.

    Run it again on the same store and it resumes: nothing is published or credited twice.
    """
    try:
        _run(store, customers, cycles, seed, profile, replay)
    except SeamlineError as exc:
        raise fail(exc) from exc


def _run(store_url: str, n: int, cycles: int, seed: int, profile: str, replay: bool) -> None:
    from seamline.clock import VirtualClock
    from seamline.workloads.billing._credit import simulated_credit_model
    from seamline.workloads.billing._generate import BILLING_START
    from seamline.workloads.billing._job import (
        replay_billing,
        run_billing,
    )
    from seamline.workloads.renewal import synthetic_cohort

    clock = VirtualClock(BILLING_START)
    model = simulated_credit_model(profile, seed=seed, clock=clock)
    customers = synthetic_cohort(n, seed=seed)
    _out.print(
        f"[yellow]data: SYNTHETIC cohort of {len(customers):,} customers (seed {seed}); "
        f"billing events, anomalies and notice bounces are SIMULATED (seeded)[/]"
    )
    _out.print(f"[yellow]model: SIMULATED model {model.name} (seeded, seed {seed})[/]")
    _out.print(f"store: {parse_store_url(store_url).display}")

    async def go() -> tuple[BillingSummary, ReplayReport | None]:
        st = open_store(store_url, clock=clock)
        try:
            with progress(_out) as bar:
                task = bar.add_task("billing cycles scanned", total=cycles)
                summary = await run_billing(
                    st,
                    customers=customers,
                    cycles=cycles,
                    seed=seed,
                    clock=clock,
                    model=model,
                    on_cycle=lambda done, total: bar.update(task, completed=done),
                )
            report = await replay_billing(st, summary.job, clock=clock) if replay else None
            return summary, report
        finally:
            await st.close()

    summary, report = asyncio.run(go())
    _print(summary, report)


def _print(s: BillingSummary, report: ReplayReport | None) -> None:
    label = "SIMULATED " if s.simulated else ""
    models = ", ".join(s.models) or "no model call"
    table = Table(
        title=f"billing job {s.job}",
        caption=f"{label}model: {models}",
        title_justify="left",
        caption_justify="left",
        show_header=False,
    )
    table.add_column()
    table.add_column(justify="right")
    rows: list[tuple[str, str]] = [
        ("customers x cycles", f"{s.customers:,} x {s.cycles}"),
        ("billing events in the log", f"{s.events:,}"),
        ("anomalies found", f"{s.anomalies_found:,}"),
        *((f"  {kind}", f"{n:,}") for kind, n in s.anomalies.items()),
        ("credits proposed (verified)", f"{s.proposed:,}"),
        ("credits committed", f"{s.committed:,}"),
        ("credits denied", f"{s.denied_total:,}"),
        *((f"  {rule}", f"{n:,}") for rule, n in s.denied.items()),
        ("escalated to a person", f"{s.escalated:,}"),
        ("compensated (credit reversed)", f"{s.compensated:,}"),
        ("money credited (net)", f"{s.credited:,.2f}"),
        ("money reversed", f"{s.reversed:,.2f}"),
        *((f"boundary rejects: {code}", f"{n:,}") for code, n in s.rejects.items()),
        ("tokens", f"{s.tokens:,}"),
        ("simulated cost" if s.simulated else "cost", f"{s.cost:.4f}"),
        ("wall time", f"{s.wall_seconds:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    _out.print(table)
    if report is not None:
        same = len(report.original) - len(report.diverged)
        verdict = "identical" if report.identical else f"{len(report.diverged)} DIVERGED"
        untouched = (
            "nothing issued in the original"
            if report.original_untouched
            else "[bold red]the original's records CHANGED[/]"
        )
        _out.print(
            f"replay on fork {report.branch} (recorded model, from offset 0 of "
            f"{report.at:,} events): {same}/{len(report.original)} decisions {verdict}; "
            f"{untouched}"
        )
