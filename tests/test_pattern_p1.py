"""P1 hierarchical delegation: typed results, timeouts, one orchestrator-owned retry budget,
declared partial-result policies, a deterministic merge with provenance, bounded concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from seamline.clock import VirtualClock
from seamline.errors import ConfigError, SeamlineError
from seamline.patterns import (
    Delegated,
    Delegation,
    DelegationFailed,
    DelegationResult,
    Drop,
    FailFast,
    Failure,
    FieldConflict,
    NeedsHuman,
    Substitute,
    Success,
    Worker,
    WorkerResult,
    render_trace,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WorkerFn = Callable[[object], Awaitable[WorkerResult]]


def answers(*results: Any, delay: float = 0.0) -> tuple[WorkerFn, list[object]]:
    """A worker that gives ``results`` in turn (the last one repeats) and records its tasks."""
    calls: list[object] = []

    async def work(task: object) -> WorkerResult:
        calls.append(task)
        if delay:
            await asyncio.sleep(delay)
        return results[min(len(calls), len(results)) - 1]  # type: ignore[no-any-return]

    return work, calls


def ok(fields: Mapping[str, Any] | pydantic.BaseModel, delay: float = 0.0) -> WorkerFn:
    return answers(Success(fields), delay=delay)[0]


def down(code: str = "upstream_down", *, retryable: bool = True) -> tuple[WorkerFn, list[object]]:
    return answers(Failure(code, f"{code} (test)", retryable))


def delegation(workers: dict[str, WorkerFn], **config: Any) -> Delegation:
    """A delegation over ``workers`` in virtual time (backoff costs no real time)."""
    config.setdefault("clock", VirtualClock(T0))
    timeout = config.pop("timeout_s", 5.0)
    return Delegation(
        "test", workers=[Worker(n, fn, timeout_s=timeout) for n, fn in workers.items()], **config
    )


async def run(d: Delegation) -> DelegationResult:
    return await d.run({w.name: f"task-{w.name}" for w in d.workers})


async def delegated(d: Delegation) -> Delegated:
    result = await run(d)
    assert isinstance(result, Delegated), result
    return result


# --- typed results -----------------------------------------------------------------------


def test_results_are_frozen_values_with_a_kind_tag() -> None:
    """Success, Failure and NeedsHuman are frozen dataclasses discriminated by ``kind``."""
    failure = Failure("x", "y", False)
    results: list[WorkerResult] = [Success({"a": 1}), failure, NeedsHuman("r", "q")]
    assert [r.kind for r in results] == ["success", "failure", "needs_human"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        failure.retryable = True  # type: ignore[misc]


async def test_each_worker_receives_its_own_typed_task() -> None:
    """The orchestrator hands each worker exactly the task named for it, once."""
    a, a_calls = answers(Success({"x": 1}))
    b, b_calls = answers(Success({"y": 2}))
    d = delegation({"a": a, "b": b})
    result = await d.run({"a": ("task", 1), "b": ("task", 2)})
    assert isinstance(result, Delegated)
    assert (a_calls, b_calls) == ([("task", 1)], [("task", 2)])
    assert result.attempts_by_worker == {"a": 1, "b": 1}


async def test_tasks_must_name_every_worker_and_no_other() -> None:
    """A task set that misses a worker or names an unknown one is a ConfigError before any call."""
    a, calls = answers(Success({}))
    d = delegation({"a": a, "b": ok({})})
    with pytest.raises(ConfigError, match=r"missing \['b'\], unknown \['z'\]"):
        await d.run({"a": 1, "z": 2})
    assert calls == []


async def test_worker_that_raises_becomes_a_typed_failure() -> None:
    """An exception inside a worker never escapes: it is Failure('worker_raised'), not retried
    unless it is transient (ConnectionError, TimeoutError)."""

    async def buggy(task: object) -> WorkerResult:
        raise ValueError("bad key 'tenure'")

    flaky, flaky_calls = answers(Success({"y": 1}))

    async def outage(task: object) -> WorkerResult:
        if not flaky_calls:
            flaky_calls.append(task)
            raise ConnectionError("reset by peer")
        return await flaky(task)

    result = await delegated(delegation({"buggy": buggy, "outage": outage}, retries=3))
    assert result.results_by_worker["buggy"] == Failure(
        "worker_raised", "ValueError: bad key 'tenure'", False
    )
    assert result.attempts_by_worker == {"buggy": 1, "outage": 2}
    assert result.merged == {"y": 1}


@pytest.mark.parametrize(
    "garbage",
    [42, None, Success(42), Success({1: "x"}), Failure("x", "y", "yes"), {"x": 1}],  # type: ignore[arg-type]
    ids=["int", "none", "success-int", "non-str-keys", "bad-retryable", "bare-dict"],
)
async def test_worker_returning_garbage_becomes_invalid_result(garbage: object) -> None:
    """Anything but a well-formed Success/Failure/NeedsHuman is Failure('invalid_result'),
    not retryable, so it spends no retry budget."""
    bad, calls = answers(garbage)
    result = await delegated(delegation({"bad": bad, "good": ok({"x": 1})}, retries=5))
    failure = result.results_by_worker["bad"]
    assert isinstance(failure, Failure)
    assert (failure.reason_code, failure.retryable) == ("invalid_result", False)
    assert len(calls) == 1
    assert result.retries_used == 0
    assert result.dropped == ("bad",)


class Usage(pydantic.BaseModel):
    tenure_months: int
    streaming: bool = False


async def test_declared_output_model_validates_the_success_value() -> None:
    """A worker's ``output`` model turns a matching dict into the model and a mismatch into a
    typed invalid_result that names the field."""
    good = Worker("good", answers(Success({"tenure_months": 3}))[0], output=Usage)
    bad = Worker("bad", answers(Success({"tenure_months": "three"}))[0], output=Usage)
    d = Delegation("t", workers=[good, bad], clock=VirtualClock(T0))
    result = await d.run({"good": None, "bad": None})
    assert isinstance(result, Delegated)
    assert result.results_by_worker["good"] == Success(Usage(tenure_months=3))
    assert result.merged == {"tenure_months": 3, "streaming": False}
    failure = result.results_by_worker["bad"]
    assert isinstance(failure, Failure) and failure.reason_code == "invalid_result"
    assert "tenure_months" in failure.message and "Usage" in failure.message


# --- timeouts ----------------------------------------------------------------------------


async def test_slow_worker_times_out_as_a_retryable_failure() -> None:
    """A worker slower than its timeout_s ends as Failure('timeout', retryable=True), promptly."""
    slow, _ = answers(Success({"x": 1}), delay=30)
    started = time.perf_counter()
    result = await delegated(
        delegation({"slow": slow, "fast": ok({"y": 2})}, timeout_s=0.05, retries=0)
    )
    assert time.perf_counter() - started < 1.0
    failure = result.results_by_worker["slow"]
    assert isinstance(failure, Failure)
    assert (failure.reason_code, failure.retryable) == ("timeout", True)
    assert "0.05 s" in failure.message
    assert any(e.event == "timed_out" and e.worker == "slow" for e in result.trace)


async def test_timeout_runs_from_the_call_not_from_waiting_for_a_slot() -> None:
    """With one slot, a worker that waits its turn is not timed out for the waiting."""
    d = delegation(
        {"a": ok({"a": 1}, delay=0.04), "b": ok({"b": 1}, delay=0.04)},
        timeout_s=0.07,
        max_concurrency=1,
    )
    result = await delegated(d)
    assert result.merged == {"a": 1, "b": 1}


async def test_a_timeout_the_worker_raises_itself_is_not_mistaken_for_ours() -> None:
    """TimeoutError raised inside the worker is worker_raised (retryable), not 'timeout'."""

    async def own_timeout(task: object) -> WorkerResult:
        raise TimeoutError("upstream gave up")

    result = await run(delegation({"w": own_timeout}, retries=0))
    assert isinstance(result, DelegationFailed)
    assert result.results_by_worker["w"] == Failure(
        "worker_raised", "TimeoutError: upstream gave up", True
    )


# --- the orchestrator's retry budget -----------------------------------------------------


async def test_retry_recovers_a_flaky_worker() -> None:
    """A retryable failure is retried by the orchestrator; the second answer is used."""
    flaky, calls = answers(Failure("503", "busy", True), Success({"x": 1}))
    result = await delegated(delegation({"flaky": flaky}, retries=1))
    assert result.merged == {"x": 1}
    assert len(calls) == 2
    assert (result.attempts_by_worker, result.retries_used) == ({"flaky": 2}, 1)


@pytest.mark.parametrize(
    ("workers", "retries", "share"),
    [(1, 0, None), (1, 3, None), (3, 4, None), (3, 4, 1), (4, 10, 2), (2, 5, 0)],
)
async def test_calls_are_bounded_by_the_one_run_budget(
    workers: int, retries: int, share: int | None
) -> None:
    """Workers never retry themselves: each is called at most 1 + its share of the run's budget,
    and the run makes at most len(workers) + retries calls (exactly that when all keep failing)."""
    fns = {f"w{i}": down() for i in range(workers)}
    d = delegation({n: fn for n, (fn, _) in fns.items()}, retries=retries, retries_per_worker=share)
    result = await run(d)
    assert isinstance(result, DelegationFailed) and result.reason_code == "all_failed"
    cap = retries if share is None else share
    calls = {n: len(c) for n, (_, c) in fns.items()}
    assert calls == dict(result.attempts_by_worker)
    assert all(c <= 1 + cap for c in calls.values())
    assert sum(calls.values()) == workers + min(retries, workers * cap)


async def test_non_retryable_failure_is_never_retried() -> None:
    """A Failure with retryable=False is final at once, however much budget is left."""
    bad, calls = down("not_found", retryable=False)
    result = await delegated(delegation({"bad": bad, "good": ok({"x": 1})}, retries=10))
    assert len(calls) == 1 and result.retries_used == 0
    assert "not retried: not retryable" in render_trace(result.trace)


async def test_spent_budget_is_reported_in_the_trace() -> None:
    """When the budget is gone, the final failure says so, with the numbers."""
    bad, _ = down()
    result = await run(delegation({"bad": bad}, retries=2))
    assert isinstance(result, DelegationFailed)
    final = [e for e in result.trace if e.event == "failed"][-1]
    assert final.attempt == 3
    assert "not retried: the run's retry budget is spent (2 of 2)" in final.detail


async def test_backoff_is_exponential_capped_and_waits_on_the_clock() -> None:
    """Retries wait backoff_initial_s * 2**(n-1) up to backoff_max_s, on the given clock."""
    clock = VirtualClock(T0)
    seen: list[datetime] = []

    async def failing(task: object) -> WorkerResult:
        seen.append(clock.now())
        return Failure("busy", "try later", True)

    d = delegation({"w": failing}, clock=clock, retries=4, backoff_initial_s=1.0, backoff_max_s=3.0)
    started = time.perf_counter()
    await run(d)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(seen)]
    assert gaps == [1.0, 2.0, 3.0, 3.0]
    assert time.perf_counter() - started < 0.5  # virtual time: no real waiting


# --- NeedsHuman --------------------------------------------------------------------------


async def test_needs_human_surfaces_and_is_never_retried() -> None:
    """NeedsHuman is handed back in ``needs_human``, called once, neither dropped nor
    substituted, and does not fail a fail_fast run; the others still merge."""
    asks, calls = answers(NeedsHuman("merger requested", "Merge contracts A and B?"))
    for policy in (Drop(), Substitute({"asks": {"x": 0}, "good": {}}), FailFast()):
        calls.clear()
        d = delegation({"asks": asks, "good": ok({"y": 1})}, retries=5, on_partial=policy)
        result = await delegated(d)
        assert result.needs_human == {
            "asks": NeedsHuman("merger requested", "Merge contracts A and B?")
        }
        assert len(calls) == 1 and result.retries_used == 0
        assert (result.dropped, result.substituted) == ((), ())
        assert result.merged == {"y": 1}


# --- partial-result policies -------------------------------------------------------------


async def test_drop_merges_what_succeeded_and_reports_what_was_dropped() -> None:
    """Under Drop a failed worker's fields are left out and the worker is listed in dropped."""
    bad, _ = down("billing_down", retryable=False)
    result = await delegated(delegation({"usage": ok({"tenure": 1}), "billing": bad}))
    assert result.merged == {"tenure": 1}
    assert result.dropped == ("billing",)
    assert [(e.event, e.worker) for e in result.trace if e.event == "dropped"] == [
        ("dropped", "billing")
    ]


