#!/usr/bin/env python3
"""P3 event-driven sequencing: the log is the truth.

Usage events are published to a customer's stream (the model-produced one carries its model
version and prompt hash); a credit consumer applies them with a durable offset; the stream is
read as of an earlier offset, and forked there to try a what-if branch.
Run: python examples/patterns/p3_events.py
"""

from __future__ import annotations

import asyncio
import tempfile

import pydantic

from seamline.patterns import Consumer, EventRegistry, fork_stream, publish, read_as_of
from seamline.store import Event, UnitOfWork, open_store


class UsageMeasured(pydantic.BaseModel):
    gb: float


class CreditProposed(pydantic.BaseModel):
    amount: str
    reason: str


REGISTRY = EventRegistry([UsageMeasured, CreditProposed])
STREAM = "customer:7590-VHVEG"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/p3.db")
        for gb in (12.0, 14.5, 31.0):
            await publish(store, REGISTRY, STREAM, UsageMeasured(gb=gb))
        await publish(
            store,
            REGISTRY,
            STREAM,
            CreditProposed(amount="5.00", reason="outage on 2026-01-03"),
            from_model=True,
            model_version="sim:typical-v1",
            prompt_hash="9f2c41",
        )

        async def apply_credit(event: Event, unit: UnitOfWork) -> None:
            if event.type == "CreditProposed":
                unit.record_commit(f"credit:{event.seq}", event.payload)
                print(
                    f"  consumer: credit {event.payload['amount']} applied "
                    f"(proposed by {event.model_version}, prompt {event.prompt_hash})"
                )

        consumer = Consumer(store, "credits", STREAM, apply_credit)
        print("first poll handled", await consumer.drain(), "events")
        print("second poll handled", await consumer.drain(), "events (offset kept)")
        past = await read_as_of(store, STREAM, 2)
        print("as of offset 2:", [e.payload["gb"] for e in past])
        forked = await fork_stream(store, STREAM, 3, "what-if:7590-VHVEG")
        await publish(
            store,
            REGISTRY,
            "what-if:7590-VHVEG",
            CreditProposed(amount="2.50", reason="half credit"),
        )
        branch = await store.read_stream("what-if:7590-VHVEG")
        print(
            f"fork at {forked.at} (copied {forked.copied}):",  # type: ignore[union-attr]
            [e.type for e in branch],
        )
        print("source untouched:", [e.type for e in await store.read_stream(STREAM)])
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
