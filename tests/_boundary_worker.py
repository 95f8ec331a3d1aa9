"""A child process for tests/test_boundary_crash.py: the offer boundary over many customers,
killed and restarted by the parent until one run is allowed to finish.

Run as ``python -m tests._boundary_worker --store URL --customers N --mode store|effect
--sink PATH --launch K`` from the repository root. It opens the store, prints ``ready``, then
runs the offer boundary for customers ``c0000`` .. ``c{N-1}`` (in an order shuffled by
``--launch``) in concurrent batches, always with the same run id, so a restarted worker hits
the idempotency keys its killed predecessors used. When every customer has an outcome it
prints one JSON line (the outcome per customer and how many were replayed) and exits 0.

``--mode store``   the commit is ``record_offer``: a ``sent_offer`` row written in the commit's
                   transaction.
``--mode effect``  the commit is a side effect on files: each ``perform`` call first appends its
                   key to ``--calls`` (every raw call, re-performs included), then appends
                   ``key<TAB>discount`` to ``--sink`` unless the key is already there, as a
                   receiver that dedupes on an idempotency key would.

``--launch`` differs per start: it seeds the simulated model and sets the discount the model
proposes, so a re-run that proposed afresh instead of performing the recorded candidate would
show up as a different discount.

Anything unexpected ends the process with status 1 and a message on stderr; the parent asserts
on both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from seamline.boundary import (
    BoundaryResult,
    Committed,
    EffectCommit,
    Escalate,
    Escalated,
    Runtime,
    StoreCommit,
)
from seamline.clock import VirtualClock
from seamline.models import ModelRequest, ModelResponse, SimulatedModel
from seamline.store import open_store
from tests._offers import (
    BEHAVIOUR,
    GOOD,
    Customer,
    Offer,
    OfferBehaviour,
    offer_boundary,
    record_offer,
)

RUN_ID = "crash"
START = datetime(2026, 1, 1, tzinfo=UTC)
MODEL_DELAY_S = 0.015
"""Real time per proposal. The simulated model runs on virtual time and would finish the whole
run before the parent's kill lands; a few real milliseconds keep a batch in flight."""
EFFECT_DELAY_S = 0.015
"""Real time between recording a raw call and delivering to the sink, so kills land between
the accept being recorded and the commit being recorded."""


class WorkerFailure(Exception):
    """The boundary did something the test's invariants rule out."""


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def customer_id(index: int) -> str:
    return f"c{index:04d}"


def key_for(customer: str) -> str:
    """The idempotency key the offer boundary uses for ``customer`` under ``RUN_ID``."""
    return f"{RUN_ID}:offer:{customer}"


def discount_for(launch: int) -> Decimal:
    """The in-policy discount the model proposes in this launch (0.01 .. 0.20)."""
    return Decimal(launch % 20 + 1) / 100


