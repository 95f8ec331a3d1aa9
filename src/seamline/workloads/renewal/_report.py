"""The renewal job's report: one self-contained HTML page with its plots inline."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files, never a window
import matplotlib.pyplot as plt

from seamline.workloads.renewal._agent import TERMINAL
from seamline.workloads.renewal._data import RowIssue
from seamline.workloads.renewal._summary import RenewalSummary

__all__ = ["write_report"]

_STAGES = ("offer_ready", "offer_sent", "awaiting_approval", "accepted", "churning")


def _png(draw: Callable[[Any], None], *, width: float = 7.0, height: float = 3.6) -> str:
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    try:
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _funnel(s: RenewalSummary) -> Callable[[Any], None]:
    renewed = sum(s.outcomes[k] for k in ("renewed", "renewed_with_offer", "restructured"))
    stages = [
        ("windows opened", s.customers),
        ("offers committed", s.commits),
        ("offers sent", s.offers_sent),
        ("renewed (any kind)", renewed),
        ("renewed with offer", s.outcomes["renewed_with_offer"]),
    ]

    def draw(ax: Any) -> None:
        names = [n for n, _ in stages][::-1]
        values = [v for _, v in stages][::-1]
        ax.barh(names, values, color="#3b6ea5")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,}", va="center")
        ax.set_title("Outcome funnel")
        ax.set_xlim(0, max([*values, 1]) * 1.15)

    return draw


def _timeline(s: RenewalSummary) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        drawn = 0
        for state in (*_STAGES, *TERMINAL):
            days = s.entered.get(state)
            if not days:
                continue
            xs = sorted(set(days) | {0})
            total, ys = 0, []
            for x in xs:
                total += days.get(x, 0)
                ys.append(total)
            ax.step([*xs, 91], [*ys, total], where="post", label=state)
            drawn += 1
        ax.set_xlabel("day of the renewal window (0 = day -90, 90 = day 0)")
        ax.set_ylabel("instances that reached it")
        ax.set_xlim(0, 91)
        ax.set_title("States reached over the 90 days")
        if drawn:
            ax.legend(fontsize=7, ncol=2)
        else:  # nothing moved yet: say so rather than draw an empty legend
            ax.text(45, 0.5, "no state reached yet", ha="center", va="center")
            ax.set_ylim(0, 1)

    return draw


def _rejects(s: RenewalSummary) -> Callable[[Any], None]:
    items = s.rejects.most_common(10)[::-1]

    def draw(ax: Any) -> None:
        ax.barh([k for k, _ in items] or ["none"], [v for _, v in items] or [0], color="#c0504d")
        ax.set_title("Rejects by verifier and reason (top 10)")
        ax.tick_params(axis="y", labelsize=7)

    return draw


def _costs(s: RenewalSummary) -> Callable[[Any], None]:
    values = [float(v) * 1000 for v in s.cost_by_customer.values()]

    def draw(ax: Any) -> None:
        ax.hist(values or [0], bins=30, color="#4f9d69")
        ax.set_xlabel("simulated model cost per contract (thousandths of a currency unit)")
        ax.set_ylabel("contracts")
        ax.set_title("Cost per run")

    return draw


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(a)}</td><td class=n>{html.escape(b)}</td></tr>" for a, b in rows
    )
    return f"<table>{body}</table>"


def _grid(header: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    """A table with a header row; ``empty`` says what an empty one means."""
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _issues(issues: Sequence[RowIssue]) -> str:
    return _grid(
        ("line", "customer", "column", "action", "rule", "problem"),
        [
            (i.line, i.customer_id or "", i.column or "(whole row)", i.action, i.rule, i.problem)
            for i in issues
        ],
        "Every row of the data was valid as read: nothing was repaired or skipped.",
    )


def _unfinished(s: RenewalSummary) -> str:
    if not s.unfinished:
        return ""
    stuck = ", ".join(f"{state} {n:,}" for state, n in s.unfinished.most_common())
    errors = "".join(
        f"<li>{n:,} times: {html.escape(e)}</li>" for e, n in s.step_failures.most_common(5)
    )
    return (
        f"<p class=bad>{sum(s.unfinished.values()):,} contracts ended outside a final state "
        f"({html.escape(stuck)}). Failed steps:</p><ul>{errors}</ul>"
    )


def write_report(
    s: RenewalSummary,
    path: Path,
    *,
    title: str,
    notes: list[str],
    issues: Sequence[RowIssue] = (),
) -> Path:
    """Write the HTML report to ``path`` and return it. ``issues`` are the data loader's
    per-row reports (every repair and skip), listed in full."""
    path.parent.mkdir(parents=True, exist_ok=True)
    headline = [
        ("contracts", f"{s.customers:,}"),
        *[(f"ended {k}", f"{s.outcomes[k]:,}") for k in TERMINAL],
        ("offers sent", f"{s.offers_sent:,}"),
        ("discounts granted", f"{s.discounts_granted:,}"),
        ("mean discount granted", f"{s.mean_discount:.1%}"),
        ("escalations to a person", f"{s.escalations:,}"),
        ("gate denials", f"{sum(s.gate_denials.values()):,}"),
        ("re-assessed after a world change or a gate denial", f"{s.reassessed:,}"),
        ("offers flagged for review (above a warning line)", f"{s.review_flagged:,}"),
        ("of which sampled for human review", f"{len(s.reviews):,}"),
        ("budget fallbacks at 80%", f"{sum(s.fallbacks.values()):,}"),
        ("hallucinated discounts routed to a person", f"{s.hallucinations_escalated:,}"),
        ("injection attempts blocked", f"{s.injection_blocked:,}"),
        ("tokens (prompt + completion)", f"{s.prompt_tokens + s.completion_tokens:,}"),
        ("model cost", f"{s.cost:.4f}"),
        (
            "charged by the budget ledger (tokens, cost)",
            f"{s.charged_tokens:,}, {s.charged_cost:.4f}",
        ),
        ("wall time", f"{s.wall_seconds:.1f} s"),
    ]
    contracts = "".join(
        f"<tr><td>{html.escape(k)}</td>"
        + "".join(f"<td class=n>{c[t]:,}</td>" for t in TERMINAL)
        + "</tr>"
        for k, c in s.by_contract.items()
    )
    plots = "".join(
        f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fn)}">'
        for alt, fn in (
            ("funnel", _funnel(s)),
            ("timeline", _timeline(s)),
            ("rejects", _rejects(s)),
            ("costs", _costs(s)),
        )
    )
    reviews = _grid(
        ("customer", "boundary key", "flags", "discount", "plan"),
        [(r.customer, r.key, ", ".join(r.flags), r.discount, r.plan) for r in s.reviews],
        "No flagged offer was drawn for review.",
    )
    world = _grid(("event", "what"), s.world, "The world did not change.")
    counts = [(k, f"{v:,}") for k, v in s.reassess_reasons.most_common()]
    routes = [(k, f"{v:,}") for k, v in sorted(s.fallbacks.items())]
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{padding:.25em .8em;border-bottom:1px solid #ddd}}
td.n{{text-align:right;font-variant-numeric:tabular-nums}}img{{max-width:49%;margin:.3em 0}}
.bad{{background:#fde8e8;padding:.6em 1em;border-left:4px solid #c0392b}}
.note{{background:#fff6d6;padding:.6em 1em;border-left:4px solid #e0b000}}</style></head><body>
<h1>{html.escape(title)}</h1>
{"".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)}
{_unfinished(s)}
<h2>Summary</h2>{_table(headline)}
<h2>Outcomes by contract type</h2><table><tr><th>contract</th>
{"".join(f"<th>{t}</th>" for t in TERMINAL)}</tr>{contracts}</table>
<h2>Plots</h2>{plots}
<h2>The world's changes (catalog stream)</h2>{world}
<h2>Re-assessments by reason</h2>{_table(counts)}
<h2>Gate denials by rule</h2>{_table([(k, f"{v:,}") for k, v in s.gate_denials.most_common()])}
<h2>Rejects by verifier</h2>{_table([(k, f"{v:,}") for k, v in s.rejects.most_common()])}
<h2>Approvals and escalations</h2>{_table([(k, f"{v:,}") for k, v in sorted(s.approvals.items())])}
<h2>Budget fallbacks at 80%, by route</h2>{_table(routes)}
<h2>Sampled review ({len(s.reviews):,} of {s.review_flagged:,} flagged offers)</h2>{reviews}
<h2>Data: repaired and skipped rows ({len(issues):,})</h2>{_issues(issues)}
</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
