"""``seamline reliability``: the reliability decomposition fitted to a recorded renewal run, or
simulated over pattern compositions. Prints a table and writes a PNG. (``seamline eval`` is
in ``_cli_eval``.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption, command_errors, open_existing_store
from seamline.errors import ConfigError
from seamline.store import DEFAULT_STORE_URL, parse_store_url

__all__ = ["reliability"]

_out = Console()


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.3f}, {hi:.3f}]"


def reliability(
    store: StoreOption = DEFAULT_STORE_URL,
    job: Annotated[
        str | None,
        typer.Option(help="Renewal job id; without it, the only (or last) job in the store."),
    ] = None,
    window: Annotated[
        int, typer.Option(min=1, help="Window length dt in days for the increments.")
    ] = 1,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Monte Carlo over pattern compositions and model-variance levels instead.",
        ),
    ] = False,
    budget: Annotated[
        float, typer.Option(min=0, help="--simulate: error budget y(T) must stay under.")
    ] = 30.0,
    horizon: Annotated[int, typer.Option(min=1, help="--simulate: horizon T in days.")] = 90,
    paths: Annotated[int, typer.Option(min=1, help="--simulate: Monte Carlo paths.")] = 2000,
    seed: SeedOption = 7,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG.")] = Path(
        "reports/reliability.png"
    ),
) -> None:
    """Estimate y(t) = mu*t + sigma*xi(t) from a recorded renewal run, or simulate how
    long-run reliability depends on the drift mu as the model variance sigma falls."""
    with command_errors():
        if simulate:
            _simulate(budget, horizon, paths, seed, plot)
        else:
            _fit(store, job, window, plot)


def _fit(store_url: str, job: str | None, window: int, plot: Path) -> None:
    from seamline.method._reliability import fit_drift, recorded_series, renewal_jobs
    from seamline.workloads.renewal import CAMPAIGN_START

    async def go() -> tuple[str, list[float], int]:
        st = open_existing_store(store_url)
        try:
            chosen = job
            if chosen is None:
                jobs = await renewal_jobs(st)
                if not jobs:
                    raise ConfigError(
                        f"no renewal job in {parse_store_url(store_url).display}; "
                        "run `seamline renewals run` first or pass --store"
                    )
                chosen = jobs[-1]
            series, count = await recorded_series(st, chosen, start=CAMPAIGN_START)
            return chosen, series, count
        finally:
            await st.close()

    chosen, daily, count = asyncio.run(go())
    series = daily[::window]
    fit = fit_drift(series, dt=float(window))
    _out.print(f"store: {parse_store_url(store_url).display}; job {chosen}")
    _out.print(
        "y(t) = cumulative incorrect outcomes (boundary rejects + committed offers later "
        f"reversed) by campaign day; {count:,} over {len(daily) - 1} days; "
        f"windows of {window} day(s)"
    )
    table = Table(title="reliability fit (95% intervals)", title_justify="left")
    for col in ("parameter", "estimate", "95% CI", "method"):
        table.add_column(col)
    table.add_row("mu (per day)", f"{fit.mu:.3f}", _ci(*fit.mu_ci), "normal approximation")
    table.add_row(
        "sigma (per sqrt(day))", f"{fit.sigma:.3f}", _ci(*fit.sigma_ci), "chi-square (W-H)"
    )
    table.add_row("windows", f"{fit.windows}", "", "")
    _out.print(table)
    _plot_fit(daily, fit.mu, plot)
    _out.print(f"plot: {plot}")


def _plot_fit(daily: list[float], mu: float, path: Path) -> None:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    try:
        days = list(range(len(daily)))
        ax.step(days, daily, where="post", label="y(t) recorded")
        ax.plot(days, [mu * d for d in days], "--", label=f"fitted mu*t (mu={mu:.2f}/day)")
        ax.set_xlabel("campaign day")
        ax.set_ylabel("cumulative incorrect outcomes")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _simulate(budget: float, horizon: int, paths: int, seed: int, plot: Path) -> None:
    from seamline.method._reliability import COMPOSITIONS, SIGMAS, simulate

    cells = simulate(horizon=horizon, budget=budget, paths=paths, seed=seed)
    _out.print(
        f"[yellow]SIMULATED: y(t) = mu*t + sigma*W(t), {paths:,} paths, T = {horizon} days, "
        f"budget {budget:g}; mu = 1.0 x (1 - catch share), catch shares illustrative[/]"
    )
    table = Table(title="P(y stays within budget up to T)", title_justify="left")
    table.add_column("composition")
    table.add_column("mu/day", justify="right")
    for level, sigma in SIGMAS:
        table.add_column(f"sigma {level} ({sigma:g})", justify="right")
    for comp in COMPOSITIONS:
        row = [c for c in cells if c.composition == comp.name]
        table.add_row(comp.name, f"{row[0].mu:.2f}", *(f"{c.reliability:.3f}" for c in row))
    _out.print(table)
    plt = _pyplot()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    try:
        xs = [s for _, s in SIGMAS]
        for comp in COMPOSITIONS:
            ys = [c.reliability for c in cells if c.composition == comp.name]
            ax.plot(xs, ys, "o-", label=f"{comp.name} (mu={comp.mu(1.0):.2f})")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("model variance sigma (falling to the right)")
        ax.set_ylabel(f"P(y(t) <= {budget:g} for t <= {horizon})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot)
    finally:
        plt.close(fig)
    _out.print(f"plot: {plot}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files, never a window
    import matplotlib.pyplot as plt

    return plt
