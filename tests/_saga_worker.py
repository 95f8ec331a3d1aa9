"""A child process for the P2 crash tests: a plan-change saga whose effects land in files,
killed by the parent at a marker and resumed by a new process.

Run as ``python -m tests._saga_worker --store URL --saga-id ID --sink PATH --mode ok|fail
[--pause-at MARKER] [--resume] [--retry-as PRINCIPAL] [--at ISO-TIME]`` from the repository
root. It opens the store, prints
``ready``, then runs (or with ``--resume``, resumes) the saga and prints one JSON line with
the result; exit status 0.

Every action and compensation is an "external call": it appends its idempotency key to
``SINK.calls`` (every raw call, repeats included), prints ``<phase>:<step>:called``, then
appends ``key<TAB>phase<TAB>step`` to ``SINK`` unless the key is there already (a receiver
that dedupes on the idempotency key, as payment and messaging APIs do), and prints
``<phase>:<step>:delivered``. When a printed marker equals ``--pause-at`` the worker sleeps,
so the parent's SIGKILL lands exactly there. With ``--mode fail`` the ``notify`` step raises
after its raw call (nothing is delivered), so the saga compensates. ``--retry-as`` resumes
with ``retry_compensations=True`` answered by that principal (a person, days later: ``--at``
sets the virtual time the process runs at).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seamline.clock import VirtualClock
from seamline.patterns import CompensationContext, Saga, SagaStep, SagaStepContext
from seamline.store import open_store

SAGA = "plan-change"
STEPS = ("provision", "credit", "notify")
START = datetime(2026, 1, 1, tzinfo=UTC)
PAUSE_S = 60.0
"""Long enough that the parent's kill always lands first."""


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _append(path: Path, line: str) -> None:
    """One write of a whole line at the end of ``path``, on disk before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_sink(sink: Path) -> list[tuple[str, str, str]]:
    """Deliveries in the order they landed: (key, phase, step)."""
    deliveries: list[tuple[str, str, str]] = []
    for line in sink.read_text().splitlines() if sink.exists() else []:
        key, phase, step = line.split("\t")
        deliveries.append((key, phase, step))
    return deliveries


def read_calls(sink: Path) -> list[str]:
    """Every raw call's key, repeats included."""
    calls = calls_path(sink)
    return calls.read_text().splitlines() if calls.exists() else []


def calls_path(sink: Path) -> Path:
    return sink.with_name(sink.name + ".calls")


@dataclass(frozen=True)
class Receiver:
    """The external systems: one file of deliveries deduped by key, one of raw calls."""

    sink: Path
    pause_at: str | None = None
    fail_step: str | None = None
    fail_undo: str | None = None
    """A step whose compensation always fails (its rollback API is down)."""

    async def _mark(self, marker: str) -> None:
        _say(marker)
        if marker == self.pause_at:
            await asyncio.sleep(PAUSE_S)

    async def call(self, phase: str, step: str, key: str) -> dict[str, Any]:
        _append(calls_path(self.sink), f"{key}\n")
        await self._mark(f"{phase}:{step}:called")
        if phase == "step" and step == self.fail_step:
            raise RuntimeError(f"the {step} service refused the request")
        if phase == "compensate" and step == self.fail_undo:
            raise ConnectionError(f"the {step} rollback API answered 503")
        # Nothing awaits between the check and the write, and one worker runs at a time.
        if key not in {k for k, _, _ in read_sink(self.sink)}:
            _append(self.sink, f"{key}\t{phase}\t{step}\n")
        await self._mark(f"{phase}:{step}:delivered")
        return {"key": key}


def build_saga(receiver: Receiver) -> Saga:
    def step(name: str) -> SagaStep:
        async def action(ctx: SagaStepContext) -> dict[str, Any]:
            return await receiver.call("step", name, ctx.key)

        async def compensate(ctx: CompensationContext) -> dict[str, Any]:
            return await receiver.call("compensate", name, ctx.key)

        return SagaStep(name, action, compensate)

    return Saga(SAGA, [step(n) for n in STEPS], backoff_initial_s=0.01, backoff_max_s=0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = VirtualClock(datetime.fromisoformat(args.at) if args.at else START)
    receiver = Receiver(args.sink, args.pause_at, "notify" if args.mode == "fail" else None)
    saga = build_saga(receiver)
    store = open_store(args.store, clock=clock)
    try:
        _say("ready")
        if args.retry_as:
            result = await saga.resume(
                args.saga_id,
                store=store,
                clock=clock,
                retry_compensations=True,
                principal=args.retry_as,
                reason="the rollback API is back; retry with the same keys",
            )
        elif args.resume:
            result = await saga.resume(args.saga_id, store=store, clock=clock)
        else:
            result = await saga.run(
                args.saga_id, {"customer": "7590-VHVEG"}, store=store, clock=clock
            )
    finally:
        await store.close()
    return {"kind": result.kind, "replayed": getattr(result, "replayed", False)}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests._saga_worker")
    parser.add_argument("--store", required=True)
    parser.add_argument("--saga-id", required=True)
    parser.add_argument("--sink", type=Path, required=True)
    parser.add_argument("--mode", choices=["ok", "fail"], required=True)
    parser.add_argument("--pause-at", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--retry-as", default=None)
    parser.add_argument("--at", default=None)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    _say(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
