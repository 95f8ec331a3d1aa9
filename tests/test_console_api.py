"""The console's endpoints: authentication, roles, CSRF, and what each page and API call
shows and does, over a renewal job paused with escalations waiting (both backends)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from seamline.clock import VirtualClock
from seamline.console import (
    create_app,
    hash_password,
    hash_token,
    load_console_config,
    verify_password,
)
from seamline.errors import ConfigError
from seamline.metrics import METRIC_NAMES, compute_metrics
from seamline.store import RunRecord, RunStatus, SpanRecord, SqlStore, UnitOfWork
from seamline.telemetry import (
    DEFAULT_REDACT_FIELDS,
    REDACTED,
    configure_tracing,
    shutdown_tracing_sync,
)
from tests._console_setup import (
    OPS_TOKEN,
    PASSWORD,
    SECRET,
    VIEW_TOKEN,
    PausedJob,
    an_escalation,
    console_config,
    paused_renewals,
)
from tests.conftest import T0


@pytest.fixture
async def job(store: SqlStore, clock: VirtualClock) -> PausedJob:
    return await paused_renewals(store, clock)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``, with the app's start-up and shut-down run around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as c:
            yield c


@pytest.fixture
async def client(store: SqlStore, job: PausedJob) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(console_config(), store=store, now=job.clock.now)) as c:
        yield c


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, user: str, password: str = PASSWORD) -> str:
    """Log in through the form; the CSRF token of the new session."""
    form = await client.get("/login")
    response = await client.post(
        "/login",
        data={"username": user, "password": password, "csrf": _csrf(form.text), "next": "/"},
    )
    assert response.status_code == 303, response.text
    return _csrf((await client.get("/")).text)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- authentication -------------------------------------------------------------------------


async def test_pages_send_anonymous_users_to_log_in(client: httpx.AsyncClient) -> None:
    """Every page redirects a visitor with no session to the log-in form, keeping the path."""
    for path in ("/", "/runs", "/rows", "/events", "/approvals", "/controls", "/charts", "/method"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path


async def test_api_needs_a_valid_token(client: httpx.AsyncClient) -> None:
    """Every API path and /metrics is 401 with no token, an unknown one or Basic auth."""
    for path in (
        "/api/runs",
        "/api/rows",
        "/api/events",
        "/api/approvals",
        "/api/controls",
        "/api/metrics",
        "/api/alerts",
    ):
        assert (await client.get(path)).status_code == 401, path
    wrong = await client.get("/api/runs", headers=bearer("not-a-token"))
    assert wrong.status_code == 401 and "unknown" in wrong.json()["detail"]
    basic = await client.get("/api/runs", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/api/runs", headers=bearer(VIEW_TOKEN))).status_code == 200


async def test_wrong_password_is_refused_and_audited(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """A wrong password is a 401 that opens no session, and the attempt is audited as a deny."""
    form = await client.get("/login")
    response = await client.post(
        "/login", data={"username": "bob", "password": "guess", "csrf": _csrf(form.text)}
    )
    assert response.status_code == 401 and "Wrong user name or password" in response.text
    assert (await client.get("/")).status_code == 303, "no session after a failed log-in"
    entries = [e for e in await store.audit_entries(subject="console") if e.action == "login"]
    assert [(e.actor, e.decision) for e in entries] == [("bob", "deny")]


async def test_login_needs_the_forms_csrf_token(client: httpx.AsyncClient) -> None:
    """A log-in POST without the form's CSRF token is refused with 403."""
    await client.get("/login")
    response = await client.post("/login", data={"username": "bob", "password": PASSWORD})
    assert response.status_code == 403 and "CSRF" in response.text


async def test_login_redirects_only_to_local_paths(client: httpx.AsyncClient) -> None:
    """After log-in, a next= that leaves the site sends the browser to / instead."""
    form = await client.get("/login")
    response = await client.post(
        "/login",
        data={
            "username": "vic",
            "password": PASSWORD,
            "csrf": _csrf(form.text),
            "next": "//evil.example/x",
        },
    )
    assert response.headers["location"] == "/"


