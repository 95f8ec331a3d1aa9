"""Kill a child process in the middle of its work, not before it starts or after it ends.

A sleep of a random length before the SIGKILL lands mid-run only if the machine is as fast
as the one the sleep was tuned on. These helpers watch the store instead: the kill is sent
once the child has made a chosen amount of progress, so it lands in the middle whatever the
machine's speed. Each returns whether the kill landed (False: the child finished first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.005


def _kill(proc: subprocess.Popen[str]) -> bool:
    with contextlib.suppress(ProcessLookupError):  # it exited on its own just now
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return proc.returncode == -signal.SIGKILL


def _stalled(proc: subprocess.Popen[str], seen: int, target: int) -> AssertionError:
    _kill(proc)
    return AssertionError(f"the child made no progress past {seen} (waiting for {target})")


async def kill_at_progress(
    proc: subprocess.Popen[str],
    progress: Callable[[], Awaitable[int]],
    target: int,
    *,
    timeout_s: float = 120,
) -> bool:
    """SIGKILL ``proc`` once ``progress()`` reaches ``target``."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    while proc.poll() is None:
        seen = await progress()
        if seen >= target:
            return _kill(proc)
        if time.monotonic() > deadline:
            raise _stalled(proc, seen, target)
        await asyncio.sleep(POLL_S)
    proc.communicate(timeout=60)
    return False


def kill_at_progress_sync(
    proc: subprocess.Popen[str],
    progress: Callable[[], int],
    target: int,
    *,
    timeout_s: float = 120,
) -> bool:
    """The same for a test without an event loop."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    while proc.poll() is None:
        seen = progress()
        if seen >= target:
            return _kill(proc)
        if time.monotonic() > deadline:
            raise _stalled(proc, seen, target)
        time.sleep(POLL_S)
    proc.communicate(timeout=60)
    return False
