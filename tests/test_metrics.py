"""Metrics and alerts from the store (DESIGN §3 observability): exact figures for a window and
a kind, alerts raised exactly when their rule says and only once, Prometheus text, the CLI."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pydantic
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from seamline.boundary import Committed, Reject, RejectSignal, Runtime
from seamline.cli import app
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.metrics import (
    AlertRules,
    compute_metrics,
    evaluate_alerts,
    list_alerts,
    metrics_by_kind,
    parse_window,
    prometheus_text,
    render_prometheus,
)
from seamline.models import ScriptedModel
from seamline.store import RunRecord, RunStatus, SpanRecord, SqlStore, UnitOfWork, open_store
from seamline.telemetry import configure_tracing, flush_spans, shutdown_tracing_sync
from seamline.tools import HardenedTool, ToolError
from tests._offers import GOOD, Customer, offer_boundary
from tests.conftest import T0

runner = CliRunner()
DAY = timedelta(days=1)
SINCE, UNTIL = T0, T0 + DAY


def ending(
    id: str,
    *,
    at: datetime,
    kind: str = "renewal",
    status: RunStatus = "committed",
    attempts: int = 1,
    cost: str = "0.001",
    latency_ms: float = 100.0,
    cu: float | None = 0.5,
    trace_id: str | None = None,
) -> RunRecord:
    return RunRecord(
        id=id,
        run_id=f"job/{id}",
        boundary="offer",
        kind=kind,
        status=status,
        reason=None,
        attempts=attempts,
        rejects=attempts - 1,
        prompt_tokens=100,
        completion_tokens=20,
        cost=Decimal(cost),
        context_utilisation=cu,
        started_at=at - timedelta(seconds=1),
        ended_at=at,
        latency_ms=latency_ms,
        trace_id=trace_id,
    )


async def record(store: SqlStore, *runs: RunRecord) -> None:
    unit = UnitOfWork()
    for r in runs:
        unit.record_run(r)
    await store.apply(unit)


def rejected(run: RunRecord, attempt: int, *verifiers: str) -> UnitOfWork:
    rejects = tuple(
        Reject(v, f"{v}.rule{n}", "bad", "no", "fix it", True) for n, v in enumerate(verifiers)
    )
    return UnitOfWork().append_event(
        f"sdb:{run.boundary}:{run.id}",
        "rejected",
        RejectSignal(run.boundary, attempt, rejects).as_payload(),
        idempotency_key=f"{run.id}:rejected:{attempt}",
    )


def span(
    span_id: str, name: str, *, status: str = "ok", at: datetime, trace_id: str = "t1"
) -> SpanRecord:
    return SpanRecord(
        span_id, trace_id, None, name, None, at - timedelta(seconds=1), at, status, "{}"
    )


# --- run figures ---------------------------------------------------------------------------


async def test_run_figures_are_exact_for_the_window_and_kind(store: SqlStore) -> None:
    """Success, escalation, nearest-rank p95, cost per run to the micro-unit and context
    utilisation count only the kind's runs that ended in [since, until)."""
    statuses: list[RunStatus] = ["committed"] * 15 + ["escalated"] * 3 + ["failed"] * 2
    runs = [
        ending(
            f"a{n}",
            at=SINCE + timedelta(minutes=n),
            status=s,
            latency_ms=float(10 * (n + 1)),
            cost="0.000001" if n % 3 else "0.000002",
            cu=None if n == 0 else n / 100,
        )
        for n, s in enumerate(statuses)
    ]
    await record(
        store,
        *runs,
        ending("edge-in", at=SINCE, latency_ms=1.0, cu=None),
        ending("edge-out", at=UNTIL, status="failed"),
        ending("before", at=SINCE - timedelta(microseconds=1), status="failed"),
        ending("other-kind", at=SINCE + DAY / 2, kind="billing", status="failed"),
    )
    m = await compute_metrics(store, since=SINCE, until=UNTIL, kind="renewal")
    assert (m.runs, m.committed, m.escalated, m.failed, m.attempts) == (21, 16, 3, 2, 21)
    assert m.success_rate == 16 / 21 and m.escalation_rate == 3 / 21
    # latencies 1, 10, 20, ..., 200: rank ceil(0.95 * 21) = 20 is 190
    assert m.latency_p95_ms == 190.0
    # 7 runs at 0.000002 (n % 3 == 0) + 13 at 0.000001 + edge-in's 0.001 = 0.001027; / 21
    assert m.cost_total == Decimal("0.001027")
    assert m.cost_per_run == Decimal("0.000049")
    # 19 samples 0.01..0.19: mean 0.10, rank ceil(0.95 * 19) = 19 is 0.19
    assert m.context_utilisation_mean == pytest.approx(0.10, abs=1e-9)
    assert m.context_utilisation_p95 == 0.19
    everything = await compute_metrics(store, since=SINCE, until=UNTIL)
    assert (everything.kind, everything.runs, everything.failed) == (None, 22, 3)
    by_kind = await metrics_by_kind(store, since=SINCE, until=UNTIL)
    assert [(k.kind, k.runs) for k in by_kind] == [("billing", 1), ("renewal", 21)]


