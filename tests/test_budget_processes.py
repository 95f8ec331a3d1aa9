"""A budget shared by real OS processes: the cap holds while they race, and a call in flight
when its process is SIGKILLed stays charged. Children run tests/_spend_worker.py against one
store (an SQLite file or a private PostgreSQL schema); the parent checks the usage ledger."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta

import pytest

from seamline.budget import Budget, BudgetLedger, Reservation
from seamline.clock import VirtualClock
from seamline.models import Usage
from seamline.store import open_store
from tests._spend_procs import expect_line, finish, go, reaped, run_together, spawn
from tests._spend_worker import PRICES, RESERVE

PROCESSES = 4
CAP = 3000
ONE_CALL = RESERVE.total_tokens
"""Every worker call reserves this and is charged at most this."""


async def race(store_url: str, *, strict: bool) -> tuple[int, list[int]]:
    """Four processes spend from one budget until refused; returns the total charged in the
    store and the calls each process made."""
    async with open_store(store_url):
        pass  # migrate once up front, so the race is over the budget and not the schema
    argvs = [
        ["ledger", store_url, "--worker", f"w{n}", "--cap", str(CAP)]
        + (["--strict"] if strict else [])
        for n in range(PROCESSES)
    ]
    _, finished = await run_together(argvs)
    reports = [f.report() for f in finished]
    async with open_store(store_url) as store:
        totals = await store.usage_totals("run", include_children=True)
        assert totals.calls == sum(r["calls"] for r in reports)
        assert totals.total_tokens == sum(r["tokens"] for r in reports)
    return totals.total_tokens, [r["calls"] for r in reports]


@pytest.mark.slow
async def test_processes_sharing_a_strict_budget_never_cross_its_cap(store_url: str) -> None:
    """With strict admission and reservations that bound each call, four racing processes
    never spend past the cap, and they stop only when less than a few calls' worth is left."""
    total, calls = await race(store_url, strict=True)
    assert total <= CAP, f"{PROCESSES} processes spent {total} tokens of a {CAP}-token cap"
    assert total >= CAP - PROCESSES * ONE_CALL, f"stopped early at {total} of {CAP}"
    assert sum(c > 0 for c in calls) >= 2, f"the processes did not race: calls {calls}"


@pytest.mark.slow
async def test_processes_sharing_a_budget_cross_its_cap_by_at_most_one_call(
    store_url: str,
) -> None:
    """By default a call starts while spend plus reservations is under the cap, so however
    many processes race, the cap is crossed by less than one call — not one per process."""
    total, calls = await race(store_url, strict=False)
    assert CAP - PROCESSES * ONE_CALL <= total < CAP + ONE_CALL, (
        f"{PROCESSES} processes spent {total} tokens of a {CAP}-token cap"
    )
    assert sum(c > 0 for c in calls) >= 2, f"the processes did not race: calls {calls}"


@pytest.mark.slow
async def test_a_call_in_flight_when_its_process_is_killed_stays_charged(store_url: str) -> None:
    """A process SIGKILLed inside a model call leaves its reservation counting against the
    budget; once the lease runs out it is written to the usage ledger at its reserved amount
    under the run that made the call."""
    async with open_store(store_url):
        pass
    argv = ["hold", store_url, "--worker", "w0", "--cap", "1000"]
    procs: list[asyncio.subprocess.Process] = []
    async with reaped(procs):
        procs.append(await spawn(*argv))
        await expect_line(procs[0], argv, "ready")
        await go(procs)
        await expect_line(procs[0], argv, "held")
        os.kill(procs[0].pid, signal.SIGKILL)
        killed = await finish(procs[0], argv)
    assert killed.returncode == -signal.SIGKILL, killed.explain()

    budget = Budget("run", max_tokens=1000, prices=PRICES)
    now = datetime.now(UTC)
    async with open_store(store_url) as store:
        fresh = BudgetLedger(store, budget, clock=VirtualClock(now))
        status = await fresh.status()
        assert (status.spent_tokens, status.reserved_tokens) == (0, ONE_CALL)
        assert (await store.usage_totals("run", include_children=True)).calls == 0

        expired = VirtualClock(now + fresh.lease + timedelta(seconds=1))
        later = BudgetLedger(store, budget, clock=expired)
        taken = await later.reserve(model="m", estimate=Usage(1, 1))
        assert isinstance(taken, Reservation)
        lost = await store.usage_totals("run/w0")
        assert (lost.calls, lost.prompt_tokens, lost.completion_tokens) == (
            1,
            RESERVE.prompt_tokens,
            RESERVE.completion_tokens,
        )
        status = await later.status()
        assert (status.spent_tokens, status.reserved_tokens) == (ONE_CALL, 2)
