"""The console's endpoints: authentication, roles, CSRF, and what each page and API call
shows and does, over a renewal job paused with escalations waiting (both backends)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from seamline.clock import VirtualClock
from seamline.console import create_app, hash_password, load_console_config, verify_password
from seamline.errors import ConfigError
from seamline.store import SqlStore
from tests._console_setup import (
    OPS_TOKEN,
    PASSWORD,
    VIEW_TOKEN,
    PausedJob,
    an_escalation,
    console_config,
    paused_renewals,
)


@pytest.fixture
async def job(store: SqlStore, clock: VirtualClock) -> PausedJob:
    return await paused_renewals(store, clock)


@pytest.fixture
async def client(store: SqlStore, job: PausedJob) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(console_config(), store=store, now=job.clock.now)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as c:
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
    for path in ("/", "/runs", "/rows", "/events", "/approvals", "/controls", "/charts", "/method"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path


async def test_api_needs_a_valid_token(client: httpx.AsyncClient) -> None:
    for path in ("/api/runs", "/api/rows", "/api/events", "/api/approvals", "/api/controls"):
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
    form = await client.get("/login")
    response = await client.post(
        "/login", data={"username": "bob", "password": "guess", "csrf": _csrf(form.text)}
    )
    assert response.status_code == 401 and "Wrong user name or password" in response.text
    assert (await client.get("/")).status_code == 303, "no session after a failed log-in"
    entries = [e for e in await store.audit_entries(subject="console") if e.action == "login"]
    assert [(e.actor, e.decision) for e in entries] == [("bob", "deny")]


async def test_login_needs_the_forms_csrf_token(client: httpx.AsyncClient) -> None:
    await client.get("/login")
    response = await client.post("/login", data={"username": "bob", "password": PASSWORD})
    assert response.status_code == 403 and "CSRF" in response.text


async def test_login_redirects_only_to_local_paths(client: httpx.AsyncClient) -> None:
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
    csrf = await login(client, "vic")
    assert (await client.post("/logout", data={"csrf": "wrong"})).status_code == 403
    assert (await client.post("/logout", data={"csrf": csrf})).status_code == 303
    assert (await client.get("/runs")).status_code == 303
    actions = [(e.actor, e.action) for e in await store.audit_entries(subject="console")]
    assert actions == [("vic", "login"), ("vic", "logout")]


# --- views ----------------------------------------------------------------------------------


async def test_every_page_renders_for_a_viewer(client: httpx.AsyncClient, store: SqlStore) -> None:
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


# --- config -----------------------------------------------------------------------------------


def test_passwords_hash_and_verify() -> None:
    hashed = hash_password(PASSWORD)
    assert verify_password(PASSWORD, hashed) and not verify_password("other password", hashed)
    assert not verify_password(PASSWORD, "scrypt$garbage")
    with pytest.raises(ConfigError, match="at least 8"):
        hash_password("short")


def test_bad_console_configs_are_explained(tmp_path: Path) -> None:
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