async def test_drop_with_every_worker_failed_is_a_typed_failure() -> None:
    """Nothing to merge under Drop is DelegationFailed('all_failed') naming each failure."""
    result = await run(delegation({"a": down("a_down")[0], "b": down("b_down")[0]}, retries=0))
    assert isinstance(result, DelegationFailed)
    assert result.reason_code == "all_failed"
    assert "a: a_down, b: b_down" in result.message
    assert result.trace[-1].event == "run_failed"


async def test_substitute_uses_the_declared_default_with_provenance() -> None:
    """Under Substitute a failed worker's default fields are merged and attributed to it."""
    d = delegation(
        {"usage": ok({"tenure": 1}), "network": down(retryable=False)[0]},
        on_partial=Substitute({"usage": {}, "network": {"network_quality": "unknown"}}),
    )
    result = await delegated(d)
    assert result.merged == {"tenure": 1, "network_quality": "unknown"}
    assert result.provenance == {"tenure": "usage", "network_quality": "network"}
    assert result.substituted == ("network",)
    assert isinstance(result.results_by_worker["network"], Failure)  # the truth is kept


async def test_a_default_only_fills_gaps_left_by_real_answers() -> None:
    """A substituted default never beats a real value, even from a lower-priority worker."""
    d = delegation(
        {"network": down(retryable=False)[0], "support": ok({"quality": "poor"})},
        on_partial=Substitute({"network": {"quality": "unknown", "outages": 0}, "support": {}}),
    )
    result = await delegated(d)
    assert result.merged == {"quality": "poor", "outages": 0}
    assert result.provenance == {"quality": "support", "outages": "network"}
    assert result.conflicts == (FieldConflict("quality", "support", ("network",)),)