async def test_logout_ends_the_session(client: httpx.AsyncClient, store: SqlStore) -> None:
    """Log-out needs the CSRF token, ends the session, and both log-in and log-out are audited."""
    csrf = await login(client, "vic")
    assert (await client.post("/logout", data={"csrf": "wrong"})).status_code == 403
    assert (await client.post("/logout", data={"csrf": csrf})).status_code == 303
    assert (await client.get("/runs")).status_code == 303
    actions = [(e.actor, e.action) for e in await store.audit_entries(subject="console")]
    assert actions == [("vic", "login"), ("vic", "logout")]


# --- views ----------------------------------------------------------------------------------


async def test_every_page_renders_for_a_viewer(client: httpx.AsyncClient, store: SqlStore) -> None:
    """A viewer gets every page with its content; unknown ids are 404, an unknown status 422."""
    await login(client, "vic")
    runs = await store.list_runs(limit=5)
    rows = await store.list_rows(kind="renewal", limit=1)
    approval, _row = await an_escalation(store)
    pages = {
        "/": "runs ended in the",
        "/runs": runs[0].run_id,
        f"/runs/{runs[0].id}": "Attempt history",
        "/rows?kind=renewal": rows[0].id,
        f"/rows/{rows[0].id}": "Transition history",
        "/events?stream=wf:renewal:": "wf:renewal:",
        "/approvals": approval.id,
        f"/approvals/{approval.id}": "What the agent tried",
        "/controls": "Kill switch",
        "/charts": "<svg",
        "/method?kind=renewal": "Failure diagnostics",
    }
    for path, expected in pages.items():
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert expected in response.text, path
    assert (await client.get("/runs/no-such-run")).status_code == 404
    assert (await client.get("/rows/no-such-row")).status_code == 404
    assert (await client.get("/approvals?status=bogus")).status_code == 422


