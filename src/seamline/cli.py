"""The ``seamline`` command line."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import signal
import sys
import threading
import uuid
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from seamline._cli_common import StoreOption, command_errors, fail, progress
from seamline._version import __version__
from seamline.errors import SeamlineError
from seamline.store import DEFAULT_STORE_URL, open_store, parse_store_url

__all__ = ["app", "main"]

app = typer.Typer(
    name="seamline",
    help=(
        "seamline: a runtime for production LLM agents.\n\n"
        "Where a model's output becomes an action, seamline puts a typed, durable boundary: "
        "the model proposes, deterministic verifiers check, the commit happens exactly once, "
        "and a typed reject goes back to the model.\n\n"
        "Every command that touches state takes --store (or the SEAMLINE_STORE environment "
        f"variable): a SQLite file (default {DEFAULT_STORE_URL}) or postgresql://USER@HOST/DB."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


_out = Console()
_err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        _out.print(f"seamline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """seamline: a runtime for production LLM agents."""


_EXTRAS = {
    "postgres": ("psycopg", "psycopg_pool"),
    "anthropic": ("anthropic",),
    "console": ("fastapi", "uvicorn"),
    "dev": ("pytest", "hypothesis", "mypy", "ruff"),
}


@app.command()
def doctor(store: StoreOption = DEFAULT_STORE_URL) -> None:
    """Check this installation: Python, the store (reachable? migrated?) and optional extras.

    Exits non-zero when the store cannot be reached or its schema is out of date, so it can
    gate a deployment script.
    """
    table = Table(title="seamline doctor", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("seamline", __version__)
    table.add_row("python", f"{platform.python_version()} ({sys.executable})")
    healthy = True
    try:
        parsed = parse_store_url(store)
        table.add_row("store", parsed.display)
        status = asyncio.run(_store_status(store))
        table.add_row("store status", status[0])
        healthy = status[1]
    except SeamlineError as exc:
        table.add_row("store status", f"[red]{type(exc).__name__}: {exc}[/]")
        healthy = False
    for extra, modules in _EXTRAS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        verdict = "[green]installed[/]" if not missing else f"[yellow]missing {', '.join(missing)}"
        hint = "" if not missing else f"[/] (pip install 'seamline[{extra}]')"
        table.add_row(f"extra: {extra}", verdict + hint)
    _out.print(table)
    if not healthy:
        raise typer.Exit(code=1)


async def _store_status(url: str) -> tuple[str, bool]:
    from seamline.store._migrations import latest_version

    parsed = parse_store_url(url)
    fresh = parsed.backend == "sqlite" and parsed.target != ":memory:"
    if fresh and not os.path.exists(parsed.target):  # noqa: ASYNC240 - one stat, before any I/O
        return "[yellow]no database file yet: it is created on first use[/]", True
    store = open_store(url, migrate=False)
    try:
        try:
            current = await store.schema_version()
        except SeamlineError:
            current = 0
    finally:
        await store.close()
    latest = latest_version()
    if current == latest:
        return f"[green]reachable, schema version {current} (up to date)[/]", True
    if current > latest:
        return f"[red]reachable, schema version {current} is newer than this seamline[/]", False
    return (
        f"[yellow]reachable, schema version {current} of {latest}: it is migrated "
        "automatically on first use[/]",
        True,
    )


@app.command()
def demo(
    store: StoreOption = DEFAULT_STORE_URL,
    contracts: Annotated[
        int, typer.Option(min=1, max=100_000, help="How many contracts to renew.")
    ] = 500,
    seed: Annotated[int, typer.Option(help="Seed for the simulated outcomes.")] = 7,
) -> None:
    """Run a small end-to-end renewal demo in virtual time on the store.

    Each contract is one durable, versioned row; timers attached to a row version move it
    through a 90-day window; every step is a compare-and-swap transition written with its
    event and commit-ledger row in one transaction. Outcomes are SIMULATED (seeded random);
    no model is called.
    """
    from seamline._demo import DEMO_START, run_demo
    from seamline.clock import VirtualClock

    try:
        display = parse_store_url(store).display
    except SeamlineError as exc:
        raise fail(exc) from exc
    clock = VirtualClock(DEMO_START)
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    _out.print(
        f"[bold]seamline demo[/] run [cyan]{run_id}[/]: {contracts} contracts, 90 days of "
        f"virtual time, store {display}\n"
        "[yellow]outcomes are SIMULATED (seeded random, seed "
        f"{seed}); no model is called[/]"
    )

    async def go() -> None:
        st = open_store(store, clock=clock)
        try:
            with progress(_out) as bar:
                task = bar.add_task("renewal windows closed", total=contracts)
                summary = await run_demo(
                    st,
                    clock,
                    contracts=contracts,
                    seed=seed,
                    run_id=run_id,
                    on_progress=lambda n: bar.advance(task, n),
                )
        finally:
            await st.close()
        table = Table(title=f"demo {run_id} (simulated outcomes)", title_justify="left")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for state, count in sorted(summary.final_states.items()):
            table.add_row(f"contracts {state}", f"{count:,}")
        table.add_row("transitions (CAS)", f"{summary.transitions:,}")
        table.add_row("outreach commits (exactly once)", f"{summary.commits:,}")
        table.add_row("stale timers skipped", f"{summary.stale_timers:,}")
        table.add_row("virtual days", f"{summary.virtual_days:.0f}")
        table.add_row("wall time", f"{summary.wall_seconds:.2f} s")
        _out.print(table)

    try:
        asyncio.run(go())
    except SeamlineError as exc:
        raise fail(exc) from exc


@app.command()
def worker(
    store: StoreOption = DEFAULT_STORE_URL,
    kinds: Annotated[
        str,
        typer.Option(help="Workflow kinds to drive, comma-separated: renewal, porting."),
    ] = "renewal",
    owner: Annotated[str | None, typer.Option(help="This worker's name (leases carry it).")] = None,
    job: Annotated[str | None, typer.Option(help="The job, when the store holds several.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 64,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", help="Keep looking for new work when idle, until SIGTERM or Ctrl-C."
        ),
    ] = False,
    poll: Annotated[
        float, typer.Option(min=0.1, help="With --follow: seconds between looks when idle.")
    ] = 2.0,
) -> None:
    """Drive enqueued work; run as many of these as you like against one store. Enqueue
    first ('seamline renewals enqueue', 'seamline porting enqueue'), then start workers,
    here or on other machines sharing a PostgreSQL store. Work is claimed with leases; a
    worker that dies leaves its work to the others once its leases expire; SIGTERM finishes
    the step under way and stops.

    Example: seamline worker --store postgresql://app@db/seamline --kinds renewal --follow
    """
    import uuid

    from seamline._workers import drive
    from seamline.telemetry import configure_tracing, shutdown_tracing_sync

    wanted = tuple(dict.fromkeys(k.strip() for k in kinds.split(",") if k.strip()))
    name = owner or f"worker-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the step, then stop
    configure_tracing(keep_spans=True)  # kept in the store the worker drives
    with command_errors():
        report = asyncio.run(
            drive(
                store,
                kinds=wanted,
                owner=name,
                job=job,
                concurrency=concurrency,
                stop=stop,
                follow=follow,
                poll_s=poll,
                on_start=lambda k, j: _out.print(f"{name}: driving {k} job {j}", soft_wrap=True),
            )
        )
    shutdown_tracing_sync()
    for kind, counts in report.counts.items():
        _out.print(f"{name}: {kind} {dict(counts)}", soft_wrap=True)
    _out.print(f"{name}: {'stopped' if stop.is_set() else 'idle'}")


def _register_control() -> None:
    from seamline._cli_control import approvals_app, kill_app

    app.add_typer(approvals_app, name="approvals")
    app.add_typer(kill_app, name="kill")
    from seamline._cli_renewals import renewals_app

    app.add_typer(renewals_app, name="renewals")
    from seamline._cli_adr import adr

    app.command("adr")(adr)
    from seamline._cli_eval import evaluate
    from seamline._cli_reliability import reliability

    app.command("reliability")(reliability)
    app.command("eval")(evaluate)
    from seamline._cli_diagnose import diagnose

    app.command("diagnose")(diagnose)
    from seamline._cli_metrics import metrics

    app.command("metrics")(metrics)
    from seamline._cli_replay import replay_app

    app.add_typer(replay_app, name="replay")
    from seamline.workloads.support._cli import cli as support_cli

    app.add_typer(support_cli, name="support")
    from seamline.workloads.incidents._cli import cli as incidents_cli

    app.add_typer(incidents_cli, name="incidents")
    from seamline.workloads.porting._cli import cli as porting_cli

    app.add_typer(porting_cli, name="porting")
    from seamline.workloads.billing._cli import cli as billing_cli

    app.add_typer(billing_cli, name="billing")
    from seamline._cli_console import console_app

    app.add_typer(console_app, name="console")
    from seamline._cli_runs import runs_app

    app.add_typer(runs_app, name="runs")


_register_control()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
