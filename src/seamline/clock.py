"""Time as a value the runtime is handed, never a global it reads.

``SystemClock`` is wall time. ``VirtualClock`` moves only when told to, so a 90-day workflow
runs in seconds and the same inputs always give the same timestamps. Both return aware UTC
datetimes. What is *due* is a store query (``Store.next_timer_due``); ``advance_to_next_timer``
joins the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from seamline.errors import ConfigError

if TYPE_CHECKING:
    from seamline.store import Store

__all__ = ["Clock", "SystemClock", "VirtualClock", "advance_to_next_timer"]


@runtime_checkable
class Clock(Protocol):
    """Where the runtime gets the time and how it waits."""

    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class VirtualClock:
    """A clock that moves only when advanced; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime) -> None:
        _require_aware(start, "start")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ConfigError(f"cannot sleep a negative time ({seconds} s)")
        self.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta``; virtual time never runs backwards."""
        if delta < timedelta(0):
            raise ConfigError(f"virtual time cannot move backwards (asked to advance by {delta})")
        self._now += delta
        return self._now

    def advance_to(self, instant: datetime) -> datetime:
        """Move forward to ``instant``; an instant already past leaves the clock where it is."""
        _require_aware(instant, "instant")
        self._now = max(self._now, instant.astimezone(UTC))
        return self._now

    def __repr__(self) -> str:
        return f"VirtualClock({self._now.isoformat()})"


async def advance_to_next_timer(
    clock: VirtualClock, store: Store, *, kinds: Sequence[str] | None = None
) -> datetime | None:
    """Jump ``clock`` to the earliest pending timer in ``store`` (on rows of ``kinds`` when
    given); None when nothing is pending."""
    due = await store.next_timer_due(kinds=kinds)
    if due is None:
        return None
    return clock.advance_to(due)


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(
            f"{name} must be timezone-aware (got naive {value.isoformat()}); "
            "pass e.g. datetime(2026, 1, 1, tzinfo=UTC)"
        )