async def test_fail_fast_cancels_the_rest_and_fails_typed() -> None:
    """Under FailFast the first lasting failure cancels running workers and the run fails."""
    cancelled = asyncio.Event()

    async def slow(task: object) -> WorkerResult:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Success({})

    d = delegation(
        {"slow": slow, "bad": down("billing_down", retryable=False)[0]}, on_partial=FailFast()
    )
    started = time.perf_counter()
    result = await run(d)
    assert time.perf_counter() - started < 1.0
    assert cancelled.is_set()
    assert isinstance(result, DelegationFailed)
    assert result.reason_code == "worker_failed"
    assert "bad failed for good (billing_down" in result.message
    cancelled_result = result.results_by_worker["slow"]
    assert isinstance(cancelled_result, Failure) and cancelled_result.reason_code == "cancelled"
    assert list(result.results_by_worker) == ["slow", "bad"]


async def test_fail_fast_spends_the_retry_budget_before_failing() -> None:
    """FailFast acts on a lasting failure: a retryable one that recovers does not end the run."""
    flaky, _ = answers(Failure("503", "busy", True), Success({"x": 1}))
    result = await delegated(
        delegation({"flaky": flaky, "b": ok({"y": 2})}, retries=1, on_partial=FailFast())
    )
    assert result.merged == {"x": 1, "y": 2}