class SlowModel:
    """A model that takes a little real time before answering as ``inner`` does."""

    def __init__(self, inner: SimulatedModel, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s

    @property
    def name(self) -> str:
        return self._inner.name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(self._delay_s)
        return await self._inner.complete(request)


def _append(path: Path, line: str) -> None:
    """One write of a whole line to the end of ``path``, on disk before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_sink(path: Path) -> dict[str, Decimal]:
    """The sink's deliveries by key; a key delivered twice is an error of the receiver."""
    if not path.exists():
        return {}
    delivered: dict[str, Decimal] = {}
    for line in path.read_text().splitlines():
        key, discount = line.split("\t")
        if key in delivered:
            raise WorkerFailure(f"sink {path} holds key {key!r} twice")
        delivered[key] = Decimal(discount)
    return delivered


@dataclasses.dataclass(frozen=True)
class FileSink:
    """An idempotent receiver: delivers each key once, and answers a repeat with the first
    delivery, as payment and email APIs do with an idempotency key."""

    sink: Path
    calls: Path

    async def perform(self, offer: Offer, customer: Customer, key: str) -> dict[str, Any]:
        _append(self.calls, f"{key}\n")
        await asyncio.sleep(EFFECT_DELAY_S)
        # Nothing awaits between the check and the write, so tasks of this process cannot
        # interleave there, and the parent runs one worker at a time.
        first = read_sink(self.sink).get(key)
        if first is None:
            _append(self.sink, f"{key}\t{offer.discount}\n")
        return {"key": key, "discount": str(offer.discount if first is None else first)}


def check(result: BoundaryResult, customer: Customer, mode: str) -> None:
    """Fail on any result the test's setup rules out."""
    key = key_for(customer.id)
    if result.key != key:
        raise WorkerFailure(f"{customer.id}: expected key {key!r}, got {result!r}")
    if isinstance(result, Escalated):
        return
    if not isinstance(result, Committed):
        # The route on exhaustion is Escalate and the sink never raises: a Failed is a bug.
        raise WorkerFailure(f"{customer.id}: expected Committed or Escalated, got {result!r}")
    expected = {"offer_row": f"offer:{customer.id}"} if mode == "store" else {"key": key}
    got = {name: result.result.get(name) for name in expected}
    if got != expected or "discount" not in result.result:
        raise WorkerFailure(f"{customer.id}: committed result {result.result!r} lacks {expected}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = VirtualClock(START)
    behaviour: OfferBehaviour = dataclasses.replace(
        BEHAVIOUR, answer={**GOOD, "discount": str(discount_for(args.launch))}
    )
    model = SlowModel(
        SimulatedModel(behaviour, profile="careless-v1", seed=args.launch, clock=clock),
        MODEL_DELAY_S,
    )
    if args.mode == "store":
        commit: StoreCommit[Offer, Customer] | EffectCommit[Offer, Customer] = StoreCommit(
            record_offer
        )
    else:
        commit = EffectCommit(FileSink(args.sink, args.calls).perform)
    boundary = offer_boundary(model, attempts=2, on_exhausted=Escalate(), commit=commit)
    customers = [Customer(id=customer_id(i)) for i in range(args.customers)]
    # Each launch goes through the customers in its own order, so the batch in flight when
    # the kill lands mixes instances that earlier launches finished with ones still open.
    random.Random(args.launch).shuffle(customers)

    store = open_store(args.store, clock=clock, pool_size=args.batch)
    try:
        runtime = Runtime(store, clock)
        _say("ready")
        outcomes: dict[str, str] = {}
        replayed = 0
        for start in range(0, len(customers), args.batch):
            batch = customers[start : start + args.batch]
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(boundary.run(c, runtime=runtime, run_id=RUN_ID))
                    for c in batch
                ]
            for customer, task in zip(batch, tasks, strict=True):
                result = task.result()
                check(result, customer, args.mode)
                outcomes[customer.id] = result.kind
                replayed += result.replayed
    finally:
        await store.close()
    return {"launch": args.launch, "outcomes": outcomes, "replayed": replayed}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests._boundary_worker")
    parser.add_argument("--store", required=True, help="the store URL")
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--mode", choices=["store", "effect"], required=True)
    parser.add_argument("--sink", type=Path, help="the effect's delivery file (effect mode)")
    parser.add_argument("--calls", type=Path, help="raw perform calls (default: SINK.calls)")
    parser.add_argument("--launch", type=int, default=0, help="which start this is")
    parser.add_argument("--batch", type=int, default=4, help="boundaries run concurrently")
    args = parser.parse_args(argv)
    if args.mode == "effect" and args.sink is None:
        parser.error("--mode effect needs --sink")
    if args.sink is not None and args.calls is None:
        args.calls = args.sink.with_name(args.sink.name + ".calls")
    if args.customers < 1 or args.batch < 1:
        parser.error("--customers and --batch must be at least 1")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    try:
        report = asyncio.run(run(args))
    except Exception as exc:
        # A TaskGroup wraps the cause in an ExceptionGroup: the traceback names it.
        sys.stderr.write(
            f"boundary worker pid {os.getpid()} (launch {args.launch}, mode {args.mode}) "
            f"failed: {type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
        )
        return 1
    _say(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
