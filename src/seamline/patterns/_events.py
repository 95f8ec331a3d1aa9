"""P3, event-driven sequencing: the durable log as the source of truth.

Events are typed (pydantic models, named by a registry), appended to streams in the store's
global order, and carry ``model_version`` and ``prompt_hash`` whenever a model produced them
(publishing model output without them is refused). A consumer keeps a durable offset per
stream and advances it **in the same unit of work** as the writes its handler makes: delivery
is at least once, and the offset's compare-and-swap makes the handling idempotent — a consumer
killed mid-stream resumes at its offset and applies nothing twice. Streams can be read as of
an offset (time travel) and forked at an offset into a branch that then lives on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import pydantic

from seamline.errors import ConfigError
from seamline.store import Applied, Duplicate, Event, Outcome, StaleOffset, Store, UnitOfWork

__all__ = ["Consumer", "EventRegistry", "Forked", "fork_stream", "publish", "read_as_of"]


class EventRegistry:
    """Event types by name: what ``publish`` writes and ``decode`` reads back."""

    def __init__(self, types: Iterable[type[pydantic.BaseModel]] = ()) -> None:
        self._by_name: dict[str, type[pydantic.BaseModel]] = {}
        for t in types:
            self.register(t)

    def register(self, type_: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
        name = type_.__name__
        if name in self._by_name and self._by_name[name] is not type_:
            raise ConfigError(f"two event types are named {name!r}")
        self._by_name[name] = type_
        return type_

    def name_of(self, event: pydantic.BaseModel) -> str:
        name = type(event).__name__
        if self._by_name.get(name) is not type(event):
            raise ConfigError(f"event type {name!r} is not registered")
        return name

    def decode(self, event: Event) -> pydantic.BaseModel:
        type_ = self._by_name.get(event.type)
        if type_ is None:
            raise ConfigError(
                f"event #{event.seq} has unregistered type {event.type!r}; "
                f"known: {sorted(self._by_name)}"
            )
        return event.payload_as(type_)


async def publish(
    store: Store,
    registry: EventRegistry,
    stream: str,
    event: pydantic.BaseModel,
    *,
    idempotency_key: str | None = None,
    causation_id: str | None = None,
    from_model: bool = False,
    model_version: str | None = None,
    prompt_hash: str | None = None,
    unit: UnitOfWork | None = None,
) -> int | Outcome:
    """Append one typed event; returns its global sequence (or the ``Duplicate`` for a used
    idempotency key). Events a model produced must say which model and prompt."""
    if from_model and not (model_version and prompt_hash):
        raise ConfigError(
            f"event {type(event).__name__} on {stream!r} came from a model but lacks "
            "model_version and prompt_hash; both are part of its identity"
        )
    work = (unit or UnitOfWork()).append_event(
        stream,
        registry.name_of(event),
        event,
        model_version=model_version,
        prompt_hash=prompt_hash,
        causation_id=causation_id,
        idempotency_key=idempotency_key,
    )
    outcome = await store.apply(work)
    if isinstance(outcome, Applied):
        return outcome.event_seqs[-1]
    return outcome


async def read_as_of(store: Store, stream: str, offset: int) -> list[Event]:
    """The stream as it stood at ``offset`` (its first ``offset`` events)."""
    events: list[Event] = []
    after = 0
    while after < offset:
        page = await store.read_stream(stream, after=after, limit=min(1000, offset - after))
        if not page:
            break
        events.extend(page)
        after = page[-1].stream_seq
    return events


@dataclass(frozen=True, slots=True)
class Forked:
    source: str
    branch: str
    at: int
    copied: int
    kind: Literal["forked"] = "forked"


async def fork_stream(store: Store, source: str, at: int, branch: str) -> Forked | Duplicate:
    """Copy ``source``'s first ``at`` events into a new stream ``branch``; each copy keeps the
    original's model identity and names it as its cause. The branch then diverges freely."""
    events = await read_as_of(store, source, at)
    unit = UnitOfWork()
    for e in events:
        unit.append_event(
            branch,
            e.type,
            e.payload,
            model_version=e.model_version,
            prompt_hash=e.prompt_hash,
            causation_id=f"{e.seq}",
            idempotency_key=f"fork:{branch}:{e.stream_seq}",
        )
    unit.append_event(
        branch, "forked", {"source": source, "at": at}, idempotency_key=f"fork:{branch}:marker"
    )
    outcome = await store.apply(unit)
    if isinstance(outcome, Duplicate):
        return outcome
    return Forked(source, branch, at, len(events))


Handler = Callable[[Event, UnitOfWork], Awaitable[None]]


class Consumer:
    """Reads a stream from its durable offset and hands each event to ``handler`` together
    with a unit of work; the handler's writes and the offset move commit together."""

    def __init__(
        self, store: Store, name: str, stream: str, handler: Handler, *, batch: int = 100
    ) -> None:
        self.store, self.name, self.stream, self.handler = store, name, stream, handler
        self.batch = batch

    async def poll(self) -> int:
        """Handle what is new; returns how many events were handled by this consumer."""
        handled = 0
        offset = await self.store.get_offset(self.name, self.stream)
        for event in await self.store.read_stream(self.stream, after=offset, limit=self.batch):
            # The offset move goes first, so a rival consumer that got here first is seen as
            # a stale offset before any of the handler's writes can conflict.
            unit = UnitOfWork().advance_offset(
                self.name, self.stream, expect=offset, to=event.stream_seq
            )
            await self.handler(event, unit)
            outcome = await self.store.apply(unit)
            if isinstance(outcome, StaleOffset):
                return handled  # another instance of this consumer got there first
            if not isinstance(outcome, Applied):
                raise ConfigError(
                    f"consumer {self.name}: handling event #{event.seq} conflicted ({outcome});"
                    " handlers must write only what this event alone decides"
                )
            offset = event.stream_seq
            handled += 1
        return handled

    async def drain(self) -> int:
        """Poll until the stream has nothing new."""
        total = 0
        while n := await self.poll():
            total += n
        return total


def events_by_type(events: Iterable[Event]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for e in events:
        counts[e.type] = counts.get(e.type, 0) + 1
    return counts