async def test_an_empty_window_has_no_figures_not_zeros(store: SqlStore) -> None:
    """With no runs every rate is None; with no kept spans there is no tool data."""
    await record(store, ending("late", at=UNTIL + DAY))
    m = await compute_metrics(store, since=SINCE, until=UNTIL)
    assert m.runs == 0 and m.cost_total == 0
    assert (m.success_rate, m.escalation_rate, m.cost_per_run, m.latency_p95_ms) == (
        None,
        None,
        None,
        None,
    )
    assert (m.context_utilisation_mean, m.context_utilisation_p95) == (None, None)
    assert m.verifier_rejects == () and m.gate_denials == () and m.tool_errors is None


async def test_a_backwards_window_is_refused(store: SqlStore) -> None:
    """since must be before until."""
    with pytest.raises(ConfigError, match="empty window"):
        await compute_metrics(store, since=UNTIL, until=SINCE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", timedelta(minutes=30)), ("24h", DAY), ("7d", 7 * DAY), ("1.5h", timedelta(hours=1.5))],
)
def test_windows_parse(text: str, expected: timedelta) -> None:
    """Window lengths are a number and a unit."""
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "0d", "3y", "24 hours"])
def test_bad_windows_say_what_is_expected(text: str) -> None:
    """A malformed window names the accepted form."""
    with pytest.raises(ConfigError, match="such as 24h"):
        parse_window(text)


# --- rejects, denials, tool errors ---------------------------------------------------------


async def test_reject_rate_per_verifier_counts_attempts(store: SqlStore) -> None:
    """Rate = attempts a verifier rejected (once per attempt) / all attempts of the window's
    runs of the kind; rejects of runs outside the window or kind are not counted."""
    one = ending("one", at=SINCE + timedelta(hours=1), attempts=3)
    two = ending("two", at=SINCE + timedelta(hours=2), attempts=2, status="escalated")
    three = ending("three", at=SINCE + timedelta(hours=3), attempts=3)
    out = ending("out", at=UNTIL, attempts=2)
    other = ending("other", at=SINCE + timedelta(hours=1), attempts=2, kind="billing")
    await record(store, one, two, three, out, other)
    for unit in (
        rejected(one, 1, "schema"),
        rejected(one, 2, "policy:offers", "policy:offers", "injection"),
        rejected(two, 1, "policy:offers"),
        rejected(out, 1, "schema"),
        rejected(other, 1, "schema"),
    ):
        await store.apply(unit)
    m = await compute_metrics(store, since=SINCE, until=UNTIL, kind="renewal")
    assert m.attempts == 8
    assert [(r.verifier, r.rejected_attempts, r.attempts, r.rate) for r in m.verifier_rejects] == [
        ("injection", 1, 8, 1 / 8),
        ("policy:offers", 2, 8, 2 / 8),
        ("schema", 1, 8, 1 / 8),
    ]


