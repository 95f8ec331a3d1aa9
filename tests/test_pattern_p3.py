"""P3 event-driven sequencing: typed events with model identity, consumers with durable
offsets, time travel and forks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from seamline.errors import ConfigError
from seamline.patterns import Consumer, EventRegistry, Forked, fork_stream, publish, read_as_of
from seamline.store import Duplicate, Event, SqlStore, UnitOfWork
from tests._kill import kill_at_progress

ROOT = Path(__file__).resolve().parent.parent


class UsageSpiked(pydantic.BaseModel):
    customer: str
    gb: float


class OfferProposed(pydantic.BaseModel):
    customer: str
    discount: float


REGISTRY = EventRegistry([UsageSpiked, OfferProposed])


async def test_typed_events_round_trip_through_the_registry(store: SqlStore) -> None:
    """A published event decodes back to its type; an unregistered type is refused."""
    seq = await publish(store, REGISTRY, "cust:1", UsageSpiked(customer="1", gb=80.5))
    [event] = await store.read_stream("cust:1")
    assert event.seq == seq and event.type == "UsageSpiked"
    assert REGISTRY.decode(event) == UsageSpiked(customer="1", gb=80.5)

    class Stray(pydantic.BaseModel):
        x: int

    with pytest.raises(ConfigError, match="not registered"):
        await publish(store, REGISTRY, "cust:1", Stray(x=1))


async def test_model_events_must_carry_model_identity(store: SqlStore) -> None:
    """An event a model produced is refused without model_version and prompt_hash, and
    stored with them when given."""
    offer = OfferProposed(customer="1", discount=0.1)
    with pytest.raises(ConfigError, match="model_version and prompt_hash"):
        await publish(store, REGISTRY, "cust:1", offer, from_model=True)
    await publish(
        store,
        REGISTRY,
        "cust:1",
        offer,
        from_model=True,
        model_version="sim-v2",
        prompt_hash="ab12",
    )
    [event] = await store.read_stream("cust:1")
    assert (event.model_version, event.prompt_hash) == ("sim-v2", "ab12")


async def test_publishing_twice_with_one_key_appends_once(store: SqlStore) -> None:
    """At-least-once producers use idempotency keys: the second publish is a Duplicate."""
    event = UsageSpiked(customer="1", gb=1)
    await publish(store, REGISTRY, "s", event, idempotency_key="usage:1:2026-01")
    again = await publish(store, REGISTRY, "s", event, idempotency_key="usage:1:2026-01")
    assert isinstance(again, Duplicate)
    assert len(await store.read_stream("s")) == 1


async def test_consumer_handles_each_event_once_and_keeps_its_offset(store: SqlStore) -> None:
    """A consumer's writes and its offset move together; polling again handles nothing new."""
    for i in range(5):
        await publish(store, REGISTRY, "s", UsageSpiked(customer=str(i), gb=i))
    seen: list[int] = []

    async def handle(event: Event, unit: UnitOfWork) -> None:
        seen.append(event.stream_seq)
        unit.record_commit(f"credit:{event.seq}", {"gb": event.payload["gb"]})

    consumer = Consumer(store, "credits", "s", handle, batch=2)
    assert await consumer.drain() == 5
    assert await consumer.poll() == 0
    assert seen == [1, 2, 3, 4, 5]
    assert await store.get_offset("credits", "s") == 5
    await publish(store, REGISTRY, "s", UsageSpiked(customer="9", gb=9))
    assert await Consumer(store, "credits", "s", handle).drain() == 1
    assert seen[-1] == 6


async def test_two_instances_of_a_consumer_never_double_apply(store: SqlStore) -> None:
    """Two copies of one consumer racing on a stream apply every event exactly once."""
    for i in range(40):
        await publish(store, REGISTRY, "s", UsageSpiked(customer=str(i), gb=i))
    applied: list[int] = []

    async def handle(event: Event, unit: UnitOfWork) -> None:
        await asyncio.sleep(0)
        unit.record_commit(f"credit:{event.seq}", event.payload)

    async def run() -> None:
        consumer = Consumer(store, "credits", "s", handle, batch=3)
        while await store.get_offset("credits", "s") < 40:
            applied.append(await consumer.poll())

    await asyncio.gather(run(), run())
    assert sum(applied) == 40
    for e in await store.read_stream("s"):
        assert await store.get_commit(f"credit:{e.seq}") is not None


async def test_read_as_of_an_offset_is_time_travel(store: SqlStore) -> None:
    """Reading as of offset n shows the stream exactly as it was after n events."""
    for i in range(6):
        await publish(store, REGISTRY, "s", UsageSpiked(customer="1", gb=i))
    as_of_3 = await read_as_of(store, "s", 3)
    assert [e.payload["gb"] for e in as_of_3] == [0, 1, 2]
    assert len(await read_as_of(store, "s", 99)) == 6


async def test_fork_copies_history_then_diverges(store: SqlStore) -> None:
    """A fork at offset 2 holds the first two events (naming their originals) and then lives
    on its own; the source is untouched."""
    for i in range(4):
        await publish(
            store,
            REGISTRY,
            "main",
            OfferProposed(customer="1", discount=i / 10),
            from_model=True,
            model_version="v1",
            prompt_hash=f"h{i}",
        )
    forked = await fork_stream(store, "main", 2, "what-if")
    assert forked == Forked("main", "what-if", 2, 2)
    await publish(store, REGISTRY, "what-if", OfferProposed(customer="1", discount=0.05))
    branch = await store.read_stream("what-if")
    assert [e.type for e in branch] == ["OfferProposed", "OfferProposed", "forked", "OfferProposed"]
    source = await store.read_stream("main")
    assert [b.causation_id for b in branch[:2]] == [str(e.seq) for e in source[:2]]
    assert [b.prompt_hash for b in branch[:2]] == ["h0", "h1"]
    assert len(source) == 4
    assert isinstance(await fork_stream(store, "main", 2, "what-if"), Duplicate)


@pytest.mark.slow
async def test_consumer_killed_mid_stream_resumes_without_double_applying(
    store_url: str, store: SqlStore
) -> None:
    """A consumer process SIGKILLed mid-stream, restarted, applies every event exactly once."""
    unit = UnitOfWork()
    for i in range(300):
        unit.append_event("credits-in", "UsageSpiked", {"customer": str(i), "gb": i})
    await store.apply(unit)

    async def applied() -> int:
        return await store.get_offset("ledger", "credits-in")

    for target in (40, 90, 160):
        p = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "tests._pattern_worker", "consume", store_url, "credits-in"],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        assert await kill_at_progress(p, applied, target), "the consumer finished before its kill"
    offset_after_kills = await store.get_offset("ledger", "credits-in")
    assert 0 < offset_after_kills < 300, "the kills should land mid-stream"
    final = subprocess.run(  # noqa: ASYNC221 - the test waits for the process on purpose
        [sys.executable, "-m", "tests._pattern_worker", "consume", store_url, "credits-in"],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout.splitlines()[-1])["handled"] == 300 - offset_after_kills
    assert await store.get_offset("ledger", "credits-in") == 300
    for e in await store.read_stream("credits-in", limit=1000):
        commit = await store.get_commit(f"applied:{e.seq}")
        assert commit is not None and commit.result == e.payload
