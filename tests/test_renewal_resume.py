"""Interrupt `seamline renewals run` at random points — SIGKILL, or Ctrl-C (SIGINT) — and run
it again: the resumed job ends with the whole summary of an uninterrupted run with the same
seed (outcomes, offers, discounts, escalations, gate denials by rule, rejects by verifier,
commits, tokens, cost, and the rest of RenewalSummary.figures()), and no offer is sent twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from seamline.store import SqlStore, open_store
from seamline.workloads.renewal import RenewalSummary, job_id, summarise, synthetic_cohort
from tests._kill import kill_at_progress_sync

pytestmark = pytest.mark.slow

T = TypeVar("T")
LIMIT, SEED = 120, 7
COHORT = synthetic_cohort(LIMIT, seed=SEED)
JOB = job_id(COHORT, SEED)


def cli(tmp_path: Path, db: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seamline.cli",
            "renewals",
            "run",
            "--store",
            f"sqlite:///{tmp_path}/{db}",
            "--report",
            str(tmp_path / f"{db}.html"),
            "--limit",
            str(LIMIT),
            "--seed",
            str(SEED),
        ],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def run(path: Path, fn: Callable[[SqlStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = open_store(f"sqlite:///{path}")
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def summary(path: Path) -> RenewalSummary:
    return run(path, lambda st: summarise(st, JOB, COHORT))


def sends(path: Path) -> list[str]:
    async def go(store: SqlStore) -> list[str]:
        out: list[str] = []
        after = 0
        while page := await store.read_events(after_seq=after, limit=5000, stream_prefix="outbox"):
            out.extend(e.payload["customer"] for e in page if e.type == "offer_sent")
            after = page[-1].seq
        return out

    return run(path, go)


def events_in(path: Path) -> Callable[[], int]:
    def count() -> int:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return int(db.execute("SELECT count(*) FROM seamline_events").fetchone()[0])
        except sqlite3.OperationalError:  # not created or not migrated yet
            return 0

    return count


def interrupt_at_progress(
    proc: subprocess.Popen[str], progress: Callable[[], int], target: int
) -> tuple[bool, str]:
    """Send Ctrl-C (SIGINT) once ``progress()`` reaches ``target``; whether it landed, and what
    the command said on stderr."""
    deadline = time.monotonic() + 120
    while proc.poll() is None:
        if progress() >= target:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            return proc.returncode == 130, err
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    return False, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> RenewalSummary:
    path = tmp_path_factory.mktemp("whole")
    finish(cli(path, "whole.db"))
    return summary(path / "whole.db")


def assert_same_job(whole: RenewalSummary, path: Path) -> None:
    resumed = summary(path)
    figures, expected = resumed.figures(), whole.figures()
    for name in expected:  # one figure at a time, so a failure names the figure
        assert figures[name] == expected[name], name
    assert resumed.finished == LIMIT
    sent = sends(path)
    assert len(sent) == len(set(sent)) == resumed.offers_sent


def test_killed_and_resumed_run_ends_with_the_whole_summary(
    uninterrupted: RenewalSummary, tmp_path: Path
) -> None:
    """The CLI job SIGKILLed at four random points and run again finishes with every figure of
    the uninterrupted run's summary, with no offer sent twice."""
    progress = events_in(tmp_path / "killed.db")
    rng = random.Random(3)
    kills = 0
    for _ in range(4):
        proc = cli(tmp_path, "killed.db")
        if not kill_at_progress_sync(proc, progress, progress() + rng.randint(20, 150)):
            break
        kills += 1
    finish(cli(tmp_path, "killed.db"))
    assert kills == 4, f"only {kills} kills landed before the job ran out of work"
    assert_same_job(uninterrupted, tmp_path / "killed.db")


def test_interrupted_with_ctrl_c_and_resumed_run_ends_with_the_whole_summary(
    uninterrupted: RenewalSummary, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT) at two random points stops the command with exit 130 and a hint to run
    it again; run again, it finishes with every figure of the uninterrupted run's summary."""
    progress = events_in(tmp_path / "stopped.db")
    rng = random.Random(5)
    said: list[str] = []
    for _ in range(2):
        landed, err = interrupt_at_progress(
            cli(tmp_path, "stopped.db"), progress, progress() + rng.randint(50, 300)
        )
        assert landed, err
        said.append(" ".join(err.split()))
    finish(cli(tmp_path, "stopped.db"))
    assert all("interrupted." in s and "run the same command again" in s for s in said)
    assert_same_job(uninterrupted, tmp_path / "stopped.db")


def test_figures_leave_out_only_what_depends_on_the_process() -> None:
    """The compared figures are the whole summary but the wall time and the runner's step
    counts (which an interruption changes), so the comparison above cannot pass by omission."""
    fields = {f for f in RenewalSummary.__dataclass_fields__ if not f.startswith("_")}
    compared: dict[str, Any] = RenewalSummary("j", 0).figures()
    left_out = fields - set(compared) - {"job", "customers", "prompt_tokens", "completion_tokens"}
    assert left_out == {
        "wall_seconds",
        "steps",
        "throttled",
        "opens",
        "charged_tokens",
        "charged_cost",
    }
    assert "tokens" in compared and "cost" in compared