async def test_run_api_shows_the_attempt_history(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """A run's API answer has its record and attempt events; money is a decimal string."""
    [run] = await store.list_runs(status="escalated", limit=1)
    response = await client.get(f"/api/runs/{run.id}", headers=bearer(VIEW_TOKEN))
    body = response.json()
    assert body["run"]["status"] == "escalated" and body["run"]["id"] == run.id
    types = [e["type"] for e in body["attempts"]]
    assert "proposed" in types and types[-1] == "escalated"
    listed = (await client.get("/api/runs?status=escalated", headers=bearer(VIEW_TOKEN))).json()
    assert {r["status"] for r in listed} == {"escalated"}
    assert isinstance(listed[0]["cost"], str), "money is an exact decimal string"


async def test_rows_events_and_approvals_api(client: httpx.AsyncClient, store: SqlStore) -> None:
    """The rows, events and approvals API list and filter, and show one item with its history."""
    approval, row_id = await an_escalation(store)
    h = bearer(VIEW_TOKEN)
    rows = (await client.get("/api/rows?kind=renewal&state=needs_person", headers=h)).json()
    assert row_id in [r["id"] for r in rows]
    row = (await client.get(f"/api/rows/{row_id}", headers=h)).json()
    assert row["row"]["state"] == "needs_person"
    assert row["history"][0]["type"] == "created"
    events = (await client.get("/api/events?type=transitioned", headers=h)).json()
    assert events and {e["type"] for e in events} == {"transitioned"}
    pending = (await client.get("/api/approvals", headers=h)).json()
    assert approval.id in [a["id"] for a in pending]
    one = (await client.get(f"/api/approvals/{approval.id}", headers=h)).json()
    assert one["view"]["decision_needed"] and one["view"]["options"]
    assert (await client.get("/api/approvals/nope", headers=h)).status_code == 404


# --- approvals ------------------------------------------------------------------------------


async def test_viewer_cannot_decide(client: httpx.AsyncClient, store: SqlStore) -> None:
    """A viewer may not decide an approval, by form or API; it stays pending."""
    approval, _ = await an_escalation(store)
    csrf = await login(client, "vic")
    response = await client.post(
        f"/approvals/{approval.id}/decide",
        data={"decision": "approve", "reason": "looks fine", "csrf": csrf},
    )
    assert response.status_code == 403 and "operator" in response.text
    api = await client.post(
        f"/api/approvals/{approval.id}/decide",
        headers=bearer(VIEW_TOKEN),
        json={"decision": "approve", "reason": "x"},
    )
    assert api.status_code == 403
    still = await store.get_approval(approval.id)
    assert still is not None and still.status == "pending"


async def test_decision_form_needs_csrf(client: httpx.AsyncClient, store: SqlStore) -> None:
    """A decision without the CSRF token, by form or cookie-authenticated JSON, changes nothing."""
    approval, _ = await an_escalation(store)
    await login(client, "bob")
    for token in (None, "forged"):
        data = {"decision": "approve", "reason": "ok"} | ({"csrf": token} if token else {})
        response = await client.post(f"/approvals/{approval.id}/decide", data=data)
        assert response.status_code == 403 and "CSRF" in response.text
    # the JSON API on a session cookie needs the header, too
    api = await client.post(
        f"/api/approvals/{approval.id}/decide", json={"decision": "approve", "reason": "ok"}
    )
    assert api.status_code == 403
    still = await store.get_approval(approval.id)
    assert still is not None and still.status == "pending"


async def test_operator_approves_and_the_row_moves_on(
    client: httpx.AsyncClient, store: SqlStore, job: PausedJob
) -> None:
    """An operator's approval is audited, the row moves on, and a second decision is 409."""
    approval, row_id = await an_escalation(store)
    csrf = await login(client, "bob")
    response = await client.post(
        f"/approvals/{approval.id}/decide",
        data={"decision": "approve", "reason": "the agent's offer is fine", "csrf": csrf},
    )
    assert response.status_code == 303
    decided = await store.get_approval(approval.id)
    assert decided is not None and (decided.status, decided.decided_by) == ("approved", "bob")
    [entry] = await store.audit_entries(subject=approval.id)
    assert (entry.actor, entry.action, entry.reason) == (
        "bob",
        "approve",
        "the agent's offer is fine",
    )
    moved = await job.step_until_moved(row_id, "needs_person")
    assert moved == "offer_ready"
    row = await store.get_row(row_id)
    assert row is not None and row.data["decided_by"] == "bob"
    again = await client.post(
        f"/approvals/{approval.id}/decide",
        data={"decision": "reject", "reason": "changed my mind", "csrf": csrf},
    )
    assert again.status_code == 409, "a decision is made once"


async def test_edit_needs_valid_json_and_a_reason(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """A decision needs a reason and a known verb; an edit needs a JSON object, then kept."""
    approval, _ = await an_escalation(store)
    h = bearer(OPS_TOKEN)
    url = f"/api/approvals/{approval.id}/decide"
    no_reason = await client.post(url, headers=h, json={"decision": "approve", "reason": " "})
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    bad = await client.post(url, headers=h, json={"decision": "maybe", "reason": "x"})
    assert bad.status_code == 422
    not_object = await client.post(
        url, headers=h, json={"decision": "edit", "reason": "x", "edited": [1]}
    )
    assert not_object.status_code == 422
    assert (await client.post(url, headers=h, content=b"{nope")).status_code == 400
    csrf = await login(client, "bob")
    form = await client.post(
        f"/approvals/{approval.id}/decide",
        data={"decision": "edit", "reason": "r", "edited": "{not json", "csrf": csrf},
    )
    assert form.status_code == 422 and "not valid JSON" in form.text
    edited = await client.post(
        url,
        headers=h,
        json={"decision": "edit", "reason": "smaller discount", "edited": {"discount": "0.05"}},
    )
    assert edited.status_code == 200 and edited.json()["status"] == "edited"
    decided = await store.get_approval(approval.id)
    assert decided is not None and decided.decision["edited"] == {"discount": "0.05"}


# --- kill switch and throttles ----------------------------------------------------------------


async def test_kill_switch_only_for_its_principals(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """Only principals listed under kill_switch may stop, for their scopes; a refusal is audited."""
    csrf = await login(client, "bob")  # an operator, but not a kill-switch principal
    refused = await client.post(
        "/controls/kill", data={"scope": "all", "reason": "panic", "csrf": csrf}
    )
    assert refused.status_code == 403 and "not authorised" in refused.text
    assert await store.kills() == []
    denied = [e for e in await store.audit_entries(subject="all") if e.actor == "bob"]
    assert [e.decision for e in denied] == ["deny"], "the refusal is audited"
    ops = await client.post(
        "/api/controls/kill", headers=bearer(OPS_TOKEN), json={"scope": "all", "reason": "x"}
    )
    assert ops.status_code == 403, "the ops token may stop kinds, not everything"


async def test_admin_stops_and_revives_through_the_form(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """A kill-switch principal stops and revives a kind through the form; both are audited."""
    csrf = await login(client, "alice")
    no_csrf = await client.post("/controls/kill", data={"scope": "all", "reason": "r"})
    assert no_csrf.status_code == 403 and await store.kills() == []
    bad_scope = await client.post(
        "/controls/kill", data={"scope": "everything", "reason": "r", "csrf": csrf}
    )
    assert bad_scope.status_code == 422
    stop = await client.post(
        "/controls/kill", data={"scope": "kind:renewal", "reason": "bad offers", "csrf": csrf}
    )
    assert stop.status_code == 303
    assert [k[0] for k in await store.kills()] == ["kind:renewal"]
    page = await client.get("/controls")
    assert "bad offers" in page.text
    revive = await client.post(
        "/controls/revive", data={"scope": "kind:renewal", "reason": "fixed", "csrf": csrf}
    )
    assert revive.status_code == 303 and await store.kills() == []
    actions = [
        (e.actor, e.action, e.decision) for e in await store.audit_entries(subject="kind:renewal")
    ]
    assert actions == [("alice", "kill", "allow"), ("alice", "revive", "allow")]


async def test_api_kill_of_a_kind_by_the_ops_token(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """A token allowed kind:* stops a kind by API; revive needs a reason; unknown is 404."""
    h = bearer(OPS_TOKEN)
    done = await client.post(
        "/api/controls/kill", headers=h, json={"scope": "kind:renewal", "reason": "drill"}
    )
    assert done.status_code == 200 and done.json()["scope"] == "kind:renewal"
    state = (await client.get("/api/controls", headers=h)).json()
    assert [k["scope"] for k in state["kills"]] == ["kind:renewal"]
    no_reason = await client.post("/api/controls/revive", headers=h, json={"scope": "kind:renewal"})
    assert no_reason.status_code == 422
    assert (await client.post("/api/controls/explode", headers=h, json={})).status_code == 404


async def test_throttle_override_is_role_checked_and_audited(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """A throttle override needs the operator role and a known throttle, is audited, and clears."""
    viewer = await client.post(
        "/api/controls/throttle",
        headers=bearer(VIEW_TOKEN),
        json={"name": "outreach", "per_minute": 0, "reason": "pause"},
    )
    assert viewer.status_code == 403
    h = bearer(OPS_TOKEN)
    unknown = await client.post(
        "/api/controls/throttle", headers=h, json={"name": "nope", "per_minute": 1, "reason": "r"}
    )
    assert unknown.status_code == 404
    negative = await client.post(
        "/api/controls/throttle",
        headers=h,
        json={"name": "outreach", "per_minute": -1, "reason": "r"},
    )
    assert negative.status_code == 422
    paused = await client.post(
        "/api/controls/throttle",
        headers=h,
        json={"name": "outreach", "per_minute": 0, "reason": "complaints"},
    )
    assert paused.status_code == 200 and paused.json()["version"] == 1
    row = await store.get_row("throttle:outreach")
    assert row is not None and row.data["per_minute"] == 0
    [entry] = await store.audit_entries(subject="throttle:outreach")
    assert (entry.actor, entry.reason) == ("token:ops", "complaints")
    csrf = await login(client, "bob")
    cleared = await client.post(
        "/controls/throttle",
        data={"name": "outreach", "per_minute": "", "reason": "resolved", "csrf": csrf},
    )
    assert cleared.status_code == 303
    row = await store.get_row("throttle:outreach")
    assert row is not None and row.data["per_minute"] is None and row.version == 2


# --- health, metrics, Prometheus, alerts -------------------------------------------------------


async def test_healthz_needs_no_credentials_and_names_the_schema(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """/healthz answers without a session or token, with the store's schema version."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "schema": str(await store.schema_version())}


async def test_metrics_api_gives_the_figures_of_the_window(
    client: httpx.AsyncClient, store: SqlStore, job: PausedJob
) -> None:
    """/api/metrics is compute_metrics for the hours up to the console's now, per kind."""
    h = bearer(VIEW_TOKEN)
    body = (await client.get("/api/metrics?kind=renewal&hours=48", headers=h)).json()
    until = job.clock.now()
    expected = await compute_metrics(
        store, since=until - timedelta(hours=48), until=until, kind="renewal"
    )
    assert expected.runs > 0
    assert (body["kind"], body["runs"], body["committed"], body["escalated"]) == (
        "renewal",
        expected.runs,
        expected.committed,
        expected.escalated,
    )
    assert body["success_rate"] == expected.success_rate
    assert body["cost_total"] == str(expected.cost_total), "money is an exact decimal string"
    assert datetime.fromisoformat(body["until"]) == until
    other = (await client.get("/api/metrics?kind=no-such-kind", headers=h)).json()
    assert (other["runs"], other["success_rate"]) == (0, None)


async def test_prometheus_exposition_with_a_valid_token(
    client: httpx.AsyncClient, store: SqlStore, job: PausedJob
) -> None:
    """/metrics with a viewer token is Prometheus text: every seamline metric family, and the
    renewal kind's figures over the hour before the console's now."""
    response = await client.get("/metrics", headers=bearer(VIEW_TOKEN))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert set(METRIC_NAMES) <= set(families)
    assert "# TYPE seamline_runs gauge" in response.text
    now = job.clock.now()
    expected = await compute_metrics(
        store, since=now - timedelta(hours=1), until=now, kind="renewal"
    )
    runs = {s.labels["kind"]: s.value for s in families["seamline_runs"].samples}
    assert runs["renewal"] == expected.runs
    [window] = families["seamline_window_seconds"].samples
    assert window.value == 3600


def ending(
    id: str,
    *,
    at: datetime,
    kind: str = "renewal",
    cost: str = "0.001",
    status: RunStatus = "committed",
    trace_id: str | None = None,
) -> RunRecord:
    return RunRecord(
        id=id,
        run_id=f"job/{id}",
        boundary="offer",
        kind=kind,
        status=status,
        reason=None,
        attempts=1,
        rejects=0,
        prompt_tokens=100,
        completion_tokens=20,
        cost=Decimal(cost),
        context_utilisation=0.5,
        started_at=at - timedelta(seconds=1),
        ended_at=at,
        latency_ms=100.0,
        trace_id=trace_id,
    )


async def test_alerts_are_raised_by_the_console_itself(
    store: SqlStore, clock: VirtualClock
) -> None:
    """With no one running `seamline metrics --alerts`, a cost spike shows on /api/alerts and
    the overview: the console evaluates the rules when it shows alerts, at most once per
    hour-aligned window, so runs recorded late for a window already evaluated wait for the
    next hour."""
    start = clock.now()  # baseline window [start, start+7d), current [start+7d, start+8d)
    now = [start + timedelta(days=8, minutes=30)]
    current = start + timedelta(days=7, hours=12)
    unit = UnitOfWork()
    for i in range(30):
        unit.record_run(ending(f"b{i}", at=start + timedelta(days=1, hours=i)))
    for i in range(20):
        unit.record_run(ending(f"c{i}", at=current + timedelta(minutes=i)))
    await store.apply(unit)
    app = create_app(console_config(), store=store, now=lambda: now[0])
    async with serving(app) as c:
        h = bearer(VIEW_TOKEN)
        assert (await c.get("/api/alerts", headers=h)).json() == []
        spike = UnitOfWork()
        for i in range(20):
            spike.record_run(ending(f"s{i}", at=current + timedelta(hours=1), cost="0.01"))
        await store.apply(spike)  # late: the window up to this hour was evaluated already
        assert (await c.get("/api/alerts", headers=h)).json() == []
        now[0] += timedelta(hours=1)
        [alert] = (await c.get("/api/alerts", headers=h)).json()
        assert (alert["name"], alert["kind"]) == ("cost_per_run_spike", "renewal")
        assert alert["baseline"] == "0.001000" and alert["observed"] == "0.005500"
        await login(c, "vic")
        overview = (await c.get("/")).text
        assert "cost_per_run_spike" in overview and alert["message"] in overview
    assert len(await store.read_stream("alerts")) == 1, "raised once, however often shown"


# --- traces of people's actions ---------------------------------------------------------------


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tracing as `seamline console serve` sets it up: spans kept for the app to flush."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    yield
    shutdown_tracing_sync()


async def test_console_actions_leave_human_spans_in_the_store(
    traced: None, client: httpx.AsyncClient, store: SqlStore
) -> None:
    """Each approve, kill, revive and throttle made in the console is in the store's traces
    as soon as the request is answered, with who did it."""
    approval, _ = await an_escalation(store)
    configure_tracing(exporter=InMemorySpanExporter(), keep_spans=True)
    h = bearer(OPS_TOKEN)
    decided = await client.post(
        f"/api/approvals/{approval.id}/decide",
        headers=h,
        json={"decision": "approve", "reason": "fine"},
    )
    assert decided.status_code == 200
    for action in ("kill", "revive"):
        done = await client.post(
            f"/api/controls/{action}", headers=h, json={"scope": "kind:renewal", "reason": "x"}
        )
        assert done.status_code == 200
    throttled = await client.post(
        "/api/controls/throttle",
        headers=h,
        json={"name": "outreach", "per_minute": 5, "reason": "r"},
    )
    assert throttled.status_code == 200
    kept = [s for s in await store.spans() if s.name.startswith("human ")]
    assert [(s.name, s.attributes["seamline.subject"]) for s in kept] == [
        ("human approve", approval.id),
        ("human kill", "kind:renewal"),
        ("human revive", "kind:renewal"),
        ("human throttle", "throttle:outreach"),
    ]
    assert {s.attributes["seamline.principal"] for s in kept} == {"token:ops"}


# --- no secret in a page ------------------------------------------------------------------------

TRACE = "c" * 32
LEAKS = ("jane@example.com", "555-0100", "Jane Doe", "sk-live0123456789", "CR-77", "s3cret")


async def _seed_customer_data(store: SqlStore) -> str:
    """A row, its events, a traced run and an approval holding PII and secrets."""
    data = {
        "email": "jane@example.com",
        "api_key": "sk-live0123456789abcdef",
        "contract_ref": "CR-77",
        "note": "phone: 555-0100",
    }
    unit = UnitOfWork().create_row("crm-1", kind="crm", state="open", data=data)
    unit.append_event(
        "wf:crm:crm-1", "created", {"data": data, "customer_name": "Jane Doe", "by": "agent"}
    )
    at = T0 + timedelta(hours=1)
    unit.record_run(ending("crm-run", at=at, kind="crm", trace_id=TRACE))
    # a span kept by a process that did not know contract_ref was PII
    attributes = '{"seamline.kind": "crm", "customer.contract_ref": "CR-77"}'
    span = SpanRecord(
        "s1", TRACE, None, "invoke_agent crm", "job/crm-run", at, at, "ok", attributes
    )
    unit.record_spans([span])
    unit.open_approval(
        id="crm-approval",
        kind="approval",
        reason="customer email: jane@example.com asked for more",
        request={
            "input": data,
            "tried": [
                {
                    "attempt": 1,
                    "status": "rejected",
                    "candidate": {"customer_name": "Jane Doe", "discount": "0.40"},
                    "rejects": [{"reason_code": "x", "message": "phone=555-0100 not allowed"}],
                }
            ],
        },
        requested_by="agent",
        row_id="crm-1",
    )
    await store.apply(unit)
    return "crm-approval"


# --- config -----------------------------------------------------------------------------------


def test_passwords_hash_and_verify() -> None:
    """scrypt hashes verify the right password only; short passwords are refused."""
    hashed = hash_password(PASSWORD)
    assert verify_password(PASSWORD, hashed) and not verify_password("other password", hashed)
    assert not verify_password(PASSWORD, "scrypt$garbage")
    with pytest.raises(ConfigError, match="at least 8"):
        hash_password("short")


def test_bad_console_configs_are_explained(tmp_path: Path) -> None:
    """Each config mistake is a ConfigError naming the field; no signing key, no app."""
    cases = {
        "users: [1, 2]": "users",
        "users:\n  a: {password_hash: plain, roles: [viewer]}": "scrypt hash",
        "users:\n  a: {password_hash: 'scrypt$1$2$3$4$5', roles: [king]}": "roles",
        "secret_key: short\ntokens: []": "secret_key",
        "approvers: []": "no users and no tokens",
        "{{": "not valid YAML",
    }
    for text, expected in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            load_console_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_console_config(tmp_path / "missing.yaml")
    no_key = console_config().model_copy(update={"secret_key": None})
    with pytest.raises(ConfigError, match="signing key"):
        create_app(no_key, store_url="sqlite:///x.db")


async def test_no_secret_or_configured_pii_in_any_page(store: SqlStore, job: PausedJob) -> None:
    """No page or API answer holds a password hash, a token or its digest, the session key,
    or a secret or configured PII field of row data, event payloads, approval requests,
    reasons and kept spans: those show as [redacted]."""
    approval_id = await _seed_customer_data(store)
    escalation, _ = await an_escalation(store)
    config = console_config().model_copy(
        update={"redact_fields": (*DEFAULT_REDACT_FIELDS, "contract_ref")}
    )
    [user_hash] = {u.password_hash for u in config.users.values()}
    secrets = [SECRET, OPS_TOKEN, VIEW_TOKEN, PASSWORD, user_hash, *user_hash.split("$")[-2:]]
    secrets += [hash_token(OPS_TOKEN), hash_token(VIEW_TOKEN)]
    async with serving(create_app(config, store=store, now=job.clock.now)) as c:
        killed = await c.post(
            "/api/controls/kill",
            headers=bearer(OPS_TOKEN),
            json={"scope": "kind:crm", "reason": "leak at postgresql://svc:s3cret@db/crm"},
        )
        assert killed.status_code == 200
        login_page = (await c.get("/login")).text
        await login(c, "alice")
        [run] = await store.list_runs(limit=1)
        pages = [
            "/",
            "/runs",
            f"/runs/{run.id}",
            "/runs/crm-run",
            "/rows?kind=crm",
            "/rows/crm-1",
            "/events?stream=wf:crm:",
            "/approvals?status=all",
            f"/approvals/{approval_id}",
            f"/approvals/{escalation.id}",
            "/controls",
            "/charts",
            "/method",
        ]
        texts = {"/login": login_page}
        for path in pages:
            response = await c.get(path)
            assert response.status_code == 200, path
            texts[path] = response.text
        h = bearer(VIEW_TOKEN)
        for path in (
            "/api/runs",
            "/api/runs/crm-run",
            "/api/rows?kind=crm",
            "/api/rows/crm-1",
            "/api/events?stream=wf:crm:",
            "/api/approvals?status=all",
            f"/api/approvals/{approval_id}",
            "/api/controls",
            "/api/metrics",
            "/api/alerts",
            "/api/openapi.json",
            "/metrics",
            "/healthz",
        ):
            response = await c.get(path, headers=h)
            assert response.status_code == 200, path
            texts[path] = response.text
    for path, text in texts.items():
        for secret in secrets:
            assert secret not in text, (path, "a credential")
        for leak in LEAKS:
            assert leak not in text, (path, leak)
    for path in ("/rows/crm-1", f"/approvals/{approval_id}", "/controls", "/runs/crm-run"):
        assert REDACTED in texts[path], path
    assert "[redacted]" in texts["/api/rows/crm-1"] and "_json" not in texts["/api/rows/crm-1"]
    assert "Transition history" in texts["/rows/crm-1"], "the page itself still renders"