async def test_gate_denials_per_rule(store: SqlStore, clock: VirtualClock) -> None:
    """Denials (not allows) by gate and rule in the window; the kind is the subject's row's."""
    unit = UnitOfWork().create_row("contract-1", kind="renewal", state="open")
    unit.create_row("invoice-1", kind="billing", state="open")
    await store.apply(unit)

    async def decide(subject: str, decision: str, rule: str | None, gate: str = "outreach") -> None:
        await store.apply(
            UnitOfWork().audit(
                actor=f"gate:{gate}",
                action="send_offer",
                subject=subject,
                decision=decision,
                reason="test",
                details={"rule": rule},
            )
        )

    await decide("contract-1", "deny", "role:send_offer")  # at T0: before the window
    start = T0 + timedelta(hours=1)
    clock.advance_to(start)
    await decide("contract-1", "deny", "role:send_offer")
    await decide("contract-1", "deny", "budget")
    await decide("contract-1", "deny", "budget")
    await decide("contract-1", "allow", None)
    await decide("invoice-1", "deny", "budget", gate="credits")
    await store.apply(
        UnitOfWork().audit(
            actor="person:ann", action="approve", subject="contract-1", decision="deny", reason="-"
        )
    )
    clock.advance_to(start + DAY)
    await decide("contract-1", "deny", "budget")  # at the window's end: excluded
    m = await compute_metrics(store, since=start, until=start + DAY, kind="renewal")
    assert [(d.gate, d.rule, d.denials) for d in m.gate_denials] == [
        ("outreach", "budget", 2),
        ("outreach", "role:send_offer", 1),
    ]
    everything = await compute_metrics(store, since=start, until=start + DAY)
    assert [(d.gate, d.rule, d.denials) for d in everything.gate_denials] == [
        ("credits", "budget", 1),
        ("outreach", "budget", 2),
        ("outreach", "role:send_offer", 1),
    ]


async def test_tool_error_rate_per_tool_from_kept_spans(store: SqlStore) -> None:
    """Errors / calls per tool from execute_tool spans in the window, in the kind's traces;
    other spans only say that tracing was on."""
    await record(
        store,
        ending("r1", at=SINCE + timedelta(hours=1), trace_id="t1"),
        ending("b1", at=SINCE + timedelta(hours=1), kind="billing", trace_id="t2"),
    )
    at = SINCE + timedelta(hours=1)
    spans = [
        span("s1", "execute_tool lookup", at=at),
        span("s2", "execute_tool lookup", at=at, status="error"),
        span("s3", "execute_tool lookup", at=at, status="unset"),
        span("s4", "execute_tool lookup", at=at, status="error"),
        span("s5", "execute_tool send", at=at),
        span("s6", "chat sim:model", at=at),
        span("s7", "execute_tool lookup", at=UNTIL, status="error"),
        span("s8", "execute_tool lookup", at=at, status="error", trace_id="t2"),
    ]
    await store.apply(UnitOfWork().record_spans(spans))
    m = await compute_metrics(store, since=SINCE, until=UNTIL, kind="renewal")
    assert m.tool_errors is not None
    assert [(t.tool, t.calls, t.errors, t.rate) for t in m.tool_errors] == [
        ("lookup", 4, 2, 0.5),
        ("send", 1, 0, 0.0),
    ]
    billing = await compute_metrics(store, since=SINCE, until=UNTIL, kind="billing")
    assert billing.tool_errors is not None
    assert [(t.tool, t.calls, t.errors) for t in billing.tool_errors] == [("lookup", 1, 1)]
    later = await compute_metrics(store, since=UNTIL + DAY, until=UNTIL + 2 * DAY)
    assert later.tool_errors is None


class Lookup(pydantic.BaseModel):
    customer: str


class Plan(pydantic.BaseModel):
    plan: str


