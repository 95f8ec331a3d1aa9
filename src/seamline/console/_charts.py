"""Metric charts for the console: runs, success rate, cost per run and p95 latency per day,
from the same figures as ``seamline metrics``, drawn server-side as SVG (matplotlib, no
scripts in the page)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

from seamline.metrics import Metrics, compute_metrics
from seamline.store import Store

__all__ = ["charts", "daily_metrics"]


async def daily_metrics(
    store: Store, *, kind: str | None, days: int, now: datetime
) -> list[Metrics]:
    """One :class:`Metrics` per UTC day, the last ``days`` days up to and including today."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    return [
        await compute_metrics(store, kind=kind, since=s, until=s + timedelta(days=1))
        for s in starts
    ]


async def charts(store: Store, *, kind: str | None, days: int, now: datetime) -> str:
    """Four small charts over the last ``days`` days, as one inline SVG document."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    daily = await daily_metrics(store, kind=kind, days=days, now=now)
    x = [m.since for m in daily]
    panels: list[tuple[str, list[float | None], str]] = [
        ("runs ended", [float(m.runs) for m in daily], "C0"),
        ("success rate", [m.success_rate for m in daily], "C2"),
        (
            "cost per run ($)",
            [None if m.cost_per_run is None else float(m.cost_per_run) for m in daily],
            "C1",
        ),
        ("p95 latency (ms)", [m.latency_p95_ms for m in daily], "C3"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 2.8), layout="constrained")
    for ax, (title, ys, colour) in zip(axes, panels, strict=True):
        points = [(a, b) for a, b in zip(x, ys, strict=True) if b is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour)
        else:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1.05)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]
