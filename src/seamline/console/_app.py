"""The operations console: a FastAPI app over one store, server-rendered pages plus a JSON
API, with log-in, roles, CSRF on every form, and every human action audited."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from starlette.middleware.sessions import SessionMiddleware

from seamline.console import _data
from seamline.console._auth import (
    LoginRequired,
    Principal,
    check_csrf,
    csrf_token,
    require,
)
from seamline.console._config import ConsoleConfig, Role, verify_password
from seamline.errors import ConfigError
from seamline.patterns import (
    ApprovalDecided,
    KillSwitch,
    NotAuthorised,
    decide_approval,
    set_throttle,
)
from seamline.store import ApprovalStatus, NotPending, Store, UnitOfWork, open_store

__all__ = ["create_app"]

HERE = Path(__file__).parent
Decision = Literal["approve", "reject", "edit"]


def _plain(value: Any) -> Any:
    """Records as JSON-ready values: money as exact strings, times in ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return jsonable_encoder(value, custom_encoder={Decimal: str, datetime: datetime.isoformat})


def create_app(
    config: ConsoleConfig,
    *,
    store_url: str | None = None,
    store: Store | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    """The console app. Give ``store_url`` (opened and closed with the app) or an open
    ``store`` (the caller closes it)."""
    if (store_url is None) == (store is None):
        raise ConfigError("create_app needs exactly one of store_url and store")
    state: dict[str, Store] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["store"] = store if store is not None else open_store(store_url or "")
        try:
            yield
        finally:
            if store is None:
                await state["store"].close()

    app = FastAPI(
        title="seamline console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=config.signing_key(),
        session_cookie="seamline_session",
        max_age=config.session_max_age_s,
        same_site="strict",
        https_only=config.secure_cookies,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    templates.env.filters["markdown"] = markdown.render
    templates.env.filters["pretty"] = lambda v: json.dumps(_plain(v), indent=2, sort_keys=True)
    templates.env.filters["q"] = lambda v: quote(str(v), safe="")
    throttle_names = sorted({*config.throttles, "outreach"})

    def db() -> Store:
        return state["store"]

    def page(request: Request, role: Role = "viewer") -> Principal:
        return require(request, config, role, page=True)

    def api(request: Request, role: Role = "viewer") -> Principal:
        return require(request, config, role, page=False)

    def render(request: Request, name: str, who: Principal | None, **context: Any) -> Response:
        context.update(request=request, who=who, csrf=csrf_token(request), now=now())
        return templates.TemplateResponse(request, name, context)

    async def audit(principal: str, action: str, decision: str, reason: str) -> None:
        await db().apply(
            UnitOfWork().audit(
                actor=principal, action=action, subject="console", decision=decision, reason=reason
            )
        )

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.url.path == "/metrics":
            headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)
        response = render(request, "error.html", None, status=exc.status_code, detail=exc.detail)
        response.status_code = exc.status_code
        return response

    @app.exception_handler(ConfigError)
    async def bad_request(request: Request, exc: ConfigError) -> Response:
        return await http_error(request, HTTPException(400, str(exc)))

    # --- log-in -------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "schema": str(await db().schema_version())}

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/") -> Response:
        return render(request, "login.html", None, next=_local(next), error=None)

    @app.post("/login")
    async def login(
        request: Request,
        username: str = Form(...),
        password: str = Form(...),
        csrf: str = Form(""),
        next: str = Form("/"),
    ) -> Response:
        check_csrf(request, Principal("anonymous", (), "session"), csrf)
        user = config.users.get(username)
        if user is None or not verify_password(password, user.password_hash):
            await audit(username[:100], "login", "deny", "wrong user name or password")
            response = render(
                request, "login.html", None, next=_local(next), error="Wrong user name or password."
            )
            response.status_code = 401
            return response
        request.session.clear()  # a fresh session (and CSRF token) at each log-in
        request.session["user"] = username
        await audit(username, "login", "allow", "password verified")
        return RedirectResponse(_local(next), status_code=303)

    @app.post("/logout")
    async def logout(request: Request, csrf: str = Form("")) -> Response:
        who = page(request)
        check_csrf(request, who, csrf)
        request.session.clear()
        await audit(who.name, "logout", "allow", "logged out")
        return RedirectResponse("/login", status_code=303)

    # --- pages --------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        who = page(request)
        until = await _data.as_of(db(), now())
        runs = await db().list_runs(since=until - timedelta(days=1), until=until, limit=100_000)
        counts = {s: sum(r.status == s for r in runs) for s in ("committed", "escalated", "failed")}
        pending = await db().list_approvals(status="pending", limit=1000)
        return render(
            request,
            "overview.html",
            who,
            counts=counts,
            total=len(runs),
            pending=len(pending),
            kills=await db().kills(),
            recent=await db().list_runs(limit=10),
            until=until,
            live=until == now(),
            alerts=await _alerts(db()),
        )

    @app.get("/runs", response_class=HTMLResponse)
    async def runs_page(
        request: Request, kind: str = "", status: str = "", run: str = ""
    ) -> Response:
        who = page(request)
        runs = await db().list_runs(
            kind=kind or None, status=status or None, run_id=run or None, limit=_data.PAGE
        )
        kinds = await db().run_kinds()
        return render(
            request, "runs.html", who, runs=runs, kinds=kinds, kind=kind, status=status, run=run
        )

    @app.get("/runs/{run_key:path}", response_class=HTMLResponse)
    async def run_page(request: Request, run_key: str) -> Response:
        who = page(request)
        detail = await _data.run_detail(db(), run_key)
        if detail is None:
            raise HTTPException(404, f"no run {run_key!r}")
        return render(request, "run.html", who, d=detail)

    @app.get("/rows", response_class=HTMLResponse)
    async def rows_page(
        request: Request, kind: str = "", state: str = "", after: str = ""
    ) -> Response:
        who = page(request)
        rows = await db().list_rows(
            kind=kind or None, state=state or None, after_id=after, limit=_data.PAGE
        )
        return render(request, "rows.html", who, rows=rows, kind=kind, state=state, after=after)

    @app.get("/rows/{row_id:path}", response_class=HTMLResponse)
    async def row_page(request: Request, row_id: str) -> Response:
        who = page(request)
        row = await db().get_row(row_id)
        if row is None:
            raise HTTPException(404, f"no row {row_id!r}")
        history = await db().read_stream(_data.row_stream(row), limit=1000)
        return render(request, "row.html", who, row=row, history=history)

    @app.get("/events", response_class=HTMLResponse)
    async def events_page(
        request: Request, stream: str = "", type: str = "", after: int = 0
    ) -> Response:
        who = page(request)
        events = await _events(db(), stream, type, after)
        return render(
            request, "events.html", who, events=events, stream=stream, type=type, after=after
        )

    @app.get("/approvals", response_class=HTMLResponse)
    async def approvals_page(request: Request, status: str = "pending") -> Response:
        who = page(request)
        approvals = await db().list_approvals(status=_status(status), limit=_data.PAGE)
        return render(request, "approvals.html", who, approvals=approvals, status=status)

    @app.get("/approvals/{approval_id:path}", response_class=HTMLResponse)
    async def approval_page(request: Request, approval_id: str) -> Response:
        who = page(request)
        approval = await db().get_approval(approval_id)
        if approval is None:
            raise HTTPException(404, f"no approval {approval_id!r}")
        view = await _data.approval_view(db(), approval)
        return render(request, "approval.html", who, a=approval, v=view, error=None)

    @app.post("/approvals/{approval_id:path}/decide")
    async def decide_form(
        request: Request,
        approval_id: str,
        decision: str = Form(...),
        reason: str = Form(""),
        edited: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        who = page(request, "operator")
        check_csrf(request, who, csrf)
        await _decide(db(), config, who, approval_id, decision, reason, _edited(edited))
        return RedirectResponse(f"/approvals/{quote(approval_id)}", status_code=303)

    @app.get("/controls", response_class=HTMLResponse)
    async def controls_page(request: Request) -> Response:
        who = page(request)
        view = await _data.controls_view(db(), throttle_names)
        may_kill = bool(config.kill_authorised().get(who.name))
        return render(request, "controls.html", who, v=view, may_kill=may_kill)

    @app.post("/controls/{action}")
    async def control_form(
        request: Request,
        action: str,
        scope: str = Form(""),
        name: str = Form(""),
        per_minute: str = Form(""),
        reason: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        who = page(request)
        check_csrf(request, who, csrf)
        if action in ("kill", "revive"):
            await _switch(db(), config, who, action, scope, reason)
        elif action == "throttle":
            page(request, "operator")
            await _throttle(db(), throttle_names, who, name, _per_minute(per_minute), reason)
        else:
            raise HTTPException(404, f"no control {action!r}")
        return RedirectResponse("/controls", status_code=303)

    @app.get("/charts", response_class=HTMLResponse)
    async def charts_page(request: Request, kind: str = "", days: int = 7) -> Response:
        who = page(request)
        from seamline.console._charts import charts

        until = await _data.as_of(db(), now())
        svg = await charts(db(), kind=kind or None, days=max(1, min(days, 90)), now=until)
        kinds = await db().run_kinds()
        return render(
            request, "charts.html", who, svg=svg, kinds=kinds, kind=kind, days=days, until=until
        )

    @app.get("/method", response_class=HTMLResponse)
    async def method_page(request: Request, kind: str = "renewal") -> Response:
        who = page(request)
        from seamline.method import diagnose, render_markdown

        adr, adr_error = _data.adr_text(kind, config.adr)
        report = await diagnose(db())
        kinds = sorted({*await db().run_kinds(), *config.adr, kind})
        return render(
            request,
            "method.html",
            who,
            kind=kind,
            kinds=kinds,
            adr=adr,
            adr_error=adr_error,
            diagnosis=render_markdown(report),
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        api(request)
        from seamline.metrics import prometheus_text

        body = await prometheus_text(db())
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(_api_router(config, db, api, throttle_names))
    return app


def _api_router(
    config: ConsoleConfig,
    db: Callable[[], Store],
    api: Callable[..., Principal],
    throttle_names: list[str],
) -> APIRouter:
    """The same views and actions as JSON, for scripts (bearer tokens)."""
    r = APIRouter(prefix="/api")

    @r.get("/runs")
    async def runs(request: Request, kind: str = "", status: str = "", limit: int = 100) -> Any:
        api(request)
        found = await db().list_runs(
            kind=kind or None, status=status or None, limit=max(1, min(limit, 1000))
        )
        return _plain(found)

    @r.get("/runs/{run_key:path}")
    async def run(request: Request, run_key: str) -> Any:
        api(request)
        detail = await _data.run_detail(db(), run_key)
        if detail is None:
            raise HTTPException(404, f"no run {run_key!r}")
        return {
            "run": _plain(detail.run),
            "trace": [
                {"depth": line.depth, "duration_ms": line.duration_ms, **_plain(line.span)}
                for line in detail.spans
            ],
            "attempts": [_event(e) for e in detail.attempts],
        }

    @r.get("/rows")
    async def rows(request: Request, kind: str = "", state: str = "", after: str = "") -> Any:
        api(request)
        found = await db().list_rows(
            kind=kind or None, state=state or None, after_id=after, limit=_data.PAGE
        )
        return [{**_plain(row), "data": row.data} for row in found]

    @r.get("/rows/{row_id:path}")
    async def row(request: Request, row_id: str) -> Any:
        api(request)
        found = await db().get_row(row_id)
        if found is None:
            raise HTTPException(404, f"no row {row_id!r}")
        history = await db().read_stream(_data.row_stream(found), limit=1000)
        return {
            "row": {**_plain(found), "data": found.data},
            "history": [_event(e) for e in history],
        }

    @r.get("/events")
    async def events(request: Request, stream: str = "", type: str = "", after: int = 0) -> Any:
        api(request)
        return [_event(e) for e in await _events(db(), stream, type, after)]

    @r.get("/approvals")
    async def approvals(request: Request, status: str = "pending") -> Any:
        api(request)
        found = await db().list_approvals(status=_status(status), limit=_data.PAGE)
        return [_approval(a) for a in found]

    @r.get("/approvals/{approval_id:path}")
    async def approval(request: Request, approval_id: str) -> Any:
        api(request)
        found = await db().get_approval(approval_id)
        if found is None:
            raise HTTPException(404, f"no approval {approval_id!r}")
        return {**_approval(found), "view": _plain(await _data.approval_view(db(), found))}

    @r.post("/approvals/{approval_id:path}/decide")
    async def decide(request: Request, approval_id: str) -> Any:
        who = api(request, "operator")
        body = await _json_body(request, who)
        decided = await _decide(
            db(),
            config,
            who,
            approval_id,
            str(body.get("decision", "")),
            str(body.get("reason", "")),
            body.get("edited"),
        )
        return _plain(decided)

    @r.get("/controls")
    async def controls(request: Request) -> Any:
        api(request)
        view = await _data.controls_view(db(), throttle_names)
        return {
            "kills": [
                {"scope": s, "by": by, "reason": why, "at": at.isoformat()}
                for s, by, why, at in view["kills"]
            ],
            "throttles": view["throttles"],
        }

    @r.post("/controls/{action}")
    async def control(request: Request, action: str) -> Any:
        who = api(request)
        body = await _json_body(request, who)
        reason = str(body.get("reason", ""))
        if action in ("kill", "revive"):
            done = await _switch(db(), config, who, action, str(body.get("scope", "")), reason)
            return _plain(done)
        if action == "throttle":
            api(request, "operator")
            value = body.get("per_minute")
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise HTTPException(422, "per_minute must be an integer or null")
            version = await _throttle(
                db(), throttle_names, who, str(body.get("name", "")), value, reason
            )
            return {"name": body.get("name"), "per_minute": value, "version": version}
        raise HTTPException(404, f"no control {action!r}")

    @r.get("/metrics")
    async def metrics(request: Request, kind: str = "", hours: float = 24) -> Any:
        api(request)
        from seamline.metrics import compute_metrics

        window = timedelta(hours=max(0.1, min(hours, 24 * 90)))
        until = datetime.now(UTC)
        result = await compute_metrics(db(), kind=kind or None, since=until - window, until=until)
        return _plain(result)

    @r.get("/alerts")
    async def alerts(request: Request) -> Any:
        api(request)
        return await _alerts(db())

    return r


# --- shared actions ---------------------------------------------------------------------


async def _decide(
    store: Store,
    config: ConsoleConfig,
    who: Principal,
    approval_id: str,
    decision: str,
    reason: str,
    edited: Any,
) -> ApprovalDecided:
    if decision not in ("approve", "reject", "edit"):
        raise HTTPException(422, "decision must be approve, reject or edit")
    if edited is not None and not isinstance(edited, dict):
        raise HTTPException(422, "edited must be a JSON object")
    if await store.get_approval(approval_id) is None:
        raise HTTPException(404, f"no approval {approval_id!r}")
    try:
        result = await decide_approval(
            store,
            approval_id,
            principal=who.name,
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            edited=edited,
            approvers=frozenset(config.approvers) if config.approvers else None,
        )
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    if isinstance(result, NotAuthorised):
        raise HTTPException(403, result.reason)
    if isinstance(result, NotPending):
        raise HTTPException(409, f"approval {approval_id!r} was already decided")
    return result


async def _switch(
    store: Store, config: ConsoleConfig, who: Principal, action: str, scope: str, reason: str
) -> Any:
    if not reason.strip():
        raise HTTPException(422, "a kill or revive needs a reason")
    switch = KillSwitch(store, config.kill_authorised())
    try:
        act = switch.kill if action == "kill" else switch.revive
        done = await act(scope, principal=who.name, reason=reason)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    if isinstance(done, NotAuthorised):
        raise HTTPException(403, done.reason)
    return done


async def _throttle(
    store: Store, names: list[str], who: Principal, name: str, per_minute: int | None, reason: str
) -> int:
    if name not in names:
        raise HTTPException(404, f"no throttle {name!r} (known: {', '.join(names)})")
    try:
        return await set_throttle(
            store, name, per_minute=per_minute, principal=who.name, reason=reason
        )
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc


async def _events(store: Store, stream: str, type: str, after: int) -> list[Any]:
    """A page of the log from ``after``, by stream prefix; a type filter reads on up to ten
    pages to fill the page."""
    found: list[Any] = []
    cursor = max(0, after)
    for _ in range(10):
        page = await store.read_events(
            after_seq=cursor, limit=_data.PAGE, stream_prefix=stream or None
        )
        found += [e for e in page if not type or e.type == type]
        if len(found) >= _data.PAGE or len(page) < _data.PAGE:
            break
        cursor = page[-1].seq
    return found[: _data.PAGE]


async def _alerts(store: Store) -> list[dict[str, Any]]:
    from seamline.metrics import list_alerts

    return [_plain(a) for a in await list_alerts(store)]


def _event(e: Any) -> dict[str, Any]:
    return {**_plain(e), "payload": e.payload}


def _approval(a: Any) -> dict[str, Any]:
    plain = _plain(a)
    plain.pop("request_json", None)
    plain.pop("decision_json", None)
    return {**plain, "request": a.request, "decision": a.decision}


async def _json_body(request: Request, who: Principal) -> dict[str, Any]:
    check_csrf(request, who, request.headers.get("x-csrf-token"))
    try:
        body = await request.json()
    except ValueError as exc:
        raise HTTPException(400, "the body must be JSON") from exc
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def _edited(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise HTTPException(422, f"the edited proposal is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise HTTPException(422, "the edited proposal must be a JSON object")
    return value


def _per_minute(text: str) -> int | None:
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise HTTPException(422, f"per minute must be a whole number, got {text!r}") from exc


def _status(text: str) -> ApprovalStatus | None:
    if text in ("", "all"):
        return None
    if text not in ("pending", "approved", "rejected", "edited", "expired"):
        raise HTTPException(422, f"unknown approval status {text!r}")
    return text  # type: ignore[return-value]


def _local(path: str) -> str:
    """Only same-site paths after log-in: no open redirect."""
    return path if path.startswith("/") and not path.startswith("//") else "/"
