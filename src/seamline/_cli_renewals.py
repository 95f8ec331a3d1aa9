"""``seamline renewals``: the 90-day contract-renewal agent, the main job."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption, command_errors, openai_model, progress
from seamline.errors import ConfigError
from seamline.store import DEFAULT_STORE_URL, open_store, parse_store_url

if TYPE_CHECKING:
    from seamline.budget import Price
    from seamline.clock import VirtualClock
    from seamline.models import Model
    from seamline.workloads.renewal import Customer, RenewalSummary, RowIssue

__all__ = ["renewals_app"]

_out = Console()
_err = Console(stderr=True)

renewals_app = typer.Typer(
    help="The 90-day contract-renewal agent on the IBM Telco churn data (or a synthetic "
    "cohort of the same shape), in virtual time.",
    no_args_is_help=True,
)


def _price(spec: str, option: str) -> Price:
    from decimal import Decimal, InvalidOperation

    from seamline.budget import Price

    try:
        prompt, completion = (Decimal(part) for part in spec.split("/"))
    except (ValueError, InvalidOperation):
        raise ConfigError(
            f"{option} {spec!r}: use IN/OUT, money per million prompt and completion tokens, "
            "e.g. 0.15/0.60"
        ) from None
    if prompt < 0 or completion < 0:
        raise ConfigError(f"{option} {spec!r}: prices cannot be negative")
    return Price(prompt, completion)


def _model(spec: str, base_url: str | None, seed: int, clock: VirtualClock) -> tuple[Model, str]:
    from seamline.workloads.renewal._offer import SimulatedRenewalModel

    if spec.startswith("sim:"):
        model = SimulatedRenewalModel(spec[4:], seed=seed, clock=clock)
        return model, f"SIMULATED model {spec} (seeded, seed {seed})"
    if spec.startswith("openai:"):
        return openai_model(spec[7:], base_url), f"real model {spec[7:]} at {base_url}"
    raise ConfigError(
        f"--model {spec!r}: use sim:PROFILE (e.g. sim:typical-v1) or openai:MODEL with --base-url"
    )


PriceOption = Annotated[
    str | None,
    typer.Option(
        help="What a real model costs: IN/OUT, money per million prompt and completion "
        "tokens (e.g. 0.15/0.60). Without it a real model's cost is counted as 0, with a "
        "warning. Simulated models have a built-in illustrative price."
    ),
]


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
    price: PriceOption = None,
    fallback_model: Annotated[
        str | None,
        typer.Option(
            help="A cheaper model to switch to at 80% of a contract's budget (openai:MODEL, at "
            "--base-url). Without it a real model hands the contract to a person at 80%; a "
            "simulated one switches to sim:reliable-v1."
        ),
    ] = None,
    fallback_price: Annotated[
        str | None, typer.Option(help="IN/OUT price of --fallback-model (default 0).")
    ] = None,
    budget_tokens: Annotated[
        int, typer.Option(min=1, help="Each contract's model budget, in tokens.")
    ] = 12_000,
    report: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path(
        "reports/renewals.html"
    ),
) -> None:
    """Run every customer through the 90-day renewal window and report.

    Interrupt it (Ctrl-C, or kill the process) and run the same command again: it resumes
    where it stopped, with no offer sent twice, and ends with the same summary. Exits 1 when
    some contracts end outside a final state.
    """
    with command_errors(resumable=True):
        _run(
            _Options(
                data,
                store,
                limit,
                seed,
                model,
                base_url,
                price,
                fallback_model,
                fallback_price,
                budget_tokens,
                report,
            )
        )


@dataclass(frozen=True)
class _Options:
    data: Path | None
    store_url: str
    limit: int | None
    seed: int
    model_spec: str
    base_url: str | None
    price: str | None
    fallback_model: str | None
    fallback_price: str | None
    budget_tokens: int
    report_path: Path


def _cohort(o: _Options) -> tuple[Sequence[Customer], list[str], dict[str, object], list[RowIssue]]:
    from seamline.workloads.renewal._data import load_customers, synthetic_cohort

    if o.data is None:
        customers = synthetic_cohort(o.limit or 7043, seed=o.seed)
        _out.print(
            f"[yellow]data: SYNTHETIC cohort of {len(customers):,} customers (seed "
            f"{o.seed}); pass --data PATH for the real Telco file[/]"
        )
        note = f"Data: a SYNTHETIC cohort of {len(customers):,} customers (seed {o.seed})."
        return customers, [note], {"synthetic": len(customers)}, []
    loaded = load_customers(o.data)
    customers = loaded.customers[: o.limit] if o.limit is not None else loaded.customers
    repaired = sum(i.action == "repaired" for i in loaded.issues)
    skipped = sum(i.action == "skipped" for i in loaded.issues)
    _out.print(
        f"data: {o.data} ({loaded.rows_read:,} rows; {repaired} repaired, {skipped} skipped)"
    )
    for issue in loaded.issues[:5]:
        _out.print(
            f"  line {issue.line} {issue.customer_id or ''}: {issue.action} "
            f"({issue.rule}) {escape(issue.problem)}"
        )
    if len(loaded.issues) > 5:
        _out.print(f"  … and {len(loaded.issues) - 5} more, all listed in the report")
    note = (
        f"Data: {o.data}: {loaded.rows_read:,} rows, {repaired} repaired and "
        f"{skipped} skipped by declared rules (each listed below)."
    )
    source = {"data": str(o.data.resolve()), "limit": len(customers)}
    return customers, [note], source, list(loaded.issues)


def _run(o: _Options) -> None:
    from seamline.budget import PriceTable
    from seamline.clock import VirtualClock
    from seamline.telemetry import configure_tracing, shutdown_tracing
    from seamline.workloads.renewal._job import CAMPAIGN_START, JobProgress, run_renewals
    from seamline.workloads.renewal._report import write_report

    customers, notes, source, issues = _cohort(o)
    clock = VirtualClock(CAMPAIGN_START)
    model, label = _model(o.model_spec, o.base_url, o.seed, clock)
    prices = PriceTable()
    name = o.model_spec.split(":", 1)[1]
    if o.model_spec.startswith("openai:"):
        if o.price is None:
            _out.print(
                f"[yellow]warning: no --price for {o.model_spec}: its cost is counted as 0 "
                "(pass --price IN/OUT, money per million tokens)[/]"
            )
        prices = prices.with_price(name, _price(o.price or "0/0", "--price"))
    elif o.price is not None:
        raise ConfigError("--price is for a real model (openai:…); simulated models are priced")
    fallback = None
    if o.fallback_model is not None:
        fallback, _ = _model(o.fallback_model, o.base_url, o.seed, clock)
        if o.fallback_model.startswith("openai:"):
            spec = o.fallback_price or "0/0"
            fallback_price = _price(spec, "--fallback-price")
            prices = prices.with_price(o.fallback_model[7:], fallback_price)
    _out.print(
        f"[yellow]{label}; customers' answers, approvers and support notes are "
        "SIMULATED (seeded)[/]"
        if o.model_spec.startswith("sim:")
        else f"{label}; customers' answers, approvers and support notes are SIMULATED"
    )
    notes.append(
        f"Model: {label}. Customers' answers, approvers and support notes are simulated and seeded."
    )
    if o.fallback_model is not None:
        route = f"switch to {o.fallback_model}"
    elif o.model_spec.startswith("sim:"):
        route = "switch to the SIMULATED sim:reliable-v1"
    else:
        route = "hand the contract to a person"
    budget = f"budget: {o.budget_tokens:,} tokens per contract; at 80% of it, {route}"
    _out.print(budget)
    notes.append(budget[0].upper() + budget[1:] + ".")
    _out.print(f"store: {parse_store_url(o.store_url).display}")

    async def go() -> RenewalSummary:
        st = open_store(o.store_url, clock=clock)
        configure_tracing(st)  # every run's trace is kept: 'seamline runs show ID'
        try:
            with progress(_out) as bar:
                days = bar.add_task("campaign days (virtual)", total=None)
                closed = bar.add_task("renewal windows closed", total=len(customers))

                def moved(p: JobProgress) -> None:
                    bar.update(days, total=p.days, completed=p.day)
                    bar.update(closed, completed=p.closed)

                return await run_renewals(
                    st,
                    customers,
                    seed=o.seed,
                    clock=clock,
                    model=model,
                    fallback=fallback,
                    prices=prices,
                    budget_tokens=o.budget_tokens,
                    source=source,
                    on_progress=moved,
                )
        finally:
            await shutdown_tracing(st)
            await st.close()

    summary = asyncio.run(go())
    _print_summary(summary, simulated=o.model_spec.startswith("sim:"))
    path = write_report(
        summary,
        o.report_path,
        title=f"Renewal job {summary.job}",
        notes=notes,
        issues=issues,
    )
    _out.print(f"report: {path}")
    if summary.unfinished:
        _refuse_unfinished(summary)


def _print_summary(summary: RenewalSummary, *, simulated: bool) -> None:
    from seamline.workloads.renewal._agent import TERMINAL

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
    granted = summary.discounts_granted
    for name, value in (
        ("offers committed (boundary)", f"{summary.commits:,}"),
        ("offers sent", f"{summary.offers_sent:,}"),
        ("discounts granted (mean)", f"{granted:,} ({summary.mean_discount:.1%})"),
        ("escalations to a person", f"{summary.escalations:,}"),
        ("re-assessed after a world change or a gate denial", f"{summary.reassessed:,}"),
        ("offers flagged for review (above a warning line)", f"{summary.review_flagged:,}"),
        ("of which sampled for human review", f"{len(summary.reviews):,}"),
        ("budget fallbacks at 80%", _routes(summary)),
        ("hallucinated discounts routed to a person", f"{summary.hallucinations_escalated:,}"),
        ("injection attempts blocked", f"{summary.injection_blocked:,}"),
        ("retention cases (saga)", _retention(summary)),
        ("outreach steps throttled", f"{summary.throttled:,}"),
        ("tokens", f"{summary.prompt_tokens + summary.completion_tokens:,}"),
        ("simulated cost" if simulated else "model cost", f"{summary.cost:.4f}"),
        ("wall time", f"{summary.wall_seconds:.1f} s"),
    ):
        facts.add_row(name, value)
    if summary.charged_tokens != summary.prompt_tokens + summary.completion_tokens:
        facts.add_row(
            "charged by the budget ledger (incl. calls an interruption cut off)",
            f"{summary.charged_tokens:,} tokens, {summary.charged_cost:.4f}",
        )
    for reason, n in summary.reassess_reasons.most_common():
        facts.add_row(f"re-assessed: {reason}", f"{n:,}")
    for rule, n in summary.gate_denials.most_common():
        facts.add_row(f"gate denials: {rule}", f"{n:,}")
    for reason, n in summary.rejects.most_common(8):
        facts.add_row(f"rejects: {reason}", f"{n:,}")
    _out.print(facts)


def _routes(summary: RenewalSummary) -> str:
    if not summary.fallbacks:
        return "0"
    return ", ".join(f"{n:,} {route}" for route, n in sorted(summary.fallbacks.items()))


def _retention(summary: RenewalSummary) -> str:
    if not summary.retention:
        return "0"
    return ", ".join(f"{n:,} {kind}" for kind, n in sorted(summary.retention.items()))


def _refuse_unfinished(summary: RenewalSummary) -> None:
    stuck = ", ".join(f"{state} {n:,}" for state, n in summary.unfinished.most_common())
    n = sum(summary.unfinished.values())
    _err.print(
        f"[bold red]error:[/] {n:,} of {summary.customers:,} contracts ended outside a final "
        f"state ({escape(stuck)})."
    )
    for error, count in summary.step_failures.most_common(3):
        _err.print(f"  step failed {count:,} time(s): {escape(error)}")
    _err.print(
        "  Their steps failed, were retried and then parked for a person ('seamline approvals "
        "list --store URL' shows each with its error). Fix the cause and run the same command "
        "again: parked contracts are re-entered where they stopped."
    )
    raise typer.Exit(1)


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