async def test_cancelling_the_run_cancels_its_workers() -> None:
    """A caller that cancels run() leaves no worker running behind it."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(task: object) -> WorkerResult:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Success({})

    outer = asyncio.create_task(run(delegation({"slow": slow})))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert cancelled.is_set()


# --- deterministic merge -----------------------------------------------------------------


async def test_each_field_comes_from_the_highest_priority_worker_that_provided_it() -> None:
    """The global priority order picks each field's source; provenance records it."""
    d = delegation(
        {"a": ok({"x": 1}), "b": ok({"x": 2, "y": 2}), "c": ok({"y": 3, "z": 3})},
        priority=["c", "a", "b"],
    )
    result = await delegated(d)
    assert result.merged == {"y": 3, "z": 3, "x": 1}
    assert result.provenance == {"y": "c", "z": "c", "x": "a"}
    assert list(result.merged) == ["y", "z", "x"]  # fields in the order the priority meets them


async def test_field_priority_overrides_the_global_order_for_that_field() -> None:
    """field_priority puts named workers first for one field; the rest follow the global order."""
    d = delegation(
        {
            "usage": ok({"charges": 30.12, "tenure": 1}),
            "billing": ok({"charges": 29.85, "tenure": 2}),
        },
        field_priority={"charges": ["billing"]},
    )
    result = await delegated(d)
    assert result.merged == {"charges": 29.85, "tenure": 1}
    assert result.provenance == {"charges": "billing", "tenure": "usage"}
    assert result.conflicts == (
        FieldConflict("charges", "billing", ("usage",)),
        FieldConflict("tenure", "usage", ("billing",)),
    )


