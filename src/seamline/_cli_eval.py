"""``seamline eval``: pass^k of the renewal decision under a P3 and a P5 spine, across two
model versions (simulated by default, real ones with ``--model openai:NAME``), with paired
bootstrap intervals on the changes. Prints two tables and writes a PNG."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from seamline._cli_common import SeedOption, command_errors, openai_model, progress
from seamline.errors import ConfigError

__all__ = ["evaluate"]

_out = Console()

DEFAULT_MODELS = ("sim:typical-v1", "sim:typical-v2")


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
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A model version to compare, given twice: sim:typical-v1 / sim:typical-v2 "
            "(simulated deciders, the default pair) or openai:NAME with --base-url.",
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint for --model openai:NAME.")
    ] = None,
    store: Annotated[
        str,
        typer.Option(
            help="Where the trials' boundary runs are recorded; an existing store with the "
            "same --run-id resumes instead of asking the models again.",
        ),
    ] = "sqlite:///:memory:",
    run_id: Annotated[str, typer.Option(help="Prefix of the trials' run ids.")] = "eval",
    resamples: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 2000,
    seed: SeedOption = 7,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG.")] = Path("reports/eval.png"),
) -> None:
    """pass^k of the renewal decision under a P3 spine (the model proposes the next event
    from the recent log) and a P5 spine (the model proposes one allowed transition), for two
    model versions, with 95% paired-bootstrap intervals on the changes in pass^k. Every
    trial is a durable boundary run (proposal, verdicts, rejects fed back, commit) recorded
    in --store.

    Example: seamline eval --scenarios 100 --k 3
    """
    with command_errors():
        specs = tuple(model or DEFAULT_MODELS)
        if len(specs) != 2 or specs[0] == specs[1]:
            raise ConfigError(
                f"--model must be given twice, two different versions; got {list(specs)}"
            )
        asyncio.run(
            _evaluate(
                data, scenarios, k, trials or k, specs, base_url, store, run_id, resamples, seed
            ),
        ).plot_to(plot)
        _out.print(f"plot: {plot}")


def _decider(spec: str, base_url: str | None) -> Any:
    from seamline.method._ablation import real_decider, simulated_decider

    if spec.startswith("sim:"):
        return simulated_decider(spec[4:])
    if spec.startswith("openai:"):
        return real_decider(openai_model(spec[7:], base_url))
    raise ConfigError(f"--model {spec!r}: use sim:VERSION (typical-v1, typical-v2) or openai:NAME")


class _Report:
    """The tables printed; what the plot needs."""

    def __init__(self, results: list[Any], cis: list[tuple[str, Any]], k: int) -> None:
        self.results, self.cis, self.k = results, cis, k

    def plot_to(self, path: Path) -> None:
        from seamline._cli_reliability import _pyplot
        from seamline.method._eval import pass_hat_k

        plt = _pyplot()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
        try:
            names = [r.config for r in self.results]
            xs = list(range(len(names)))
            left.bar([x - 0.2 for x in xs], [pass_hat_k(r.results, 1) for r in self.results], 0.4)
            left.bar(
                [x + 0.2 for x in xs], [pass_hat_k(r.results, self.k) for r in self.results], 0.4
            )
            left.set_xticks(xs, names, fontsize=7)
            left.legend(["pass^1", f"pass^{self.k}"])
            left.set_ylim(0, 1)
            left.set_title("pass^k by configuration")
            ys = list(range(len(self.cis)))
            deltas = [d for _, d in self.cis]
            right.errorbar(
                [d.delta for d in deltas],
                ys,
                xerr=[[d.delta - d.low for d in deltas], [d.high - d.delta for d in deltas]],
                fmt="o",
            )
            right.axvline(0, color="grey", lw=0.8)
            right.set_yticks(ys, [name for name, _ in self.cis], fontsize=7)
            right.set_title(f"change in pass^{self.k}, 95% CI")
            fig.tight_layout()
            fig.savefig(path)
        finally:
            plt.close(fig)


async def _evaluate(
    data: Path | None,
    n: int,
    k: int,
    trials: int,
    specs: tuple[str, ...],
    base_url: str | None,
    store_url: str,
    run_id: str,
    resamples: int,
    seed: int,
) -> _Report:
    from seamline.method._ablation import run_ablation
    from seamline.method._eval import bootstrap_delta, pass_hat_k, scenarios_from
    from seamline.store import open_store
    from seamline.workloads.renewal import load_customers, synthetic_cohort

    if trials < k:
        raise ConfigError(f"--trials {trials} is below k={k}; pass^k needs at least k trials")
    deciders = [_decider(s, base_url) for s in specs]
    if data is not None:
        customers = load_customers(data).customers
        _out.print(f"data: {data}")
    else:
        customers = synthetic_cohort(n, seed=seed)
        _out.print(f"[yellow]data: SYNTHETIC cohort of {n} customers (seed {seed})[/]")
    cases = scenarios_from(customers, limit=n)
    for d in deciders:
        what = (
            f"SIMULATED decider {d.label} (seeds {seed}..{seed + trials - 1})"
            if d.simulated
            else f"real model {d.label} at {base_url}"
        )
        _out.print(f"[yellow]{what}[/]" if d.simulated else what)
    _out.print(
        f"{len(cases)} scenarios x {trials} trials x 2 spines x 2 versions, each a durable "
        "boundary run"
    )
    total = len(cases) * trials * 2 * len(deciders)
    store = open_store(store_url)
    try:
        with progress(_out) as bar:
            task = bar.add_task("trials", total=total)
            results = await run_ablation(
                cases,
                deciders=deciders,
                store=store,
                trials=trials,
                seed=seed,
                run_prefix=run_id,
                on_trial=lambda: bar.advance(task),
            )
    finally:
        await store.close()
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
    v1, v2 = (d.label for d in deciders)
    pairs = [
        (f"P3 / {v1}", f"P5 / {v1}"),
        (f"P3 / {v2}", f"P5 / {v2}"),
        (f"P3 / {v1}", f"P3 / {v2}"),
        (f"P5 / {v1}", f"P5 / {v2}"),
    ]
    cis = []
    for a, b in pairs:
        d = bootstrap_delta(by[a].results, by[b].results, k, resamples=resamples, seed=seed)
        cis.append((f"{b} - {a}", d))
        deltas.add_row(f"{b}  minus  {a}", f"{d.delta:+.3f}", f"[{d.low:.3f}, {d.high:.3f}]")
    _out.print(deltas)
    return _Report(results, cis, k)
