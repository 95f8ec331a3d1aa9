"""Clocks: aware UTC time, virtual time that moves only forwards and only when told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from seamline.clock import Clock, SystemClock, VirtualClock
from seamline.errors import ConfigError

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_both_clocks_satisfy_the_protocol() -> None:
    """SystemClock and VirtualClock are Clocks and return aware UTC datetimes."""
    for clock in (SystemClock(), VirtualClock(START)):
        assert isinstance(clock, Clock)
        assert clock.now().utcoffset() == timedelta(0)


async def test_virtual_sleep_advances_without_waiting() -> None:
    """Sleeping 90 days on a virtual clock moves it 90 days at once."""
    clock = VirtualClock(START)
    await clock.sleep(timedelta(days=90).total_seconds())
    assert clock.now() == START + timedelta(days=90)


def test_virtual_clock_never_runs_backwards() -> None:
    """advance refuses negative steps; advance_to an earlier instant keeps the clock still."""
    clock = VirtualClock(START)
    with pytest.raises(ConfigError, match="backwards"):
        clock.advance(timedelta(seconds=-1))
    clock.advance(timedelta(days=2))
    assert clock.advance_to(START) == START + timedelta(days=2)


def test_virtual_clock_normalises_offsets_to_utc() -> None:
    """An instant given with an offset is held as the same instant in UTC."""
    ist = timezone(timedelta(hours=5, minutes=30))
    clock = VirtualClock(datetime(2026, 1, 1, 5, 30, tzinfo=ist))
    assert clock.now() == START
    assert clock.now().tzinfo == UTC


def test_naive_datetimes_are_refused() -> None:
    """A naive start time is ambiguous and is refused with an example of the fix."""
    with pytest.raises(ConfigError, match="timezone-aware"):
        VirtualClock(datetime(2026, 1, 1))
