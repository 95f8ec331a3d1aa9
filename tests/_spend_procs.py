"""Parent side of tests/_spend_worker.py: start children, release them at once, collect them.

Every child is ours, tracked by pid, and killed by pid if a test leaves early.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("_spend_worker.py")
STARTUP_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class Finished:
    """What a child left behind: its exit status, stdout lines and stderr text."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: tuple[str, ...]
    stderr: str

    def explain(self) -> str:
        return (
            f"worker {' '.join(self.argv)} exited {self.returncode}\n"
            f"stdout: {list(self.stdout)}\nstderr:\n{self.stderr}"
        )

    def report(self) -> dict[str, Any]:
        """The JSON line the worker printed last; it must have exited 0, silent on stderr."""
        assert self.returncode == 0, self.explain()
        assert self.stderr == "", self.explain()
        assert self.stdout, self.explain()
        report: dict[str, Any] = json.loads(self.stdout[-1])
        return report


async def spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, argv: Sequence[str]) -> Finished:
    out, err = await proc.communicate()
    return Finished(tuple(argv), proc.returncode, tuple(out.decode().splitlines()), err.decode())


@asynccontextmanager
async def reaped(procs: list[asyncio.subprocess.Process]) -> AsyncIterator[None]:
    """Kill (by pid) whichever of our children still runs when the block is left."""
    try:
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()


async def expect_line(proc: asyncio.subprocess.Process, argv: Sequence[str], line: str) -> None:
    assert proc.stdout is not None
    got = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT_S)
    if got != f"{line}\n".encode():
        pytest.fail(f"expected {line!r}, got {got!r}\n" + (await finish(proc, argv)).explain())


async def go(procs: Sequence[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
    await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin is not None))


async def run_together(argvs: Sequence[Sequence[str]]) -> tuple[float, list[Finished]]:
    """Start one worker per argv, wait until all are ready, release them at once and collect
    what each left behind. Returns the wall-clock time (``time.time()``) just before the
    release — earlier than anything a child did in the race — and the results."""
    procs: list[asyncio.subprocess.Process] = []
    async with reaped(procs):
        for argv in argvs:
            procs.append(await spawn(*argv))
        for proc, argv in zip(procs, argvs, strict=True):
            await expect_line(proc, argv, "ready")
        released = time.time()
        await go(procs)
        async with asyncio.timeout(RUN_TIMEOUT_S):
            finished = await asyncio.gather(
                *(finish(p, argv) for p, argv in zip(procs, argvs, strict=True))
            )
        return released, list(finished)
