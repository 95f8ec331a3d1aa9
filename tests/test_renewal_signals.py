"""Day -90 of the renewal agent: the signals through hardened tools (validation, retries,
timeouts, breaker) inside the P1 fan-out, the retention saga whose billing fetcher writes and
is undone when a later step fails, and the gate that refuses a second window-open trigger."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from seamline.clock import VirtualClock
from seamline.store import SqlStore
from seamline.tools import ToolError, ToolOk
from seamline.workloads.renewal import (
    CAMPAIGN_START,
    Customer,
    summarise,
    synthetic_cohort,
    trigger_window,
)
from seamline.workloads.renewal._job import build_agent
from seamline.workloads.renewal._offer import stable_fraction
from seamline.workloads.renewal._signals import (
    FAIL_RATE,
    GARBAGE_RATE,
    HANG_RATE,
    SignalQuery,
    Signals,
    at_risk,
    fresh_attempts,
)

SEED = 7
POOL = synthetic_cohort(4000, seed=5)
FAIL, HANG, GARBAGE = FAIL_RATE, FAIL_RATE + HANG_RATE, FAIL_RATE + HANG_RATE + GARBAGE_RATE


def draw(service: str, c: Customer, attempt: int) -> float:
    return stable_fraction(SEED, service, c.customer_id, attempt)


def first(pool: Sequence[Customer], test: Callable[[Customer], bool]) -> Customer:
    return next(c for c in pool if test(c))


def signals(store: SqlStore, customers: Sequence[Customer]) -> Signals:
    return Signals(
        store,
        {c.customer_id: c for c in customers},
        job="sig",
        seed=SEED,
        clock=VirtualClock(CAMPAIGN_START),
    )


def ok_at(service: str, c: Customer, attempt: int) -> bool:
    return draw(service, c, attempt) >= GARBAGE


async def test_a_connection_error_is_retried_by_the_tool(store: SqlStore) -> None:
    """A service that refuses the first call and answers the second gives its signal, with the
    retry counted on the tool's result."""
    c = first(POOL, lambda c: draw("usage", c, 1) < FAIL and ok_at("usage", c, 2))
    with fresh_attempts():
        result = (
            await signals(store, [c]).tools["usage"].call(SignalQuery(customer_id=c.customer_id))
        )
    assert isinstance(result, ToolOk) and result.attempts == 2
    assert result.value.model_dump() == {
        "streaming": c.streaming_tv == "Yes",
        "internet": c.internet_service,
    }


async def test_a_hung_call_is_cut_by_the_timeout_and_retried(store: SqlStore) -> None:
    """A service that hangs is cut off at the tool's timeout and called again."""
    c = first(POOL, lambda c: FAIL <= draw("network", c, 1) < HANG and ok_at("network", c, 2))
    with fresh_attempts():
        result = await signals(store, [c]).tools["network"].call({"customer_id": c.customer_id})
    assert isinstance(result, ToolOk) and result.attempts == 2


async def test_a_garbage_answer_is_refused_and_the_signal_substituted(store: SqlStore) -> None:
    """An answer that is not a valid signal is refused by the tool's output validation (not
    retried), and the delegation substitutes that signal's empty default: the other three
    signals still arrive."""
    c = first(
        POOL,
        lambda c: (
            not at_risk(c)
            and HANG <= draw("support", c, 1) < GARBAGE
            and all(ok_at(s, c, 1) for s in ("usage", "network", "billing"))
        ),
    )
    sig = signals(store, [c])
    with fresh_attempts():
        result = await sig.tools["support"].call(SignalQuery(customer_id=c.customer_id))
    assert isinstance(result, ToolError) and result.code == "invalid_output"
    assert not result.retryable and result.attempts == 1
    with fresh_attempts():
        merged, case = await sig.gather(c)
    assert case is None
    assert "open_tickets" not in merged and "tech_support" not in merged
    assert {"streaming", "outage_minutes", "monthly_charges"} <= set(merged)


async def test_a_malformed_query_never_reaches_the_service(store: SqlStore) -> None:
    """A query that is not a customer id is refused before any call."""
    result = await signals(store, POOL[:1]).tools["billing"].call({"customer_id": "DROP TABLE"})
    assert isinstance(result, ToolError) and result.code == "invalid_input"
    assert result.attempts == 0


