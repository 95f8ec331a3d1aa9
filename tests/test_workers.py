"""Scale-out: several worker processes drain one renewal job on PostgreSQL, one of them
SIGKILLed mid-way; every contract ends once, no offer is sent twice, throttles hold, and the
outcomes equal a single-process run's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from seamline.clock import VirtualClock
from seamline.store import open_store
from seamline.workloads.renewal import CAMPAIGN_START, TERMINAL, run_renewals, synthetic_cohort

ROOT = Path(__file__).resolve().parent.parent
N = 2_000  # the scale the scale-out requirement names


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "seamline.cli", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(p: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


@pytest.mark.slow
def test_workers_share_a_job_and_survive_a_sigkill(pg_url: str, tmp_path: Path) -> None:
    """Four workers, one SIGKILLed and replaced, drain 2,000 contracts: all terminal, each offer
    sent once, the per-minute throttle never exceeded, outcomes as in one process."""
    code, out = _finish(_cli("renewals", "enqueue", "--limit", str(N), "--store", pg_url))
    assert code == 0, out
    workers = [_cli("worker", "--store", pg_url, "--owner", f"w{i}") for i in range(4)]

    # once a quarter as many commits as contracts have landed, the first worker seen holding
    # claimed timers is SIGKILLed mid-step: its leases must expire and the others (and its
    # replacement) take that work over
    with psycopg.connect(pg_url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while not (
            held := conn.execute(
                "SELECT lease_owner FROM seamline_timers WHERE status = 'pending' "
                "AND lease_owner IS NOT NULL "
                "AND (SELECT count(*) FROM seamline_commits) >= %s LIMIT 1",
                (N // 4,),
            ).fetchone()
        ):
            assert time.monotonic() < deadline, "no worker claimed any work"
            time.sleep(0.002)
    victim = workers.pop(int(held[0].removeprefix("w")))
    os.kill(victim.pid, signal.SIGKILL)
    code, out = _finish(victim)
    assert code == -signal.SIGKILL, f"{held[0]} finished before its kill: {out}"
    workers.append(_cli("worker", "--store", pg_url, "--owner", "w4"))
    for n, w in enumerate(workers):
        code, out = _finish(w)
        assert code == 0, (n, out)
    code, out = _finish(_cli("worker", "--store", pg_url, "--owner", "sweep"))
    assert code == 0, out

    with psycopg.connect(pg_url) as conn:
        states = dict(
            conn.execute(
                "SELECT state, count(*) FROM seamline_rows WHERE kind = 'renewal' GROUP BY state"
            ).fetchall()
        )
        sends = [
            r[0]
            for r in conn.execute(
                "SELECT payload FROM seamline_events WHERE stream = 'outbox'"
            ).fetchall()
        ]
        outreach = conn.execute(
            "SELECT count(*) FROM seamline_commits WHERE key LIKE '%:outreach'"
        ).fetchone()
        minutes = conn.execute(
            "SELECT max(tokens) FROM seamline_buckets WHERE name LIKE 'throttle:outreach:minute:%'"
        ).fetchone()
    assert set(states) <= set(TERMINAL) and sum(states.values()) == N
    customers = [json.loads(s)["customer"] for s in sends]
    assert len(customers) == len(set(customers)) == outreach[0]
    assert minutes[0] is not None and minutes[0] <= 30, "the per-minute throttle was exceeded"

    async def single() -> Counter[str]:
        clock = VirtualClock(CAMPAIGN_START)
        store = open_store(f"sqlite:///{tmp_path}/one.db", clock=clock)
        try:
            summary = await run_renewals(store, synthetic_cohort(N, seed=7), seed=7, clock=clock)
        finally:
            await store.close()
        return Counter({k: v for k, v in summary.outcomes.items() if v})

    assert Counter(states) == asyncio.run(single())


@pytest.mark.slow
def test_sigterm_stops_a_worker_cleanly(pg_url: str) -> None:
    """SIGTERM ends a worker after the step under way (exit 0); another finishes the job."""
    code, out = _finish(_cli("renewals", "enqueue", "--limit", "120", "--store", pg_url))
    assert code == 0, out
    w = _cli("worker", "--store", pg_url, "--owner", "t1")
    assert w.stdout is not None and "driving renewal job" in w.stdout.readline()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while not conn.execute(
            "SELECT 1 FROM seamline_timers WHERE lease_owner = 't1' AND status = 'pending'"
        ).fetchone():
            assert w.poll() is None and time.monotonic() < deadline, "t1 never claimed work"
            time.sleep(0.005)
    w.send_signal(signal.SIGTERM)  # mid-step: it holds claimed timers
    code, out = _finish(w)
    assert code == 0, out
    assert "t1: stopped" in out, out
    code, out = _finish(_cli("worker", "--store", pg_url, "--owner", "t2"))
    assert code == 0, out
    with psycopg.connect(pg_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM seamline_rows WHERE kind = 'renewal' "
            "AND state NOT IN ('renewed', 'renewed_with_offer', "
            "'restructured', 'churned', 'expired')"
        ).fetchone()
    assert left[0] == 0


def test_worker_refuses_unknown_kinds_and_empty_stores(tmp_path: Path) -> None:
    """A kind the worker does not drive, or a store with no job, is a clear error."""
    from typer.testing import CliRunner

    from seamline.cli import app

    result = CliRunner().invoke(
        app, ["worker", "--kinds", "billing", "--store", f"sqlite:///{tmp_path}/w.db"]
    )
    assert result.exit_code == 2 and "unknown kinds" in result.output
    assert "renewal, porting" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["worker", "--store", f"sqlite:///{tmp_path}/w.db"])
    assert result.exit_code == 2 and "renewals enqueue" in " ".join(result.output.split())


# --- porting: a second kind, and workers that wait for work ---------------------------------


def _porting_rows(url: str) -> tuple[dict[str, str], Counter[str]]:
    """Each porting row's state, and how many times each row entered a terminal state."""
    from seamline.workloads.porting import KIND as PORTING
    from seamline.workloads.porting import TERMINAL as PORTING_TERMINAL

    async def read() -> tuple[dict[str, str], Counter[str]]:
        store = open_store(url)
        try:
            rows = await store.list_rows(kind=PORTING, limit=10_000)
            ended: Counter[str] = Counter()
            for r in rows:
                for e in await store.read_stream(f"wf:{PORTING}:{r.id}", limit=10_000):
                    if e.type == "transitioned" and e.payload["to"] in PORTING_TERMINAL:
                        ended[r.id] += 1
            return {r.id: r.state for r in rows}, ended
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_drain_an_enqueued_porting_job(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`porting enqueue` + two `worker --kinds porting` processes racing on one store: every
    request ends in a terminal state, each exactly once."""
    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path}/porting.db"
    )
    code, out = _finish(_cli("porting", "enqueue", "--requests", "40", "--store", url))
    assert code == 0, out
    workers = [
        _cli("worker", "--kinds", "porting", "--store", url, "--owner", f"p{i}") for i in range(2)
    ]
    for w in workers:
        code, out = _finish(w)
        assert code == 0, out
        assert "driving porting job" in out
    states, ended = _porting_rows(url)
    from seamline.workloads.porting import TERMINAL as PORTING_TERMINAL

    assert len(states) == 40
    assert set(states.values()) <= set(PORTING_TERMINAL), Counter(states.values())
    assert set(ended) == set(states) and set(ended.values()) == {1}


@pytest.mark.slow
def test_a_following_worker_picks_up_work_enqueued_later(tmp_path: Path) -> None:
    """`worker --follow` on an empty store waits; a job enqueued afterwards is driven to its
    end; SIGTERM then stops the worker cleanly."""
    url = f"sqlite:///{tmp_path}/follow.db"
    asyncio.run(open_store(url).close())  # the file exists and is migrated beforehand
    w = _cli("worker", "--kinds", "porting", "--follow", "--poll", "0.2", "--store", url)
    try:
        time.sleep(1.0)
        assert w.poll() is None, "a following worker does not exit when there is no work"
        code, out = _finish(_cli("porting", "enqueue", "--requests", "15", "--store", url))
        assert code == 0, out
        deadline = time.monotonic() + 120
        while True:
            states, _ = _porting_rows(url)
            from seamline.workloads.porting import TERMINAL as PORTING_TERMINAL

            if len(states) == 15 and set(states.values()) <= set(PORTING_TERMINAL):
                break
            assert time.monotonic() < deadline and w.poll() is None, states
            time.sleep(0.3)
    finally:
        w.send_signal(signal.SIGTERM)
    code, out = _finish(w)
    assert code == 0, out
    assert "driving porting job" in out and "stopped" in out