async def test_none_counts_as_not_provided() -> None:
    """A None value does not win a field; the next worker in order supplies it, or it is absent."""
    d = delegation({"a": ok({"x": None, "gone": None}), "b": ok({"x": 2})})
    result = await delegated(d)
    assert result.merged == {"x": 2}
    assert result.provenance == {"x": "b"}
    assert result.conflicts == ()


async def test_agreeing_workers_are_not_a_conflict() -> None:
    """Only differing values are recorded as conflicts."""
    result = await delegated(delegation({"a": ok({"x": 1}), "b": ok({"x": 1}), "c": ok({"x": 2})}))
    assert result.conflicts == (FieldConflict("x", "a", ("c",)),)


class Billing(pydantic.BaseModel):
    contract: str
    charges: float | None = None


async def test_pydantic_model_values_merge_by_their_fields() -> None:
    """A Success carrying a pydantic model contributes its fields (unset None ones excluded)."""
    d = delegation({"billing": ok(Billing(contract="One year")), "usage": ok({"charges": 30.0})})
    result = await delegated(d)
    assert result.merged == {"contract": "One year", "charges": 30.0}
    assert result.provenance == {"contract": "billing", "charges": "usage"}


async def test_merge_is_the_same_whatever_order_workers_finish_in() -> None:
    """Same inputs, randomised worker delays: the merged value, its field order, provenance,
    conflicts and per-worker results never change."""
    fields = {
        "usage": {"tenure": 1, "charges": 30.12, "streaming": False},
        "network": {"quality": "good", "charges": 31.0},
        "billing": {"charges": 29.85, "contract": "Month-to-month", "tenure": 2},
        "support": {"tickets": 2, "quality": "poor"},
    }
    outcomes, finish_orders = set(), set()
    for seed in range(10):
        rng = random.Random(seed)
        finished: list[str] = []

        def timed(name: str, delay: float, finished: list[str] = finished) -> WorkerFn:
            async def work(task: object) -> WorkerResult:
                await asyncio.sleep(delay)
                finished.append(name)
                if name == "network":
                    return Failure("probe_down", "no probe", False)
                return Success(fields[name])

            return work

        d = delegation(
            {n: timed(n, rng.choice([0.0, 0.002, 0.005, 0.01])) for n in fields},
            priority=["usage", "support", "billing", "network"],
            field_priority={"charges": ["billing", "network"]},
            on_partial=Substitute(
                {"usage": {}, "network": {"quality": "unknown"}, "billing": {}, "support": {}}
            ),
        )
        result = await delegated(d)
        finish_orders.add(tuple(finished))
        outcomes.add(
            repr(
                (
                    list(result.merged.items()),
                    list(result.provenance.items()),
                    result.conflicts,
                    list(result.results_by_worker.items()),
                    result.substituted,
                )
            )
        )
    assert len(finish_orders) > 1, "the delays should have varied the completion order"
    assert len(outcomes) == 1
    (only,) = outcomes
    assert "('charges', 29.85)" in only and "('quality', 'poor')" in only


# --- concurrency, trace, configuration ---------------------------------------------------


async def test_concurrency_is_bounded_by_max_concurrency() -> None:
    """No more than max_concurrency workers run at once."""
    running, peak = 0, 0

    def worker(i: int) -> WorkerFn:
        async def work(task: object) -> WorkerResult:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.005)
            running -= 1
            return Success({f"f{i}": i})

        return work

    result = await delegated(delegation({f"w{i}": worker(i) for i in range(8)}, max_concurrency=3))
    assert peak == 3
    assert len(result.merged) == 8