async def test_a_service_that_keeps_failing_opens_its_breaker(store: SqlStore) -> None:
    """After 20 failed calls in a row the breaker opens: the next call is refused at once
    (circuit_open) without reaching the service."""
    c = first(POOL, lambda c: stable_fraction("callback", c.customer_id) < 0.03)
    tool = signals(store, [c]).callback_tool
    for _ in range(20):
        failed = await tool.call(SignalQuery(customer_id=c.customer_id))
        assert isinstance(failed, ToolError) and failed.code == "failed" and failed.attempts == 3
    refused = await tool.call(SignalQuery(customer_id=c.customer_id))
    assert isinstance(refused, ToolError) and refused.code == "circuit_open"
    assert refused.attempts == 0


def _clean(c: Customer) -> bool:
    return all(ok_at(s, c, 1) for s in ("usage", "network", "billing", "support"))


async def test_the_billing_snapshot_is_cached_when_the_retention_case_completes(
    store: SqlStore,
) -> None:
    """For a customer at risk the billing fetcher runs as a saga step that writes a billing
    snapshot; when the callback is booked the snapshot stays cached and is the billing signal."""
    c = first(
        POOL,
        lambda c: at_risk(c) and _clean(c) and stable_fraction("callback", c.customer_id) > 0.1,
    )
    sig = signals(store, [c])
    with fresh_attempts():
        merged, case = await sig.gather(c)
    assert case == "completed"
    snapshot = await store.get_row(sig.snapshot_row(c.customer_id))
    assert snapshot is not None and snapshot.state == "cached"
    assert merged["monthly_charges"] == snapshot.data["monthly_charges"] == str(c.monthly_charges)


async def test_a_failed_booking_drops_the_billing_snapshot(store: SqlStore) -> None:
    """When the callback cannot be booked the saga compensates: the snapshot the billing
    fetcher wrote is dropped, and the assessment goes on without billing signals."""
    c = first(
        POOL,
        lambda c: at_risk(c) and _clean(c) and stable_fraction("callback", c.customer_id) < 0.03,
    )
    sig = signals(store, [c])
    with fresh_attempts():
        merged, case = await sig.gather(c)
    assert case == "compensated"
    snapshot = await store.get_row(sig.snapshot_row(c.customer_id))
    assert snapshot is not None and snapshot.state == "dropped"
    assert "monthly_charges" not in merged and "streaming" in merged
    saga = await store.read_stream(f"saga:{sig.saga_id(c.customer_id)}")
    kinds = [e.type for e in saga]
    assert (
        kinds.index("step_started") < kinds.index("step_failed") < kinds.index("compensation_done")
    )


async def test_a_second_window_open_trigger_is_an_audited_deny(store: SqlStore) -> None:
    """The first trigger for a contract opens its window (audited allow); a second one for the
    same contract and window is refused by the gate with an audited deny, and no second row or
    timer is written."""
    cohort = POOL[:3]
    agent = build_agent(store, cohort, clock=VirtualClock(CAMPAIGN_START), seed=SEED)
    first_trigger = await trigger_window(store, agent, cohort[0])
    second = await trigger_window(store, agent, cohort[0])
    assert first_trigger.kind == "allow"
    assert second.kind == "deny" and second.rule == "window.duplicate_trigger"
    rows = await store.list_rows(kind="renewal", limit=10)
    assert [r.id for r in rows] == [agent.row_id(cohort[0].customer_id)]
    audit = await store.audit_entries(subject=agent.row_id(cohort[0].customer_id))
    assert [(a.actor, a.decision) for a in audit] == [
        ("gate:window-open", "allow"),
        ("gate:window-open", "deny"),
    ]
    assert audit[1].details["rule"] == "window.duplicate_trigger"
    summary = await summarise(store, agent.job, cohort)
    assert summary.gate_denials == {"window.duplicate_trigger": 1}
    assert summary.outcomes == {"window_open": 1}


@pytest.mark.parametrize("n", [1, 2])
async def test_each_duplicate_trigger_is_denied_on_its_own(store: SqlStore, n: int) -> None:
    """Every further trigger is a separate decision: n extra triggers are n audited denials."""
    cohort = POOL[:1]
    agent = build_agent(store, cohort, clock=VirtualClock(CAMPAIGN_START), seed=SEED)
    for _ in range(n + 1):
        await trigger_window(store, agent, cohort[0])
    summary = await summarise(store, agent.job, cohort)
    assert summary.gate_denials == {"window.duplicate_trigger": n}
