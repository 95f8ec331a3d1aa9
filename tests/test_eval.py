"""pass^k and its bootstrap interval on hand-computable inputs, the P3-vs-P5 spine
ablation end to end, and the command."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from seamline._cli_reliability import evaluate
from seamline.errors import ConfigError
from seamline.method._eval import (
    MODEL_VERSIONS,
    bootstrap_delta,
    pass_hat_k,
    run_ablation,
    scenarios_from,
)
from seamline.workloads.renewal import synthetic_cohort

RESULTS = {
    "a": [True, True, True, True],
    "b": [True, False, True, True],
    "c": [False, False, False, False],
}


def test_pass_hat_k_by_hand() -> None:
    """C(c,k)/C(n,k) averaged: k=1 is the mean success rate; k=2 gives b 3/6; k=n needs
    every trial."""
    assert pass_hat_k(RESULTS, 1) == pytest.approx((1 + 0.75 + 0) / 3)
    assert pass_hat_k(RESULTS, 2) == pytest.approx((1 + 0.5 + 0) / 3)
    assert pass_hat_k(RESULTS, 3) == pytest.approx((1 + 0.25 + 0) / 3)
    assert pass_hat_k(RESULTS, 4) == pytest.approx(1 / 3)


def test_pass_hat_k_refuses_what_it_cannot_estimate() -> None:
    """Fewer trials than k, k below 1, or no scenarios are ConfigErrors with the numbers."""
    with pytest.raises(ConfigError, match="has 4 trials; pass\\^5"):
        pass_hat_k(RESULTS, 5)
    with pytest.raises(ConfigError, match="at least 1"):
        pass_hat_k(RESULTS, 0)
    with pytest.raises(ConfigError, match="none"):
        pass_hat_k({}, 1)


def test_bootstrap_of_a_constant_change_is_that_change() -> None:
    """When every scenario changes by the same amount, the interval is that point."""
    a = {s: [False, False] for s in "xyz"}
    b = {s: [True, True] for s in "xyz"}
    d = bootstrap_delta(a, b, 2, resamples=200)
    assert (d.delta, d.low, d.high) == (1.0, 1.0, 1.0)
    back = bootstrap_delta(b, a, 1, resamples=200)
    assert (back.delta, back.low, back.high) == (-1.0, -1.0, -1.0)


def test_bootstrap_of_two_scenarios_by_hand() -> None:
    """Differences (0, 1): resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4, so the
    95% interval is [0, 1] around 0.5."""
    a = {"x": [True], "y": [False]}
    b = {"x": [True], "y": [True]}
    d = bootstrap_delta(a, b, 1, resamples=4000, seed=3)
    assert (d.delta, d.low, d.high) == (0.5, 0.0, 1.0)


def test_bootstrap_needs_the_same_scenarios() -> None:
    """The comparison is paired: the two configurations must cover the same scenarios."""
    with pytest.raises(ConfigError, match="share their scenarios"):
        bootstrap_delta({"x": [True]}, {"y": [True]}, 1)


def test_scenarios_follow_the_telco_rows() -> None:
    """Month-to-month contracts are at risk (goal: an in-policy offer); seniors get the
    higher cap."""
    customers = synthetic_cohort(60, seed=5)
    cases = scenarios_from(customers)
    assert len(cases) == 60
    for c, s in zip(customers, cases, strict=True):
        assert s.id == c.customer_id
        if c.contract == "Month-to-month":
            assert s.goal == "offer_ready"
        assert s.cap == (Decimal("0.35") if c.senior_citizen else Decimal("0.30"))
        assert 0.0 <= s.difficulty <= 1.0


def test_the_ablation_runs_end_to_end() -> None:
    """Both spines under both model versions on a few scenarios: values in [0, 1], pass^k
    no higher than pass^1, and the same seed gives the same trials."""
    cases = scenarios_from(synthetic_cohort(12, seed=2))
    results = run_ablation(cases, trials=3, seed=4)
    assert [r.config for r in results] == [
        f"{spine} / {v}" for v in MODEL_VERSIONS for spine in ("P3", "P5")
    ]
    for r in results:
        assert 0.0 <= pass_hat_k(r.results, 3) <= pass_hat_k(r.results, 1) <= 1.0
    again = run_ablation(cases, trials=3, seed=4)
    assert [r.results for r in again] == [r.results for r in results]


def test_under_the_assumed_rates_the_p5_spine_holds_up_better() -> None:
    """With the documented error rates, the P5 spine's pass^4 beats P3's for both versions:
    the transition table catches skipped steps that schema and policy let through."""
    cases = scenarios_from(synthetic_cohort(150, seed=9))
    by = {r.config: r.results for r in run_ablation(cases, trials=4, seed=0)}
    for v in MODEL_VERSIONS:
        d = bootstrap_delta(by[f"P3 / {v}"], by[f"P5 / {v}"], 4, resamples=500)
        assert d.low > 0, (v, d)


def test_run_ablation_refuses_unknown_versions() -> None:
    """An unknown model version is a ConfigError naming the known ones."""
    cases = scenarios_from(synthetic_cohort(2, seed=2))
    with pytest.raises(ConfigError, match="typical-v1"):
        run_ablation(cases, trials=1, versions=["typical-v9"])


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(evaluate)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the group
        """Nothing."""

    return app


def test_the_command_prints_the_table_and_plots(tmp_path: Path) -> None:
    """`eval` prints pass^1, pass^k and the changes with intervals, and writes the PNG."""
    png = tmp_path / "eval.png"
    args = ["eval", "--scenarios", "20", "--k", "2", "--resamples", "100", "--plot", str(png)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "P5 / typical-v2" in result.output
    assert "pass^2" in result.output
    assert "SIMULATED" in result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_command_refuses_fewer_trials_than_k() -> None:
    """--trials below --k exits 2 with the numbers."""
    result = CliRunner().invoke(_app(), ["eval", "--k", "3", "--trials", "2"])
    assert result.exit_code == 2
    assert "--trials 2 is below k=3" in result.output
