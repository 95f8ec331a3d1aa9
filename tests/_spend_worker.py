"""A child process for the multi-process tests of shared limits: the store-backed token bucket
(tests/test_tools_processes.py) and the budget ledger (tests/test_budget_processes.py).

Run as ``python tests/_spend_worker.py COMMAND STORE_URL ...``. Each command opens the store
first, prints ``ready`` and waits for ``go`` on stdin, so connecting never takes part in the
race:

``bucket``  calls ``StoreTokenBucket.acquire`` on one bucket as fast as it can for
            ``--window`` seconds; prints one JSON line with the wall-clock time
            (``time.time()``) at which each grant returned and how many calls were refused.
``ledger``  spends from one budget through a ``BudgetLedger`` until a reservation is refused:
            reserve ``RESERVE`` tokens, "call the model" for a few milliseconds, charge a
            random usage no larger than the reservation; prints the calls and tokens charged.
``hold``    takes one reservation, prints ``held``, then waits inside its "model call" until
            it is killed.

Anything unexpected ends the process with a non-zero status and a message on stderr; the
parent asserts on both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from decimal import Decimal
from typing import Any

from seamline.budget import Budget, BudgetLedger, Price, PriceTable, Reservation
from seamline.clock import SystemClock
from seamline.models import ModelResponse, Usage
from seamline.store import SqlStore, open_store
from seamline.tools import StoreTokenBucket

RESERVE = Usage(40, 60)
"""What each ``ledger`` call reserves; the usage it charges never exceeds it."""
MODEL = "m"
PRICES = PriceTable().with_price(MODEL, Price(Decimal("1"), Decimal("2")))


class WorkerFailure(Exception):
    """The code under test did something the test's invariants rule out."""


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def ledger_for(store: SqlStore, args: argparse.Namespace) -> BudgetLedger:
    budget = Budget("run", max_tokens=args.cap, strict=args.strict, prices=PRICES)
    return BudgetLedger(store, budget, clock=SystemClock())


async def run_bucket(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    bucket = StoreTokenBucket(store, rate_per_s=args.rate, burst=args.burst)
    grants: list[float] = []
    refused = 0
    deadline = time.monotonic() + args.window
    while time.monotonic() < deadline:
        wait = await bucket.acquire("hammered")
        if wait == 0:
            grants.append(time.time())
        elif wait < 0 or wait > args.burst / args.rate:
            raise WorkerFailure(f"pid {os.getpid()}: a refusal asked to wait {wait} s")
        else:
            refused += 1
    return {"grants": grants, "refused": refused}


async def run_ledger(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    ledger = ledger_for(store, args)
    rng = random.Random(args.worker)
    calls = tokens = 0
    while True:
        held = await ledger.reserve(model=MODEL, estimate=RESERVE, run_id=f"run/{args.worker}")
        if not isinstance(held, Reservation):
            return {"calls": calls, "tokens": tokens, "refused_at": held.share}
        await asyncio.sleep(rng.uniform(0.0, 0.01))  # the model call, overlapping other workers
        usage = Usage(rng.randint(20, RESERVE.prompt_tokens), rng.randint(30, 60))
        await ledger.charge(held, ModelResponse("{}", MODEL, "v1", usage, latency_ms=1.0))
        calls, tokens = calls + 1, tokens + usage.total_tokens


async def run_hold(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    held = await ledger_for(store, args).reserve(
        model=MODEL, estimate=RESERVE, run_id=f"run/{args.worker}"
    )
    if not isinstance(held, Reservation):
        raise WorkerFailure(f"pid {os.getpid()}: the reservation was refused: {held}")
    _say("held")
    await asyncio.sleep(3600)  # a model call that never returns: only SIGKILL ends it
    raise WorkerFailure("the hold outlived its hour")


COMMANDS = {"bucket": run_bucket, "ledger": run_ledger, "hold": run_hold}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="_spend_worker")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("url")
    parser.add_argument("--worker", default=str(os.getpid()))
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--burst", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--cap", type=int, default=1000)
    parser.add_argument("--strict", action="store_true")
    return parser.parse_args(argv)


async def _run(store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    try:
        return await COMMANDS[args.command](store, args)
    finally:
        await store.close()


def main(argv: list[str]) -> int:
    args = parse(argv)
    store = open_store(args.url, pool_size=2)
    _say("ready")
    if sys.stdin.readline() != "go\n":
        raise WorkerFailure("the parent went away before saying go")
    report = asyncio.run(_run(store, args))
    _say(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
