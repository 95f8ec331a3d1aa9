"""Prometheus exposition of :class:`Metrics`.

prometheus_client collectors are synchronous and store reads are not, so the figures are
computed first (async) and a :class:`MetricsCollector` only turns those values into gauge
families. ``prometheus_client`` is imported lazily: it comes with the ``console`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from seamline.errors import ConfigError
from seamline.metrics._compute import Metrics, metrics_by_kind
from seamline.store import Store

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["METRIC_NAMES", "MetricsCollector", "prometheus_text", "render_prometheus"]

METRIC_NAMES = (
    "seamline_window_seconds",
    "seamline_runs",
    "seamline_run_success_ratio",
    "seamline_run_escalation_ratio",
    "seamline_run_cost_per_run",
    "seamline_run_latency_p95_seconds",
    "seamline_context_utilisation_mean_ratio",
    "seamline_context_utilisation_p95_ratio",
    "seamline_verifier_reject_ratio",
    "seamline_gate_denials",
    "seamline_tool_calls",
    "seamline_tool_error_ratio",
)


def _require() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:  # pragma: no cover - the dev install has it
        raise ConfigError(
            "Prometheus exposition needs prometheus-client: pip install 'seamline[console]'"
        ) from None


class MetricsCollector:
    """A prometheus_client collector over already computed figures (one per kind)."""

    def __init__(self, metrics: Sequence[Metrics]) -> None:
        self._metrics = tuple(metrics)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["kind", *labels])

        window = GaugeMetricFamily(
            "seamline_window_seconds", "Length of the window the figures cover."
        )
        runs = gauge("seamline_runs", "Boundary instances that ended in the window.")
        success = gauge("seamline_run_success_ratio", "Committed runs / runs.")
        escalation = gauge("seamline_run_escalation_ratio", "Escalated runs / runs.")
        cost = gauge(
            "seamline_run_cost_per_run", "Model spend per run, in the price table's currency."
        )
        latency = gauge("seamline_run_latency_p95_seconds", "Nearest-rank p95 of run latency.")
        cu_mean = gauge(
            "seamline_context_utilisation_mean_ratio",
            "Mean of each run's largest prompt / context window.",
        )
        cu_p95 = gauge(
            "seamline_context_utilisation_p95_ratio",
            "Nearest-rank p95 of each run's largest prompt / context window.",
        )
        rejects = gauge(
            "seamline_verifier_reject_ratio",
            "Attempts a verifier rejected / all attempts.",
            ["verifier"],
        )
        denials = gauge("seamline_gate_denials", "Gate denials in the window.", ["gate", "rule"])
        tool_calls = gauge("seamline_tool_calls", "Kept tool-call spans.", ["tool"])
        tool_errors = gauge(
            "seamline_tool_error_ratio", "Tool calls that ended in error / calls.", ["tool"]
        )
        for m in self._metrics:
            k = m.kind or "*"
            if not window.samples:
                window.add_metric([], (m.until - m.since).total_seconds())
            runs.add_metric([k], m.runs)
            for family, value in (
                (success, m.success_rate),
                (escalation, m.escalation_rate),
                (cost, None if m.cost_per_run is None else float(m.cost_per_run)),
                (latency, None if m.latency_p95_ms is None else m.latency_p95_ms / 1000),
                (cu_mean, m.context_utilisation_mean),
                (cu_p95, m.context_utilisation_p95),
            ):
                if value is not None:  # no data is an absent series, not a zero
                    family.add_metric([k], value)
            for r in m.verifier_rejects:
                if r.rate is not None:
                    rejects.add_metric([k, r.verifier], r.rate)
            for d in m.gate_denials:
                denials.add_metric([k, d.gate, d.rule], d.denials)
            for t in m.tool_errors or ():
                tool_calls.add_metric([k, t.tool], t.calls)
                tool_errors.add_metric([k, t.tool], t.rate)
        yield from (window, runs, success, escalation, cost, latency, cu_mean, cu_p95)
        yield from (rejects, denials, tool_calls, tool_errors)


def render_prometheus(metrics: Sequence[Metrics]) -> bytes:
    """The Prometheus text exposition of ``metrics``."""
    _require()
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(metrics))
    return generate_latest(registry)


async def prometheus_text(
    store: Store, *, window: timedelta = timedelta(hours=1), now: datetime | None = None
) -> bytes:
    """The figures of every kind over ``[now - window, now)``, as Prometheus text."""
    _require()
    until = now or datetime.now(UTC)
    return render_prometheus(await metrics_by_kind(store, since=until - window, until=until))