async def test_tool_errors_from_real_traced_tool_calls(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans of real HardenedTool calls, traced and flushed to the store, count as errors
    per tool: a tool that raises is an error, one that answers is not."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    async def down(q: Lookup) -> dict[str, str]:
        raise RuntimeError("billing API is down")

    async def up(q: Lookup) -> dict[str, str]:
        return {"plan": "basic"}

    configure_tracing(keep_spans=True)
    try:
        broken = HardenedTool("billing", down, input=Lookup, output=Plan, attempts=1)
        working = HardenedTool("usage", up, input=Lookup, output=Plan)
        for _ in range(2):
            assert isinstance(await broken.call({"customer": "c1"}), ToolError)
        assert not isinstance(await working.call({"customer": "c1"}), ToolError)
        assert await flush_spans(store) == 3
    finally:
        shutdown_tracing_sync()
    now = datetime.now(UTC)
    m = await compute_metrics(store, since=now - DAY, until=now + DAY)
    assert m.tool_errors is not None
    assert [(t.tool, t.calls, t.errors, t.rate) for t in m.tool_errors] == [
        ("billing", 2, 2, 1.0),
        ("usage", 1, 0, 0.0),
    ]


# --- alerts --------------------------------------------------------------------------------

NOW = T0 + timedelta(days=8, minutes=30)  # windows: [T0, T0+7d) and [T0+7d, T0+8d)
CURRENT = T0 + timedelta(days=7, hours=12)


async def seed(
    store: SqlStore, *, base_failed: int, now_failed: int, now_cost: str, n: int = 20
) -> None:
    runs = [
        ending(
            f"b{i}",
            at=T0 + timedelta(hours=i),
            status="failed" if i < base_failed else "committed",
            cost="0.001",
        )
        for i in range(n)
    ]
    runs += [
        ending(
            f"c{i}",
            at=CURRENT + timedelta(minutes=i),
            cost=now_cost,
            status="failed" if i < now_failed else "committed",
        )
        for i in range(n)
    ]
    await record(store, *runs)


async def test_success_drop_alert_is_raised_once(store: SqlStore) -> None:
    """A drop of more than 10 points from the baseline raises one alert however often the
    rules are evaluated in the same period."""
    await seed(store, base_failed=0, now_failed=3, now_cost="0.001")  # 100% -> 85%
    [alert] = await evaluate_alerts(store, "renewal", NOW)
    assert (alert.name, alert.kind) == ("success_rate_drop", "renewal")
    assert (alert.since, alert.until) == (T0 + timedelta(days=7), T0 + timedelta(days=8))
    assert (alert.observed, alert.baseline, alert.threshold) == ("0.850000", "1.000000", "0.900000")
    assert "85.0%" in alert.message and "100.0%" in alert.message
    again = await evaluate_alerts(store, None, NOW + timedelta(minutes=20))
    assert again == [alert]
    assert await list_alerts(store) == [alert]
    assert len(await store.read_stream("alerts")) == 1


async def test_a_drop_of_ten_points_or_fewer_runs_does_not_page(store: SqlStore) -> None:
    """Exactly 10 points is not more than 10; under min_runs nothing is judged."""
    await seed(store, base_failed=0, now_failed=2, now_cost="0.001")  # 100% -> 90%
    assert await evaluate_alerts(store, "renewal", NOW) == []
    assert await evaluate_alerts(store, "renewal", NOW, rules=AlertRules(min_runs=21)) == []
    assert await list_alerts(store) == []


async def test_cost_spike_alert_is_above_twice_the_rolling_average(store: SqlStore) -> None:
    """Cost per run above 2x the preceding window's raises; exactly 2x does not."""
    await seed(store, base_failed=0, now_failed=0, now_cost="0.002")
    assert await evaluate_alerts(store, "renewal", NOW) == []
    await record(store, ending("c0", at=CURRENT, cost="0.00202"))  # mean now 0.002001
    [alert] = await evaluate_alerts(store, "renewal", NOW)
    assert (alert.name, alert.observed, alert.baseline, alert.threshold) == (
        "cost_per_run_spike",
        "0.002001",
        "0.001000",
        "0.002000",
    )


async def test_alert_rules_refuse_nonsense() -> None:
    """Bounded configuration: windows positive, a drop is a share, a factor exceeds 1."""
    with pytest.raises(ConfigError, match="window"):
        AlertRules(window=timedelta(0))
    with pytest.raises(ConfigError, match="max_success_drop"):
        AlertRules(max_success_drop=10)
    with pytest.raises(ConfigError, match="cost_factor"):
        AlertRules(cost_factor=Decimal("0.5"))
    with pytest.raises(ConfigError, match="min_runs"):
        AlertRules(min_runs=0)


# --- Prometheus ----------------------------------------------------------------------------


async def test_prometheus_text_parses_with_labels(store: SqlStore) -> None:
    """Gauges per kind (and verifier, gate and rule, tool); no series for a figure without data."""
    one = ending("one", at=SINCE + timedelta(hours=1), attempts=2, latency_ms=250.0, trace_id="t1")
    await record(
        store,
        one,
        ending("two", at=SINCE + timedelta(hours=2), kind="billing", status="failed", cu=None),
    )
    await store.apply(rejected(one, 1, "schema"))
    await store.apply(UnitOfWork().create_row("c1", kind="renewal", state="open"))
    await store.apply(
        UnitOfWork().audit(
            actor="gate:outreach",
            action="send",
            subject="c1",
            decision="deny",
            reason="r",
            details={"rule": "budget"},
        )
    )
    await store.apply(
        UnitOfWork().record_spans(
            [span("s1", "execute_tool lookup", at=SINCE + DAY / 2, status="error")]
        )
    )
    text = await prometheus_text(store, window=DAY, now=UNTIL)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples[("seamline_window_seconds", ())] == 86400
    assert samples[("seamline_runs", (("kind", "renewal"),))] == 1
    assert samples[("seamline_run_success_ratio", (("kind", "renewal"),))] == 1.0
    assert samples[("seamline_run_success_ratio", (("kind", "billing"),))] == 0.0
    assert samples[("seamline_run_cost_per_run", (("kind", "renewal"),))] == 0.001
    assert samples[("seamline_run_latency_p95_seconds", (("kind", "renewal"),))] == 0.25
    assert samples[("seamline_context_utilisation_mean_ratio", (("kind", "renewal"),))] == 0.5
    assert ("seamline_context_utilisation_mean_ratio", (("kind", "billing"),)) not in samples
    verifier = (("kind", "renewal"), ("verifier", "schema"))
    assert samples[("seamline_verifier_reject_ratio", verifier)] == 0.5
    rule = (("gate", "outreach"), ("kind", "renewal"), ("rule", "budget"))
    assert samples[("seamline_gate_denials", rule)] == 1
    tool = (("kind", "renewal"), ("tool", "lookup"))
    assert samples[("seamline_tool_calls", tool)] == 1
    assert samples[("seamline_tool_error_ratio", tool)] == 1.0


def test_prometheus_text_of_nothing_is_valid() -> None:
    """No kinds: only HELP and TYPE lines, which still parse."""
    families = list(text_string_to_metric_families(render_prometheus([]).decode()))
    assert all(not f.samples for f in families)


# --- end to end ----------------------------------------------------------------------------


async def test_a_real_boundary_shows_in_the_metrics(store: SqlStore, clock: VirtualClock) -> None:
    """A boundary that is rejected once by policy and then commits is one committed run of
    two attempts, with the policy verifier's reject rate at 1/2 and its cost recorded."""
    model = ScriptedModel(
        [
            json.dumps({**GOOD, "customer": "c1", "discount": "0.90"}),
            json.dumps({**GOOD, "customer": "c1"}),
        ]
    )
    result = await offer_boundary(model).run(
        Customer(id="c1"), runtime=Runtime(store, clock), run_id="run"
    )
    assert isinstance(result, Committed)
    [run] = await store.list_runs()
    m = await compute_metrics(store, since=SINCE, until=SINCE + DAY, kind=run.kind)
    assert (m.runs, m.committed, m.attempts, m.success_rate) == (1, 1, 2, 1.0)
    assert m.cost_total == run.cost and m.latency_p95_ms == run.latency_ms
    assert m.context_utilisation_p95 == run.context_utilisation
    assert [(r.verifier, r.rejected_attempts, r.rate) for r in m.verifier_rejects] == [
        ("policy:test-offers", 1, 0.5)
    ]


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
async def populated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = open_store(url)
    try:
        one = ending("one", at=SINCE + timedelta(hours=1), attempts=2, latency_ms=250.0)
        await record(store, one, ending("two", at=SINCE + timedelta(hours=2), status="escalated"))
        await store.apply(rejected(one, 1, "schema"))
    finally:
        await store.close()
    return url


def test_cli_prints_a_table_per_kind(populated: str) -> None:
    """The figures of each kind for --since/--until, and the alerts when asked for."""
    result = runner.invoke(
        app,
        [
            "metrics",
            "--store",
            populated,
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-01-02T00:00:00Z",
            "--alerts",
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "renewal: 2026-01-01 00:00 to 2026-01-02 00:00 UTC" in out
    assert "2 (1 / 1 / 0)" in out and "50.0%" in out and "250.0 ms" in out
    assert "rejects: schema" in out and "33.3% (1/3)" in out
    assert "no spans kept" in out and "alerts: none" in out


def test_cli_json_is_machine_readable(populated: str) -> None:
    """--json prints the same figures as JSON: money as exact strings."""
    result = runner.invoke(
        app,
        [
            "metrics",
            "--store",
            populated,
            "--kind",
            "renewal",
            "--window",
            "2d",
            "--until",
            "2026-01-02T00:00:00+00:00",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    [m] = body["metrics"]
    assert (m["kind"], m["runs"], m["cost_per_run"], m["success_rate"]) == (
        "renewal",
        2,
        "0.001000",
        0.5,
    )
    assert m["since"] == "2025-12-31T00:00:00Z" and body["alerts"] is None


def test_cli_on_an_empty_window_says_where_the_runs_are(populated: str) -> None:
    """A window with no runs says so and points at the newest run (virtual-time stores)."""
    result = runner.invoke(app, ["metrics", "--store", populated], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "no runs ended between" in result.output
    assert "the newest run ended at 2026-01-01T02:00:00+00:00" in result.output


def test_cli_on_an_empty_store(tmp_path: Path) -> None:
    """A store with no runs says so and prints no table; a missing one is an error."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    asyncio.run(open_store(url).close())
    result = runner.invoke(app, ["metrics", "--store", url], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "no runs ended between" in result.output and "newest" not in result.output
    assert "figure" not in result.output
    missing = runner.invoke(app, ["metrics", "--store", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no store at" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "yesterday"], "such as 24h"),
        (["--since", "last week"], "ISO-8601"),
        (["--since", "2026-01-01", "--window", "24h"], "not both"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], "empty window"),
    ],
)
def test_cli_bad_input_is_a_clear_error(populated: str, args: list[str], message: str) -> None:
    """Bad window arguments exit 2 with what was expected, like every command's ConfigError."""
    result = runner.invoke(app, ["metrics", "--store", populated, *args], terminal_width=200)
    assert result.exit_code == 2
    assert "ConfigError" in result.output and message in result.output


def test_the_docs_sample_matches_a_fresh_renewals_run(tmp_path: Path) -> None:
    """docs/metrics.md's table is what `seamline metrics` prints after the renewals demo
    (every row but p95 latency, which is wall time)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text("utf-8")
    [block] = re.findall(r"```text\n(\$ seamline metrics .*?)```", text, flags=re.DOTALL)
    url = f"sqlite:///{tmp_path / 'm.db'}"
    demo = ["renewals", "run", "--limit", "200", "--store", url]
    made = runner.invoke(app, [*demo, "--report", str(tmp_path / "r.html")])
    assert made.exit_code == 0, made.output
    args = block.splitlines()[0].split()[2:]
    args[args.index("--store") + 1] = url
    result = runner.invoke(app, args, terminal_width=80)
    assert result.exit_code == 0, result.output

    def rows(out: str) -> list[str]:
        found = [" ".join(line.split()) for line in out.splitlines() if line.startswith("│")]
        return [r for r in found if "p95 latency" not in r]

    assert rows(result.output) == rows(block)
    assert "alerts: none" in result.output