async def test_trace_records_each_step_in_order() -> None:
    """The trace reads dispatched → failed → retried → dispatched → succeeded → merged, with
    non-decreasing timestamps, and renders one line per entry."""
    flaky, _ = answers(Failure("503", "busy", True), Success({"x": 1}))
    result = await delegated(delegation({"flaky": flaky}, retries=1, backoff_initial_s=0.5))
    steps = [(e.event, e.worker, e.attempt) for e in result.trace]
    assert steps == [
        ("dispatched", "flaky", 1),
        ("failed", "flaky", 1),
        ("retried", "flaky", 1),
        ("dispatched", "flaky", 2),
        ("succeeded", "flaky", 2),
        ("merged", None, None),
    ]
    times = [e.at for e in result.trace]
    assert times == sorted(times) and times[-1] - times[0] == timedelta(seconds=0.5)
    lines = render_trace(result.trace).splitlines()
    assert len(lines) == len(steps)
    assert lines[2].startswith("+ 0.000s  retried") and "backoff 0.50 s" in lines[2]
    assert render_trace([]) == ""


def test_run_sync_works_outside_an_event_loop() -> None:
    """run_sync is the blocking form for scripts."""
    d = delegation({"a": ok({"x": 1})})
    result = d.run_sync({"a": "task"})
    assert isinstance(result, Delegated) and result.merged == {"x": 1}


def _two(**config: Any) -> Delegation:
    return delegation({"a": ok({}), "b": ok({})}, **config)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _two(retries=-1), r"retries must be in \[0, 100\], got -1"),
        (
            lambda: _two(retries=2, retries_per_worker=3),
            r"retries_per_worker must be in \[0, 2\], got 3",
        ),
        (lambda: _two(max_concurrency=0), r"max_concurrency must be in \[1, 1024\], got 0"),
        (
            lambda: _two(backoff_initial_s=2.0, backoff_max_s=1.0),
            r"backoff_initial_s must be in \[0, 1.0\], got 2.0",
        ),
        (lambda: _two(priority=["a"]), r"priority must list each of the 2 workers once"),
        (
            lambda: _two(field_priority={"x": ["z"]}),
            r"field_priority\['x'\] must name known workers",
        ),
        (lambda: _two(on_partial=Substitute({"a": {}})), r"missing \['b'\], unknown \[\]"),
        (lambda: delegation({}), r"at least one worker"),
        (lambda: Worker("", ok({})), r"non-empty name"),
        (
            lambda: Worker("w", ok({}), timeout_s=0),
            r"timeout_s must be in \(0, 3600\] seconds, got 0",
        ),
        (
            lambda: Delegation("d", workers=[Worker("a", ok({})), Worker("a", ok({}))]),
            r"repeated: \['a'\]",
        ),
    ],
)
def test_bad_configuration_is_a_config_error_with_the_numbers(
    build: Callable[[], object], message: str
) -> None:
    """Out-of-bounds or inconsistent configuration fails at declaration with what was seen."""
    with pytest.raises(ConfigError, match=message) as caught:
        build()
    assert isinstance(caught.value, SeamlineError)


# --- the example -------------------------------------------------------------------------


def test_example_runs_and_prints_trace_and_provenance() -> None:
    """examples/patterns/p1_delegation.py runs offline: network times out and is substituted,
    billing fails once and succeeds on the orchestrator's retry, and the merged signals name
    their sources."""
    script = ROOT / "examples" / "patterns" / "p1_delegation.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    lines = out.splitlines()

    def line(*words: str) -> str:
        found = [text for text in lines if all(w in text for w in words)]
        assert found, f"no line with {words} in:\n{out}"
        return found[0]

    line("timed_out", "network", "#1", "no answer within 0.2 s")
    line("timed_out", "network", "#2", "not retried")
    line("failed", "billing", "#1", "503")
    line("retried", "billing", "#1")
    line("succeeded", "billing", "#2")
    line("substituted", "network")
    line("merged", "11 field(s)")
    assert "29.85" in line("monthly_charges", "from billing", "overruled: usage")
    assert "unknown" in line("network_quality", "from network", "declared default")
    assert "from usage" in line("tenure_months")
    line("retries used: 2 of 2")


def test_the_doc_cites_only_tests_that_exist() -> None:
    """Every test docs/patterns/p1-delegation.md names (or names by prefix) is in this module."""
    doc = (ROOT / "docs" / "patterns" / "p1-delegation.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`(test_[a-z0-9_]+\*?)`", doc))
    assert len(cited) > 10
    here = [name for name in globals() if name.startswith("test_")]
    for name in cited:
        prefix = name.rstrip("*")
        assert any(h == name or (name.endswith("*") and h.startswith(prefix)) for h in here), name
