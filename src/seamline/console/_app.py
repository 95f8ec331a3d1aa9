"""The operations console: a FastAPI app over one store, server-rendered pages plus a JSON
API (:mod:`seamline.console._api`), with log-in, roles, CSRF on every form, every human
action audited and traced, alerts evaluated as they are shown, and row data, payloads and
free text redacted like spans."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from starlette.middleware.sessions import SessionMiddleware

from seamline.console import _actions, _data
from seamline.console._actions import AlertCheck, plain
from seamline.console._api import api_router, approval_status
from seamline.console._auth import (
    LoginRequired,
    Principal,
    check_csrf,
    csrf_token,
    require,
)
from seamline.console._config import ConsoleConfig, Role, verify_password
from seamline.errors import ConfigError
from seamline.metrics import AlertRules
from seamline.store import Store, UnitOfWork, open_store
from seamline.telemetry import Redactor, flush_spans, redactor

__all__ = ["create_app"]

HERE = Path(__file__).parent


def create_app(
    config: ConsoleConfig,
    *,
    store_url: str | None = None,
    store: Store | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    alert_rules: AlertRules | None = None,
) -> FastAPI:
    """The console app. Give ``store_url`` (opened and closed with the app) or an open
    ``store`` (the caller closes it). ``now`` is the console's clock; ``alert_rules`` are
    evaluated whenever alerts are shown (see :class:`~seamline.console._actions.AlertCheck`)."""
    if (store_url is None) == (store is None):
        raise ConfigError("create_app needs exactly one of store_url and store")
    state: dict[str, Store] = {}
    redact = redactor(config.redact_fields)
    alerting = AlertCheck(alert_rules)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["store"] = store if store is not None else open_store(store_url or "")
        try:
            yield
        finally:
            await flush_spans(state["store"])  # spans of actions still in flight at the end
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
    templates.env.filters["pretty"] = lambda v: json.dumps(
        redact.value(plain(v)), indent=2, sort_keys=True
    )
    templates.env.filters["redact"] = lambda v: _redacted(redact, v)
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
            alerts=await alerting.alerts(db(), until),
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
        events = await _actions.events(db(), stream, type, after)
        return render(
            request, "events.html", who, events=events, stream=stream, type=type, after=after
        )

    @app.get("/approvals", response_class=HTMLResponse)
    async def approvals_page(request: Request, status: str = "pending") -> Response:
        who = page(request)
        approvals = await db().list_approvals(status=approval_status(status), limit=_data.PAGE)
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
        await _actions.decide(db(), config, who, approval_id, decision, reason, _edited(edited))
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
            await _actions.switch(db(), config, who, action, scope, reason)
        elif action == "throttle":
            page(request, "operator")
            await _actions.throttle(
                db(), throttle_names, who, name, _per_minute(per_minute), reason
            )
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

        body = await prometheus_text(db(), now=now())
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(
        api_router(
            config,
            db=db,
            api=api,
            now=now,
            redact=redact,
            alerting=alerting,
            throttle_names=throttle_names,
        )
    )
    return app


def _redacted(redact: Redactor, value: Any) -> Any:
    """The ``redact`` template filter: free text, or a mapping (span attributes)."""
    if isinstance(value, str):
        return redact.text(value)
    return None if value is None else redact.value(plain(value))


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


def _local(path: str) -> str:
    """Only same-site paths after log-in: no open redirect."""
    return path if path.startswith("/") and not path.startswith("//") else "/"
