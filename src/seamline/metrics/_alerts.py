"""Alerts: success rate below its baseline, cost per run above a multiple of its average.

The decision is pure (:func:`alerts_for`) over two :class:`Metrics` values: the current window
and the longer window just before it. Raised alerts are events on stream ``alerts`` under an
idempotency key per (alert, kind, window), so evaluating again finds the same windows and
writes nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from seamline.errors import ConfigError
from seamline.metrics._compute import Metrics, compute_metrics
from seamline.store import Event, Store, UnitOfWork

__all__ = [
    "ALERT_STREAM",
    "Alert",
    "AlertName",
    "AlertRules",
    "alerts_for",
    "evaluate_alerts",
    "list_alerts",
]

ALERT_STREAM = "alerts"
ALERT_RAISED = "alert_raised"
AlertName = Literal["success_rate_drop", "cost_per_run_spike"]
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AlertRules:
    """When to alert. Windows end at ``now`` rounded down to ``align``, so every evaluation
    within one ``align`` period looks at the same windows."""

    window: timedelta = timedelta(hours=24)
    """The current window."""
    baseline: timedelta = timedelta(days=7)
    """The window just before the current one that the current one is compared with."""
    align: timedelta = timedelta(hours=1)
    min_runs: int = 20
    """Both windows need at least this many runs, so one failure among few runs never pages."""
    max_success_drop: float = 0.10
    """Alert when the success rate is more than this (a share, 0.10 = 10 points) below the
    baseline's."""
    cost_factor: Decimal = Decimal(2)
    """Alert when cost per run is above this multiple of the baseline's."""

    def __post_init__(self) -> None:
        for name in ("window", "baseline", "align"):
            if getattr(self, name) <= timedelta(0):
                raise ConfigError(f"AlertRules.{name} must be positive, got {getattr(self, name)}")
        if self.min_runs < 1:
            raise ConfigError(f"AlertRules.min_runs must be at least 1, got {self.min_runs}")
        if not 0 <= self.max_success_drop < 1:
            raise ConfigError(
                f"AlertRules.max_success_drop is a share in [0, 1), got {self.max_success_drop}"
            )
        if self.cost_factor <= 1:
            raise ConfigError(f"AlertRules.cost_factor must exceed 1, got {self.cost_factor}")

    def windows(self, now: datetime) -> tuple[datetime, datetime, datetime]:
        """(baseline start, current start, current end) for an evaluation at ``now``."""
        end = now - (now - _EPOCH) % self.align
        return end - self.window - self.baseline, end - self.window, end


@dataclass(frozen=True, slots=True)
class _Raised:
    """What an ``alert_raised`` event carries."""

    name: AlertName
    kind: str
    since: datetime
    until: datetime
    observed: str
    baseline: str
    threshold: str
    message: str


@dataclass(frozen=True, slots=True)
class Alert:
    """A raised alert: ``observed`` in ``[since, until)`` against ``baseline`` over the
    window before it; ``threshold`` is the value ``observed`` crossed. ``seq`` and
    ``raised_at`` are the alert event's."""

    name: AlertName
    kind: str
    since: datetime
    until: datetime
    observed: str
    baseline: str
    threshold: str
    message: str
    seq: int
    raised_at: datetime


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def alerts_for(current: Metrics, before: Metrics, rules: AlertRules) -> list[_Raised]:
    """The alerts the two windows call for (pure)."""
    kind = current.kind or "*"
    if current.runs < rules.min_runs or before.runs < rules.min_runs:
        return []
    found: list[_Raised] = []
    now_rate, base_rate = current.success_rate, before.success_rate
    if now_rate is not None and base_rate is not None:
        floor = base_rate - rules.max_success_drop
        # exact, so a drop of exactly the threshold never fires on a float rounding
        exact_now = Fraction(current.committed, current.runs)
        exact_floor = Fraction(before.committed, before.runs) - Fraction(
            str(rules.max_success_drop)
        )
        if exact_now < exact_floor:
            found.append(
                _Raised(
                    "success_rate_drop",
                    kind,
                    current.since,
                    current.until,
                    f"{now_rate:.6f}",
                    f"{base_rate:.6f}",
                    f"{floor:.6f}",
                    f"{kind}: success rate {_pct(now_rate)} over {current.runs} runs is more "
                    f"than {rules.max_success_drop * 100:.1f} points below its baseline "
                    f"{_pct(base_rate)} over {before.runs} runs",
                )
            )
    now_cost, base_cost = current.cost_per_run, before.cost_per_run
    if now_cost is not None and base_cost is not None and base_cost > 0:
        ceiling = base_cost * rules.cost_factor
        if now_cost > ceiling:
            found.append(
                _Raised(
                    "cost_per_run_spike",
                    kind,
                    current.since,
                    current.until,
                    str(now_cost),
                    str(base_cost),
                    str(ceiling),
                    f"{kind}: cost per run {now_cost} over {current.runs} runs is above "
                    f"{rules.cost_factor}x its rolling average {base_cost} over "
                    f"{before.runs} runs",
                )
            )
    return found


def _key(r: _Raised) -> str:
    return f"alert:{r.name}:{r.kind}:{r.since.isoformat()}/{r.until.isoformat()}"


def _alert(event: Event) -> Alert:
    raised = event.payload_as(_Raised)
    values = {f.name: getattr(raised, f.name) for f in fields(_Raised)}
    return Alert(**values, seq=event.seq, raised_at=event.recorded_at)


async def evaluate_alerts(
    store: Store, kind: str | None, now: datetime, *, rules: AlertRules | None = None
) -> list[Alert]:
    """Check ``kind`` (None: every kind with recorded runs) at ``now``; write each alert the
    windows call for once, and return them all (already written ones included)."""
    rules = rules or AlertRules()
    start, cut, end = rules.windows(now)
    kinds = [kind] if kind is not None else await store.run_kinds()
    alerts: list[Alert] = []
    for k in kinds:
        current = await compute_metrics(store, since=cut, until=end, kind=k)
        before = await compute_metrics(store, since=start, until=cut, kind=k)
        for raised in alerts_for(current, before, rules):
            key = _key(raised)
            unit = UnitOfWork().append_event(
                ALERT_STREAM, ALERT_RAISED, raised, idempotency_key=key
            )
            await store.apply(unit)  # a Duplicate outcome: raised by an earlier evaluation
            event = await store.event_by_key(key)
            if event is not None:
                alerts.append(_alert(event))
    return alerts


async def list_alerts(store: Store, *, limit: int = 100) -> list[Alert]:
    """Raised alerts, newest first."""
    events: list[Event] = []
    after = 0
    while batch := await store.read_stream(ALERT_STREAM, after=after, limit=1000):
        events += batch
        after = batch[-1].stream_seq
    return [_alert(e) for e in reversed(events) if e.type == ALERT_RAISED][:limit]
