"""The reliability decomposition: mu and sigma recovered from known series, the fit on a
recorded renewal run, the simulation's monotonicity, and the command."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from seamline._cli_reliability import reliability
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.method._reliability import (
    COMPOSITIONS,
    SIGMAS,
    chi2_quantile,
    daily_series,
    fit_drift,
    recorded_series,
    renewal_jobs,
    simulate,
    synthetic_series,
)
from seamline.store import open_store
from seamline.workloads.renewal import CAMPAIGN_START, run_renewals, synthetic_cohort


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small renewal cohort run to the end in virtual time; returns the store URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('reliability')}/r.db"

    async def go() -> None:
        clock = VirtualClock(CAMPAIGN_START)
        store = open_store(url, clock=clock)
        try:
            await run_renewals(store, synthetic_cohort(40, seed=11), seed=7, clock=clock)
        finally:
            await store.close()

    asyncio.run(go())
    return url


@pytest.mark.parametrize(("mu", "sigma"), [(0.8, 1.5), (0.1, 0.4), (2.0, 3.0)])
def test_mu_and_sigma_fall_inside_their_intervals_on_most_seeds(mu: float, sigma: float) -> None:
    """On 20 seeded series with known mu and sigma, the 95% intervals cover the truth on at
    least 16 of them (19 expected)."""
    fits = [fit_drift(synthetic_series(mu, sigma, steps=400, seed=s)) for s in range(20)]
    mu_hits = sum(f.mu_ci[0] <= mu <= f.mu_ci[1] for f in fits)
    sigma_hits = sum(f.sigma_ci[0] <= sigma <= f.sigma_ci[1] for f in fits)
    assert mu_hits >= 16, mu_hits
    assert sigma_hits >= 16, sigma_hits
    assert all(f.windows == 400 for f in fits)


def test_the_95_percent_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    """Over 400 seeded series with known mu and sigma, each interval covers the truth on 90%
    to 99% of them: not too narrow (misses) and not too wide (a vacuous interval covers
    always)."""
    mu, sigma, n = 0.8, 1.5, 400
    fits = [fit_drift(synthetic_series(mu, sigma, steps=200, seed=1000 + s)) for s in range(n)]
    mu_cover = sum(f.mu_ci[0] <= mu <= f.mu_ci[1] for f in fits) / n
    sigma_cover = sum(f.sigma_ci[0] <= sigma <= f.sigma_ci[1] for f in fits) / n
    assert 0.90 <= mu_cover <= 0.99, mu_cover
    assert 0.90 <= sigma_cover <= 0.99, sigma_cover


def test_window_length_scales_the_estimates() -> None:
    """Sampling the same process every 5 days still estimates mu per day and sigma per
    sqrt(day)."""
    series = synthetic_series(0.5, 1.0, steps=2000, seed=3)
    fit = fit_drift(series[::5], dt=5.0)
    assert fit.windows == 400
    assert fit.mu_ci[0] <= 0.5 <= fit.mu_ci[1]
    assert fit.sigma_ci[0] <= 1.0 <= fit.sigma_ci[1]


def test_chi_square_quantiles_match_the_tables() -> None:
    """The Wilson-Hilferty quantiles are within 1% of tabulated chi-square values."""
    for p, df, table in [(0.975, 10, 20.483), (0.025, 10, 3.247), (0.975, 100, 129.561)]:
        assert chi2_quantile(p, df) == pytest.approx(table, rel=0.01)
    with pytest.raises(ConfigError, match="df >= 1"):
        chi2_quantile(0.5, 0)


def test_a_fit_needs_two_increments() -> None:
    """Too short a series is a ConfigError that says how many points there were."""
    with pytest.raises(ConfigError, match="got 2"):
        fit_drift([0.0, 1.0])
    with pytest.raises(ConfigError, match="positive"):
        fit_drift([0.0, 1.0, 2.0], dt=0)


def test_daily_series_is_cumulative_per_day() -> None:
    """Instants are counted on their day, cumulatively, after y=0 at the start."""
    times = [CAMPAIGN_START + timedelta(hours=h) for h in (1, 30, 30, 70)]
    assert daily_series(times, start=CAMPAIGN_START, days=4) == [0.0, 1.0, 3.0, 4.0, 4.0]


def test_the_fit_on_a_recorded_renewal_run_is_finite(recorded: str) -> None:
    """A real (small, simulated-model) renewal run gives a series of the campaign's length
    with rejects in it, finite estimates and intervals, a drift equal to its mean daily count
    of incorrect outcomes, and an interval that tells that drift from zero."""

    async def go() -> tuple[list[float], int]:
        store = open_store(recorded)
        try:
            (job,) = await renewal_jobs(store)
            return await recorded_series(store, job, start=CAMPAIGN_START)
        finally:
            await store.close()

    series, count = asyncio.run(go())
    assert count > 0
    assert series[-1] == count
    assert len(series) > 90
    fit = fit_drift(series)
    values = [fit.mu, fit.sigma, *fit.mu_ci, *fit.sigma_ci]
    assert all(math.isfinite(v) for v in values)
    assert fit.mu == pytest.approx(count / (len(series) - 1))
    assert fit.mu_ci[0] > 0


def test_simulated_reliability_moves_the_expected_ways() -> None:
    """More drift is never more reliable; as sigma falls, reliability rises for compositions
    whose drift stays under budget and falls for those whose drift exceeds it."""
    horizon, budget = 90, 30.0
    cells = simulate(horizon=horizon, budget=budget, paths=600, seed=1)
    grid = {(c.composition, c.sigma_level): c for c in cells}
    for level, _ in SIGMAS:
        ordered = [grid[comp.name, level].reliability for comp in COMPOSITIONS]
        assert ordered == sorted(ordered), (level, ordered)  # mu falls along COMPOSITIONS
    for comp in COMPOSITIONS:
        by_sigma = [grid[comp.name, level].reliability for level, _ in SIGMAS]  # high -> low
        if comp.mu(1.0) * horizon < budget:
            assert by_sigma == sorted(by_sigma), (comp.name, by_sigma)
        else:
            assert by_sigma == sorted(by_sigma, reverse=True), (comp.name, by_sigma)
    assert all(0.0 <= c.reliability <= 1.0 for c in cells)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("reliability")(reliability)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the group
        """Nothing."""

    return app


def test_the_command_fits_a_recorded_run_and_plots(recorded: str, tmp_path: Path) -> None:
    """`reliability` prints mu and sigma with intervals and writes the PNG."""
    png = tmp_path / "fit.png"
    result = CliRunner().invoke(_app(), ["reliability", "--store", recorded, "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "mu (per day)" in result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_command_simulates_and_plots(tmp_path: Path) -> None:
    """`reliability --simulate` prints one row per composition and writes the PNG."""
    png = tmp_path / "sim.png"
    args = ["reliability", "--simulate", "--paths", "200", "--plot", str(png)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    for comp in COMPOSITIONS:
        assert comp.name in result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_command_says_when_there_is_no_run(tmp_path: Path) -> None:
    """An empty store is an error (exit 2) that says to run the renewals first."""
    url = f"sqlite:///{tmp_path}/empty.db"
    result = CliRunner().invoke(_app(), ["reliability", "--store", url])
    assert result.exit_code == 2
    assert "renewals run" in result.output
