"""Metrics over a window of the store: the figures, as one frozen value per workflow kind.

Reads are a handful of store aggregates (``run_stats``, ``run_events``, ``audit_window``,
``span_counts``); turning them into figures is pure (:func:`figures_from`), so every figure
has one definition that the tests, the docs and the Prometheus names share.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from seamline.errors import ConfigError
from seamline.store import AuditEntry, Event, RunStats, SpanCount, Store
from seamline.telemetry import STATUS_ERROR

__all__ = [
    "GATE_ACTOR_PREFIX",
    "TOOL_SPAN_PREFIX",
    "Metrics",
    "RuleDenials",
    "ToolErrors",
    "VerifierRejects",
    "compute_metrics",
    "figures_from",
    "metrics_by_kind",
    "parse_window",
]

TOOL_SPAN_PREFIX = "execute_tool "
"""Tool spans are named ``execute_tool {tool}`` (OpenTelemetry GenAI conventions)."""
GATE_ACTOR_PREFIX = "gate:"
"""P4 gates audit as ``gate:{name}``."""
MICRO = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class VerifierRejects:
    """Attempts one verifier rejected, out of every attempt of the runs in the window."""

    verifier: str
    rejected_attempts: int
    attempts: int
    rate: float | None


@dataclass(frozen=True, slots=True)
class RuleDenials:
    """Denials by one rule of one gate."""

    gate: str
    rule: str
    denials: int


@dataclass(frozen=True, slots=True)
class ToolErrors:
    """Calls of one tool and how many of them ended in error."""

    tool: str
    calls: int
    errors: int
    rate: float


@dataclass(frozen=True, slots=True)
class Metrics:
    """The figures for one window ``[since, until)`` and one workflow kind (None: all).

    A figure is None when there is nothing to compute it from (no runs, no model call, no
    kept spans), never 0. ``tool_errors`` is None when no span at all was kept in the window:
    tracing off is not the same as tools that never fail.
    """

    kind: str | None
    since: datetime
    until: datetime
    runs: int
    committed: int
    escalated: int
    failed: int
    attempts: int
    success_rate: float | None
    escalation_rate: float | None
    cost_total: Decimal
    cost_per_run: Decimal | None
    latency_p95_ms: float | None
    context_utilisation_mean: float | None
    context_utilisation_p95: float | None
    verifier_rejects: tuple[VerifierRejects, ...]
    gate_denials: tuple[RuleDenials, ...]
    tool_errors: tuple[ToolErrors, ...] | None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WINDOW = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


def parse_window(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``2w`` (also ``s``) as a positive duration."""
    match = _WINDOW.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise ConfigError(
            f"window {text!r}: expected a positive number and a unit s, m, h, d or w, "
            "such as 24h or 7d"
        )
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _verifier_rejects(events: Sequence[Event], attempts: int) -> tuple[VerifierRejects, ...]:
    # An attempt counts once per verifier, however many of that verifier's rules it broke.
    rejected: set[tuple[str, int, str]] = set()
    for event in events:
        payload: Any = event.payload
        for reject in payload.get("rejects", ()):
            rejected.add((event.stream, int(payload.get("attempt", 0)), str(reject["verifier"])))
    per = Counter(verifier for _, _, verifier in rejected)
    return tuple(
        VerifierRejects(v, per[v], attempts, _ratio(per[v], attempts)) for v in sorted(per)
    )


def _gate_denials(entries: Sequence[AuditEntry]) -> tuple[RuleDenials, ...]:
    per: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        details: Any = entry.details
        rule = details.get("rule") if isinstance(details, dict) else None
        per[(entry.actor.removeprefix(GATE_ACTOR_PREFIX), str(rule or "unknown"))] += 1
    return tuple(RuleDenials(gate, rule, n) for (gate, rule), n in sorted(per.items()))


def _tool_errors(counts: Sequence[SpanCount]) -> tuple[ToolErrors, ...] | None:
    if not counts:
        return None
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for c in counts:
        if c.name.startswith(TOOL_SPAN_PREFIX):
            tool = c.name.removeprefix(TOOL_SPAN_PREFIX)
            calls[tool] += c.count
            if c.status == STATUS_ERROR:
                errors[tool] += c.count
    return tuple(ToolErrors(t, calls[t], errors[t], errors[t] / calls[t]) for t in sorted(calls))


def figures_from(
    *,
    kind: str | None,
    since: datetime,
    until: datetime,
    stats: RunStats,
    rejected: Sequence[Event],
    denials: Sequence[AuditEntry],
    spans: Sequence[SpanCount],
) -> Metrics:
    """The figures from what the store returned for the window (pure)."""
    cost_per_run = (
        None
        if stats.runs == 0
        else (stats.cost / stats.runs).quantize(MICRO, rounding=ROUND_HALF_EVEN)
    )
    samples = stats.context_samples
    return Metrics(
        kind=kind,
        since=since,
        until=until,
        runs=stats.runs,
        committed=stats.committed,
        escalated=stats.escalated,
        failed=stats.failed,
        attempts=stats.attempts,
        success_rate=_ratio(stats.committed, stats.runs),
        escalation_rate=_ratio(stats.escalated, stats.runs),
        cost_total=stats.cost,
        cost_per_run=cost_per_run,
        latency_p95_ms=stats.latency_p95_ms,
        context_utilisation_mean=(
            None if samples == 0 else round(stats.context_utilisation_sum / samples, 9)
        ),
        context_utilisation_p95=stats.context_utilisation_p95,
        verifier_rejects=_verifier_rejects(rejected, stats.attempts),
        gate_denials=_gate_denials(denials),
        tool_errors=_tool_errors(spans),
    )


async def compute_metrics(
    store: Store, *, since: datetime, until: datetime, kind: str | None = None
) -> Metrics:
    """The figures for runs that ended in ``[since, until)``, of ``kind`` (None: all kinds)."""
    if until <= since:
        raise ConfigError(f"empty window: since {since.isoformat()} is not before {until}")
    return figures_from(
        kind=kind,
        since=since,
        until=until,
        stats=await store.run_stats(kind=kind, since=since, until=until),
        rejected=await store.run_events("rejected", kind=kind, since=since, until=until),
        denials=await store.audit_window(
            actor_prefix=GATE_ACTOR_PREFIX, decision="deny", kind=kind, since=since, until=until
        ),
        spans=await store.span_counts(kind=kind, since=since, until=until),
    )


async def metrics_by_kind(store: Store, *, since: datetime, until: datetime) -> list[Metrics]:
    """One :class:`Metrics` per workflow kind that has ever recorded an ending, by name."""
    return [
        await compute_metrics(store, since=since, until=until, kind=kind)
        for kind in await store.run_kinds()
    ]
