"""``seamline porting``: the number-porting workload from the command line."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption, fail, progress
from seamline.errors import SeamlineError
from seamline.store import DEFAULT_STORE_URL, open_store, parse_store_url

if TYPE_CHECKING:  # the runtime is imported when a command runs, not for --help
    from seamline.workloads.porting._job import PortingSummary

__all__ = ["PORTING_START", "cli"]

PORTING_START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
"""Where virtual time starts: the first forms arrive on a Monday morning."""

_out = Console()
_err = Console(stderr=True)

cli = typer.Typer(
    help="Number porting: customers bring their numbers in from another carrier, with "
    "multi-day waits on the donor, in virtual time.",
    no_args_is_help=True,
)


@cli.callback()
def _porting() -> None:
    """Number porting in virtual time (the donor, customers, desk and network are simulated)."""


@cli.command("run")
def run(
    store: StoreOption = DEFAULT_STORE_URL,
    requests: Annotated[
        int, typer.Option(min=1, max=7043, help="How many port requests (synthetic customers).")
    ] = 200,
    seed: SeedOption = 7,
    profile: Annotated[
        str, typer.Option(help="Profile of the simulated model that reads the forms.")
    ] = "typical-v1",
) -> None:
    """Run a batch of port requests to their end and print what happened.

    Interrupted, the same command resumes where it stopped and ends with the same summary.
    """
    try:
        _run(store, requests, seed, profile)
    except KeyboardInterrupt:
        _err.print("[yellow]interrupted.[/] Run the same command again to resume.")
        raise typer.Exit(130) from None
    except SeamlineError as exc:
        raise fail(exc) from exc


@cli.command("enqueue")
def enqueue(
    store: StoreOption = DEFAULT_STORE_URL,
    requests: Annotated[
        int, typer.Option(min=1, max=7043, help="How many port requests (synthetic customers).")
    ] = 200,
    seed: SeedOption = 7,
) -> None:
    """Create a batch of port requests for `seamline worker --kinds porting` processes to
    drive (any number of them, sharing the store). Enqueuing the same batch twice creates
    nothing new."""
    from seamline.clock import VirtualClock
    from seamline.workloads.porting._job import enqueue_porting

    async def go() -> str:
        clock = VirtualClock(PORTING_START)
        st = open_store(store, clock=clock)
        try:
            return await enqueue_porting(st, requests=requests, seed=seed, clock=clock)
        finally:
            await st.close()

    try:
        job = asyncio.run(go())
    except SeamlineError as exc:
        raise fail(exc) from exc
    _out.print(
        f"job {job}: {requests:,} port requests enqueued in {parse_store_url(store).display}; "
        "start workers with 'seamline worker --kinds porting --store URL'",
        soft_wrap=True,
    )


def _run(store_url: str, requests: int, seed: int, profile: str) -> None:
    from seamline.clock import VirtualClock
    from seamline.workloads.porting._intake import SimulatedPortingModel
    from seamline.workloads.porting._job import run_porting

    clock = VirtualClock(PORTING_START)
    model = SimulatedPortingModel(profile, seed=seed, clock=clock)
    _out.print(
        f"[yellow]SIMULATED model {model.name} (seeded, seed {seed}) reads the forms; the "
        f"customers are a SYNTHETIC cohort of {requests:,}; the donor carriers, the operations "
        "desk and the network systems are SIMULATED[/]"
    )
    _out.print(f"store: {parse_store_url(store_url).display}")

    async def go() -> PortingSummary:
        st = open_store(store_url, clock=clock)
        try:
            with progress(_out) as bar:
                task = bar.add_task("ports settled", total=requests)
                return await run_porting(
                    st,
                    requests=requests,
                    seed=seed,
                    clock=clock,
                    model=model,
                    on_progress=lambda n, total: bar.update(task, completed=n),
                )
        finally:
            await st.close()

    _print(asyncio.run(go()))


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} days"


def _print(s: PortingSummary) -> None:
    label = " (simulated)" if s.simulated else ""
    outcomes = Table(title=f"porting job {s.job}", title_justify="left")
    for name in ("completed", "rejected", "cancelled", "still waiting"):
        outcomes.add_column(name, justify="right")
    waiting = s.requests - s.finished
    outcomes.add_row(
        *(f"{s.outcomes[t]:,}" for t in ("completed", "rejected", "cancelled")), f"{waiting:,}"
    )
    _out.print(outcomes)
    facts = Table(show_header=False, title="what happened", title_justify="left")
    facts.add_column()
    facts.add_column(justify="right")
    rows: list[tuple[str, str]] = [
        ("days to complete, p50", _days(s.days_p50)),
        ("days to complete, p95", _days(s.days_p95)),
        ("virtual time elapsed", f"{s.virtual_days:.1f} days"),
        ("escalations to a person", f"{sum(s.escalations.values()):,}"),
        ("  of which settled by the SLA fallback (deny)", f"{s.sla_fallbacks:,}"),
        ("manual overrides by a person", f"{s.manual_overrides:,}"),
        ("timers that fired on a moved row (no-ops)", f"{s.timer_noops:,}"),
        ("cutover sagas compensated", f"{s.sagas['compensated']:,}"),
        ("saga steps undone", f"{s.compensations:,}"),
        ("donor submissions throttled", f"{s.throttled:,}"),
        (f"model tokens{label}", f"{s.prompt_tokens + s.completion_tokens:,}"),
        (f"model cost{label}", f"{s.cost:.4f}"),
        ("wall time", f"{s.wall_seconds:.1f} s"),
    ]
    rows += [(f"escalations: {k}", f"{n:,}") for k, n in s.escalations.most_common()]
    rows += [(f"rejected: {k}", f"{n:,}") for k, n in s.rejected_by_reason.most_common()]
    rows += [(f"donor rejections: {k}", f"{n:,}") for k, n in s.donor_rejections.most_common()]
    rows += [(f"gate denials: {k}", f"{n:,}") for k, n in s.gate_denials.most_common()]
    rows += [(f"intake rejects: {k}", f"{n:,}") for k, n in s.intake_rejects.most_common(6)]
    for name, value in rows:
        facts.add_row(name, value)
    _out.print(facts)
    _out.print(
        f"[yellow]model: {s.model}{' — SIMULATED' if s.simulated else ''}; donors, customers, "
        "desk and network: SIMULATED[/]"
    )
