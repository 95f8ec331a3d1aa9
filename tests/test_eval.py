"""pass^k and its bootstrap interval on hand-computable inputs, the P3-vs-P5 spine
ablation end to end, and the command."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from seamline._cli_eval import evaluate
from seamline.errors import ConfigError
from seamline.method._ablation import (
    DECIDER_VERSIONS,
    AblationResult,
    Decider,
    DeciderVersion,
    real_decider,
    run_ablation,
    simulated_decider,
)
from seamline.method._eval import Scenario, bootstrap_delta, pass_hat_k, scenarios_from
from seamline.models import OpenAIChatModel
from seamline.models._simulated import SimProfile
from seamline.store import open_store
from seamline.workloads.renewal import synthetic_cohort
from tests._chat_server import Ok, ok, serve

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


def _ablation(
    cases: list[Scenario], deciders: list[Decider], *, trials: int, seed: int = 0
) -> list[AblationResult]:
    async def go() -> list[AblationResult]:
        store = open_store("sqlite:///:memory:")
        try:
            return await run_ablation(
                cases, deciders=deciders, store=store, trials=trials, seed=seed
            )
        finally:
            await store.close()

    return asyncio.run(go())


SIMULATED = [simulated_decider("typical-v1"), simulated_decider("typical-v2")]


def test_the_ablation_runs_end_to_end() -> None:
    """Both spines under both simulated versions on a few scenarios: values in [0, 1], pass^k
    no higher than pass^1, and the same seed gives the same trials."""
    cases = scenarios_from(synthetic_cohort(12, seed=2))
    results = _ablation(cases, SIMULATED, trials=3, seed=4)
    assert [r.config for r in results] == [
        f"{spine} / {v}" for v in DECIDER_VERSIONS for spine in ("P3", "P5")
    ]
    for r in results:
        assert r.simulated
        assert 0.0 <= pass_hat_k(r.results, 3) <= pass_hat_k(r.results, 1) <= 1.0
    again = _ablation(cases, SIMULATED, trials=3, seed=4)
    assert [r.results for r in again] == [r.results for r in results]


def test_only_the_transition_table_catches_a_skipped_step() -> None:
    """A decider that always names a step it should not take: under P3 the schema-valid event
    is committed and every trial misses the goal; under P5 the table rejects the move, the
    reject is fed back, and the decider (heeding it fully) commits the goal."""
    skipper = DeciderVersion(
        "skipper", SimProfile("exact", "v1"), 0.0, skip_step=1.0, bad_choice=1.0, feedback=0.0
    )
    # The skip rate is scaled by 0.5 + difficulty: from difficulty 0.5 on, it is certain.
    cases = [s for s in scenarios_from(synthetic_cohort(60, seed=3)) if s.difficulty >= 0.5]
    assert len(cases) >= 5
    p3, p5 = _ablation(cases, [simulated_decider(skipper)], trials=2)
    assert pass_hat_k(p3.results, 1) == 0.0
    assert pass_hat_k(p5.results, 2) == 1.0


def test_under_the_assumed_rates_the_p5_spine_holds_up_better() -> None:
    """With the documented simulated rates the P5 spine's pass^4 beats P3's for both versions,
    with a bootstrap interval clear of zero."""
    cases = scenarios_from(synthetic_cohort(150, seed=9))
    by = {r.config: r.results for r in _ablation(cases, SIMULATED, trials=4)}
    for v in DECIDER_VERSIONS:
        d = bootstrap_delta(by[f"P3 / {v}"], by[f"P5 / {v}"], 4, resamples=500)
        assert d.low > 0, (v, d)


def test_trials_are_durable_boundary_runs_and_resume() -> None:
    """Every trial is a boundary run recorded in the store; running the same ablation again on
    that store returns the recorded commits without asking the model again."""
    cases = scenarios_from(synthetic_cohort(5, seed=1))

    async def go() -> tuple[list[AblationResult], list[AblationResult], int]:
        store = open_store("sqlite:///:memory:")
        try:
            first = await run_ablation(cases, deciders=SIMULATED[:1], store=store, trials=2)
            runs = await store.list_runs(limit=1000)
            again = await run_ablation(cases, deciders=SIMULATED[:1], store=store, trials=2)
            return first, again, len(runs)
        finally:
            await store.close()

    first, again, recorded = asyncio.run(go())
    assert recorded == len(cases) * 2 * 2
    assert [r.results for r in again] == [r.results for r in first]


def test_unknown_simulated_decider_is_refused() -> None:
    """An unknown version is a ConfigError naming the known ones."""
    with pytest.raises(ConfigError, match="typical-v1"):
        simulated_decider("typical-v9")


def _reply(obj: dict[str, object], *, model: str) -> Ok:
    return ok(json.dumps(obj), model=model)


def test_real_models_over_http_run_the_same_ablation() -> None:
    """Two real OpenAI-compatible models (a local server over real HTTP) under both spines:
    P3 commits a schema-valid skipped step; P5 rejects an illegal move and a 90% discount,
    feeds the reject back, and commits the goal on the next attempt."""
    case = Scenario(
        "7590-VHVEG",
        "Month-to-month",
        1,
        29.85,
        False,
        "offer_ready",
        Decimal("0.30"),
        "retain",
        0.5,
    )
    good_p3 = {"type": "offer_prepared", "discount": "0.10"}
    good_p5 = {
        "from": "assessing",
        "to": "offer_ready",
        "if_version": 3,
        "patch": {"discount": "0.10"},
    }
    with serve() as server:
        script = []
        for name in ("gpt-a", "gpt-b"):
            script += [
                _reply({"type": "offer_sent", "discount": "0.10"}, model=name),  # P3 t0
                _reply(good_p3, model=name),  # P3 t1
                _reply({**good_p5, "to": "offer_sent"}, model=name),  # P5 t0: illegal
                _reply(good_p5, model=name),
                _reply({**good_p5, "patch": {"discount": "0.90"}}, model=name),  # P5 t1: cap
                _reply(good_p5, model=name),
            ]
        server.script(*script)
        deciders = [
            real_decider(
                OpenAIChatModel(
                    model=name,
                    base_url=f"{server.base_url}/v1",
                    api_key="sk-test",
                    max_retries=0,
                )
            )
            for name in ("gpt-a", "gpt-b")
        ]
        results = _ablation([case], deciders, trials=2)
        sent = server.requests
    assert [(r.config, r.simulated, r.results[case.id]) for r in results] == [
        ("P3 / gpt-a", False, [False, True]),
        ("P5 / gpt-a", False, [True, True]),
        ("P3 / gpt-b", False, [False, True]),
        ("P5 / gpt-b", False, [True, True]),
    ]
    assert len(sent) == len(script)
    assert [r.body["model"] for r in sent[:6]] == ["gpt-a"] * 6
    retry = " ".join(m["content"] for m in sent[3].body["messages"])
    assert '"status":"rejected"' in retry and "illegal_transition" in retry
    capped = " ".join(m["content"] for m in sent[5].body["messages"])
    assert "discount.hard_cap" in capped
    p3_prompt = " ".join(m["content"] for m in sent[0].body["messages"])
    assert "Recent log" in p3_prompt and "assessment_started" in p3_prompt
    p5_prompt = " ".join(m["content"] for m in sent[2].body["messages"])
    assert "Allowed moves from here" in p5_prompt and "offer_ready" in p5_prompt


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


def test_the_command_refuses_a_single_model() -> None:
    """Two versions are compared: one --model alone is a usage error that says so."""
    result = CliRunner().invoke(_app(), ["eval", "--model", "sim:typical-v1"])
    assert result.exit_code == 2
    assert "given twice" in " ".join(result.output.split())


def test_the_command_refuses_fewer_trials_than_k() -> None:
    """--trials below --k exits 2 with the numbers."""
    result = CliRunner().invoke(_app(), ["eval", "--k", "3", "--trials", "2"])
    assert result.exit_code == 2
    assert "--trials 2 is below k=3" in result.output
