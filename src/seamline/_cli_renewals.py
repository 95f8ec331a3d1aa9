"""``seamline renewals``: the 90-day contract-renewal agent, the main job."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption, command_errors, progress
from seamline.errors import ConfigError
from seamline.store import DEFAULT_STORE_URL, open_store, parse_store_url

__all__ = ["renewals_app"]

_out = Console()
_err = Console(stderr=True)

renewals_app = typer.Typer(
    help="The 90-day contract-renewal agent on the IBM Telco churn data (or a synthetic "
    "cohort of the same shape), in virtual time.",
    no_args_is_help=True,
)


def _model(spec: str, base_url: str | None, seed: int, clock: object) -> tuple[object, str]:
    from seamline.workloads.renewal._offer import SimulatedRenewalModel

    if spec.startswith("sim:"):
        model = SimulatedRenewalModel(spec[4:], seed=seed, clock=clock)
        return model, f"SIMULATED model {spec} (seeded, seed {seed})"
    if spec.startswith("openai:"):
        from seamline.models import OpenAIChatModel

        if not base_url:
            raise ConfigError(
                "--model openai:NAME needs --base-url (the OpenAI-compatible "
                "endpoint, e.g. http://127.0.0.1:8000/v1)"
            )
        key = os.environ.get("OPENAI_API_KEY", "not-needed-for-local-servers")
        return (
            OpenAIChatModel(model=spec[7:], base_url=base_url, api_key=key),
            f"real model {spec[7:]} at {base_url}",
        )
    raise ConfigError(
        f"--model {spec!r}: use sim:PROFILE (e.g. sim:typical-v1) or openai:MODEL with --base-url"
    )


@renewals_app.command("run")
def run(
    data: Annotated[
        Path | None,
        typer.Option(
            help="The Telco churn CSV. Without it a seeded synthetic cohort of the same shape is "
            "used (and the output says so)."
        ),
    ] = None,
    store: StoreOption = DEFAULT_STORE_URL,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N customers.")] = None,
    seed: SeedOption = 7,
    model: Annotated[
        str, typer.Option(help="sim:PROFILE (simulated) or openai:MODEL.")
    ] = "sim:typical-v1",
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint for --model openai:…")
    ] = None,
    report: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path(
        "reports/renewals.html"
    ),
) -> None:
    """Run every customer through the 90-day renewal window and report.

    Interrupt it (Ctrl-C, or kill the process) and run the same command again: it resumes
    where it stopped, with no offer sent twice, and ends with the same summary.
    """
    with command_errors(resumable=True):
        _run(data, store, limit, seed, model, base_url, report)


def _run(
    data: Path | None,
    store_url: str,
    limit: int | None,
    seed: int,
    model_spec: str,
    base_url: str | None,
    report_path: Path,
) -> None:
    from seamline.clock import VirtualClock
    from seamline.telemetry import configure_tracing, shutdown_tracing
    from seamline.workloads.renewal._data import load_customers, synthetic_cohort
    from seamline.workloads.renewal._job import CAMPAIGN_START, run_renewals
    from seamline.workloads.renewal._report import write_report

    notes = []
    if data is not None:
        loaded = load_customers(data)
        customers = loaded.customers
        repaired = sum(i.action == "repaired" for i in loaded.issues)
        skipped = sum(i.action == "skipped" for i in loaded.issues)
        _out.print(
            f"data: {data} ({loaded.rows_read:,} rows; {repaired} repaired, {skipped} skipped)"
        )
        for issue in loaded.issues[:5]:
            _out.print(
                f"  line {issue.line} {issue.customer_id or ''}: {issue.action} "
                f"({issue.rule}) {escape(issue.problem)}"
            )
        if len(loaded.issues) > 5:
            _out.print(f"  … and {len(loaded.issues) - 5} more in the report")
        notes += [
            f"Data: {data}: {loaded.rows_read:,} rows, {repaired} repaired and "
            f"{skipped} skipped by declared rules."
        ]
    else:
        customers = synthetic_cohort(limit or 7043, seed=seed)
        _out.print(
            f"[yellow]data: SYNTHETIC cohort of {len(customers):,} customers (seed "
            f"{seed}); pass --data PATH for the real Telco file[/]"
        )
        notes.append(f"Data: a SYNTHETIC cohort of {len(customers):,} customers (seed {seed}).")
    if limit is not None:
        customers = customers[:limit]
    clock = VirtualClock(CAMPAIGN_START)
    model, label = _model(model_spec, base_url, seed, clock)
    _out.print(
        f"[yellow]{label}; customers' answers, approvers and support notes are "
        "SIMULATED (seeded)[/]"
        if model_spec.startswith("sim:")
        else f"{label}; customers' answers, approvers and support notes are SIMULATED"
    )
    notes.append(
        f"Model: {label}. Customers' answers, approvers and support notes are simulated and seeded."
    )
    _out.print(f"store: {parse_store_url(store_url).display}")

    async def go() -> object:
        st = open_store(store_url, clock=clock)
        configure_tracing(st)  # every run's trace is kept: 'seamline runs show ID'
        try:
            with progress(_out) as bar:
                task = bar.add_task("renewal windows closed", total=len(customers))
                return await run_renewals(
                    st,
                    customers,
                    seed=seed,
                    clock=clock,
                    model=model,  # type: ignore[arg-type]
                    on_progress=lambda n, total: bar.update(task, completed=n),
                )
        finally:
            await shutdown_tracing(st)
            await st.close()

    summary = asyncio.run(go())
    from seamline.workloads.renewal._agent import TERMINAL
    from seamline.workloads.renewal._job import RenewalSummary

    assert isinstance(summary, RenewalSummary)
    table = Table(title=f"renewal job {summary.job}", title_justify="left")
    table.add_column("contract")
    for t in TERMINAL:
        table.add_column(t, justify="right")
    for contract, counts in summary.by_contract.items():
        table.add_row(contract, *(f"{counts[t]:,}" for t in TERMINAL))
    table.add_row("all", *(f"{summary.outcomes[t]:,}" for t in TERMINAL), style="bold")
    _out.print(table)
    facts = Table(show_header=False, title="what happened", title_justify="left")
    facts.add_column()
    facts.add_column(justify="right")
    mean = (sum(summary.discounts) / len(summary.discounts)) if summary.discounts else 0
    for name, value in (
        ("offers committed (boundary)", f"{summary.commits:,}"),
        ("offers sent", f"{summary.offers_sent:,}"),
        ("mean discount granted", f"{mean:.1%}"),
        ("escalations to a person", f"{summary.escalations:,}"),
        ("re-assessed after a policy bump or end of life", f"{summary.reassessed:,}"),
        ("hallucinated discounts routed to a person", f"{summary.hallucinations_escalated:,}"),
        ("injection attempts blocked", f"{summary.injection_blocked:,}"),
        ("outreach steps throttled", f"{summary.throttled:,}"),
        ("tokens", f"{summary.prompt_tokens + summary.completion_tokens:,}"),
        ("simulated cost", f"{summary.cost:.4f}"),
        ("wall time", f"{summary.wall_seconds:.1f} s"),
    ):
        facts.add_row(name, value)
    for rule, n in summary.gate_denials.most_common():
        facts.add_row(f"gate denials: {rule}", f"{n:,}")
    for reason, n in summary.rejects.most_common(8):
        facts.add_row(f"rejects: {reason}", f"{n:,}")
    _out.print(facts)
    path = write_report(summary, report_path, title=f"Renewal job {summary.job}", notes=notes)
    _out.print(f"report: {path}")


@renewals_app.command("enqueue")
def enqueue(
    data: Annotated[Path | None, typer.Option(help="The Telco churn CSV (else synthetic).")] = None,
    store: StoreOption = DEFAULT_STORE_URL,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N customers.")] = None,
    seed: SeedOption = 7,
) -> None:
    """Create the job's rows and timers for `seamline worker` processes to drive."""
    from seamline.clock import VirtualClock
    from seamline.workloads.renewal._data import load_customers, synthetic_cohort
    from seamline.workloads.renewal._job import CAMPAIGN_START, enqueue_renewals

    with command_errors():
        if data is not None:
            customers = load_customers(data).customers[: limit or None]
            source: dict[str, object] = {"data": str(data.resolve()), "limit": len(customers)}
        else:
            customers = synthetic_cohort(limit or 7043, seed=seed)
            source = {"synthetic": len(customers)}

        async def go() -> str:
            clock = VirtualClock(CAMPAIGN_START)
            st = open_store(store, clock=clock)
            try:
                return await enqueue_renewals(st, customers, clock=clock, seed=seed, source=source)
            finally:
                await st.close()

        job = asyncio.run(go())
        _out.print(
            f"job {job}: {len(customers):,} contracts enqueued in "
            f"{parse_store_url(store).display}; start workers with "
            f"'seamline worker --store URL'"
        )
