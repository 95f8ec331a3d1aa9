"""The console's JSON API under ``/api``: the same views and actions as the pages, for
scripts (bearer tokens). Payloads, row data and approval requests are redacted like the
pages; raw ``…_json`` columns are never sent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from seamline.console import _actions, _data
from seamline.console._actions import (
    AlertCheck,
    approval_json,
    event_json,
    plain,
    record,
    run_json,
)
from seamline.console._auth import Principal, check_csrf
from seamline.console._config import ConsoleConfig
from seamline.store import ApprovalStatus, Store
from seamline.telemetry import Redactor

__all__ = ["api_router", "approval_status"]


def api_router(
    config: ConsoleConfig,
    *,
    db: Callable[[], Store],
    api: Callable[..., Principal],
    now: Callable[[], datetime],
    redact: Redactor,
    alerting: AlertCheck,
    throttle_names: list[str],
) -> APIRouter:
    r = APIRouter(prefix="/api")

    @r.get("/runs")
    async def runs(request: Request, kind: str = "", status: str = "", limit: int = 100) -> Any:
        api(request)
        found = await db().list_runs(
            kind=kind or None, status=status or None, limit=max(1, min(limit, 1000))
        )
        return [run_json(r, redact) for r in found]

    @r.get("/runs/{run_key:path}")
    async def run(request: Request, run_key: str) -> Any:
        api(request)
        detail = await _data.run_detail(db(), run_key)
        if detail is None:
            raise HTTPException(404, f"no run {run_key!r}")
        return {
            "run": run_json(detail.run, redact),
            "trace": [
                {
                    "depth": line.depth,
                    "duration_ms": line.duration_ms,
                    **record(line.span, redact),
                    "attributes": redact.attributes(line.span.attributes),
                }
                for line in detail.spans
            ],
            "attempts": [event_json(e, redact) for e in detail.attempts],
        }

    @r.get("/rows")
    async def rows(request: Request, kind: str = "", state: str = "", after: str = "") -> Any:
        api(request)
        found = await db().list_rows(
            kind=kind or None, state=state or None, after_id=after, limit=_data.PAGE
        )
        return [record(row, redact, data=row.data) for row in found]

    @r.get("/rows/{row_id:path}")
    async def row(request: Request, row_id: str) -> Any:
        api(request)
        found = await db().get_row(row_id)
        if found is None:
            raise HTTPException(404, f"no row {row_id!r}")
        history = await db().read_stream(_data.row_stream(found), limit=1000)
        return {
            "row": record(found, redact, data=found.data),
            "history": [event_json(e, redact) for e in history],
        }

    @r.get("/events")
    async def events(request: Request, stream: str = "", type: str = "", after: int = 0) -> Any:
        api(request)
        return [event_json(e, redact) for e in await _actions.events(db(), stream, type, after)]

    @r.get("/approvals")
    async def approvals(request: Request, status: str = "pending") -> Any:
        api(request)
        found = await db().list_approvals(status=approval_status(status), limit=_data.PAGE)
        return [approval_json(a, redact) for a in found]

    @r.get("/approvals/{approval_id:path}")
    async def approval(request: Request, approval_id: str) -> Any:
        api(request)
        found = await db().get_approval(approval_id)
        if found is None:
            raise HTTPException(404, f"no approval {approval_id!r}")
        view = await _data.approval_view(db(), found)
        held = view.pop("row")
        return {
            **approval_json(found, redact),
            "view": {
                **redact.value(plain(view)),
                "row": None if held is None else record(held, redact, data=held.data),
            },
        }

    @r.post("/approvals/{approval_id:path}/decide")
    async def decide(request: Request, approval_id: str) -> Any:
        who = api(request, "operator")
        body = await _json_body(request, who)
        decided = await _actions.decide(
            db(),
            config,
            who,
            approval_id,
            str(body.get("decision", "")),
            str(body.get("reason", "")),
            body.get("edited"),
        )
        return plain(decided)

    @r.get("/controls")
    async def controls(request: Request) -> Any:
        api(request)
        view = await _data.controls_view(db(), throttle_names)
        return {
            "kills": [
                {"scope": s, "by": by, "reason": redact.text(why), "at": at.isoformat()}
                for s, by, why, at in view["kills"]
            ],
            "throttles": redact.value(plain(view["throttles"])),
        }

    @r.post("/controls/{action}")
    async def control(request: Request, action: str) -> Any:
        who = api(request)
        body = await _json_body(request, who)
        reason = str(body.get("reason", ""))
        if action in ("kill", "revive"):
            scope = str(body.get("scope", ""))
            return plain(await _actions.switch(db(), config, who, action, scope, reason))
        if action == "throttle":
            api(request, "operator")
            value = body.get("per_minute")
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise HTTPException(422, "per_minute must be an integer or null")
            name = str(body.get("name", ""))
            version = await _actions.throttle(db(), throttle_names, who, name, value, reason)
            return {"name": body.get("name"), "per_minute": value, "version": version}
        raise HTTPException(404, f"no control {action!r}")

    @r.get("/metrics")
    async def metrics(request: Request, kind: str = "", hours: float = 24) -> Any:
        api(request)
        from seamline.metrics import compute_metrics

        window = timedelta(hours=max(0.1, min(hours, 24 * 90)))
        until = await _data.as_of(db(), now())
        result = await compute_metrics(db(), kind=kind or None, since=until - window, until=until)
        return plain(result)

    @r.get("/alerts")
    async def alerts(request: Request) -> Any:
        api(request)
        raised = await alerting.alerts(db(), await _data.as_of(db(), now()))
        return [plain(a) for a in raised]

    return r


async def _json_body(request: Request, who: Principal) -> dict[str, Any]:
    check_csrf(request, who, request.headers.get("x-csrf-token"))
    try:
        body = await request.json()
    except ValueError as exc:
        raise HTTPException(400, "the body must be JSON") from exc
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def approval_status(text: str) -> ApprovalStatus | None:
    if text in ("", "all"):
        return None
    if text not in ("pending", "approved", "rejected", "edited", "expired"):
        raise HTTPException(422, f"unknown approval status {text!r}")
    return text  # type: ignore[return-value]
