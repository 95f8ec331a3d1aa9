"""``seamline reliability`` and ``seamline eval``: the reliability decomposition and pass^k
with the spine ablation. Both print a table and write a PNG."""

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

__all__ = ["evaluate", "reliability"]

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


def evaluate(
    data: Annotated[
        Path | None,
        typer.Option(help="The Telco churn CSV; without it a seeded synthetic cohort."),
    ] = None,
    scenarios: Annotated[int, typer.Option(min=1, help="How many scenarios (customers).")] = 200,
    k: Annotated[int, typer.Option(min=1, help="k in pass^k.")] = 4,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Trials per scenario (>= k; default k).")
    ] = None,
    resamples: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 2000,
    seed: SeedOption = 7,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG.")] = Path("reports/eval.png"),
) -> None:
    """pass^k of the renewal decision under a P3 and a P5 spine, across two simulated model
    versions, with bootstrap intervals on the changes."""
    with command_errors():
        _evaluate(data, scenarios, k, trials or k, resamples, seed, plot)


def _evaluate(
    data: Path | None, n: int, k: int, trials: int, resamples: int, seed: int, plot: Path
) -> None:
    from seamline.method._eval import bootstrap_delta, pass_hat_k, run_ablation, scenarios_from
    from seamline.workloads.renewal import load_customers, synthetic_cohort

    if trials < k:
        raise ConfigError(f"--trials {trials} is below k={k}; pass^k needs at least k trials")
    if data is not None:
        customers = load_customers(data).customers
        _out.print(f"data: {data}")
    else:
        customers = synthetic_cohort(n, seed=seed)
        _out.print(f"[yellow]data: SYNTHETIC cohort of {n} customers (seed {seed})[/]")
    cases = scenarios_from(customers, limit=n)
    _out.print(
        f"[yellow]SIMULATED decision task and model versions; {len(cases)} scenarios x "
        f"{trials} trials (model seeds {seed}..{seed + trials - 1})[/]"
    )
    results = run_ablation(cases, trials=trials, seed=seed)
    by = {r.config: r for r in results}
    table = Table(title=f"pass^k (k={k})", title_justify="left")
    for col in ("config", "pass^1", f"pass^{k}"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for r in results:
        table.add_row(
            r.config, f"{pass_hat_k(r.results, 1):.3f}", f"{pass_hat_k(r.results, k):.3f}"
        )
    _out.print(table)
    deltas = Table(title=f"change in pass^{k} (paired bootstrap, 95%)", title_justify="left")
    for col in ("change", "delta", "95% CI"):
        deltas.add_column(col, justify="left" if col == "change" else "right")
    pairs = [
        ("P3 / typical-v1", "P5 / typical-v1"),
        ("P3 / typical-v2", "P5 / typical-v2"),
        ("P3 / typical-v1", "P3 / typical-v2"),
        ("P5 / typical-v1", "P5 / typical-v2"),
    ]
    cis = []
    for a, b in pairs:
        d = bootstrap_delta(by[a].results, by[b].results, k, resamples=resamples, seed=seed)
        cis.append((f"{b} - {a}", d))
        deltas.add_row(f"{b}  minus  {a}", f"{d.delta:+.3f}", _ci(d.low, d.high))
    _out.print(deltas)
    plt = _pyplot()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    try:
        names = [r.config for r in results]
        xs = list(range(len(names)))
        left.bar([x - 0.2 for x in xs], [pass_hat_k(r.results, 1) for r in results], 0.4)
        left.bar([x + 0.2 for x in xs], [pass_hat_k(r.results, k) for r in results], 0.4)
        left.set_xticks(xs, names, fontsize=7)
        left.legend(["pass^1", f"pass^{k}"])
        left.set_ylim(0, 1)
        left.set_title("pass^k by configuration")
        ys = list(range(len(cis)))
        right.errorbar(
            [d.delta for _, d in cis],
            ys,
            xerr=[[d.delta - d.low for _, d in cis], [d.high - d.delta for _, d in cis]],
            fmt="o",
        )
        right.axvline(0, color="grey", lw=0.8)
        right.set_yticks(ys, [name for name, _ in cis], fontsize=7)
        right.set_title(f"change in pass^{k}, 95% CI")
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
