"""What the console's pages and API both do: the human actions (decide, kill or revive,
throttle), reading the event log, the alerts, and shaping records as redacted JSON.

Each action's ``human …`` span is written to the store as soon as the action is done (when
tracing is configured, as ``seamline console serve`` does), so a person's decision is in
the store's traces even if the server is stopped hard afterwards.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import HTTPException
from fastapi.encoders import jsonable_encoder

from seamline.console import _data
from seamline.console._auth import Principal
from seamline.console._config import ConsoleConfig
from seamline.errors import ConfigError
from seamline.metrics import Alert, AlertRules, evaluate_alerts, list_alerts
from seamline.patterns import (
    ApprovalDecided,
    KillSwitch,
    NotAuthorised,
    Stopped,
    decide_approval,
    set_throttle,
)
from seamline.store import Approval, Event, NotPending, RunRecord, Store
from seamline.telemetry import Redactor, flush_spans

__all__ = [
    "AlertCheck",
    "approval_json",
    "decide",
    "event_json",
    "events",
    "plain",
    "record",
    "run_json",
    "switch",
    "throttle",
]


def plain(value: Any) -> Any:
    """Records as JSON-ready values: money as exact strings, times in ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return jsonable_encoder(value, custom_encoder={Decimal: str, datetime: datetime.isoformat})


def record(value: Any, redact: Redactor, **decoded: Any) -> dict[str, Any]:
    """A store record as JSON: its raw ``…_json`` columns left out, and ``decoded`` (the
    payload, data, request or decision they hold) redacted in their place."""
    out = {k: v for k, v in plain(value).items() if not k.endswith("_json")}
    return {**out, **{k: redact.value(plain(v)) for k, v in decoded.items()}}


def event_json(e: Event, redact: Redactor) -> dict[str, Any]:
    return record(e, redact, payload=e.payload)


def run_json(r: RunRecord, redact: Redactor) -> dict[str, Any]:
    return {**plain(r), "reason": None if r.reason is None else redact.text(r.reason)}


def approval_json(a: Approval, redact: Redactor) -> dict[str, Any]:
    out = record(a, redact, request=a.request, decision=a.decision)
    return {**out, "reason": redact.text(a.reason)}


async def decide(
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
    finally:
        await flush_spans(store)
    if isinstance(result, NotAuthorised):
        raise HTTPException(403, result.reason)
    if isinstance(result, NotPending):
        raise HTTPException(409, f"approval {approval_id!r} was already decided")
    return result


async def switch(
    store: Store, config: ConsoleConfig, who: Principal, action: str, scope: str, reason: str
) -> Stopped:
    if not reason.strip():
        raise HTTPException(422, "a kill or revive needs a reason")
    kill_switch = KillSwitch(store, config.kill_authorised())
    try:
        act = kill_switch.kill if action == "kill" else kill_switch.revive
        done = await act(scope, principal=who.name, reason=reason)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    finally:
        await flush_spans(store)
    if isinstance(done, NotAuthorised):
        raise HTTPException(403, done.reason)
    return done


async def throttle(
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
    finally:
        await flush_spans(store)


async def events(store: Store, stream: str, type: str, after: int) -> list[Event]:
    """A page of the log from ``after``, by stream prefix; a type filter reads on up to ten
    pages to fill the page."""
    found: list[Event] = []
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


class AlertCheck:
    """Raises alerts from the console, so they show without anyone running
    ``seamline metrics --alerts``: whenever alerts are shown, the rules are evaluated over
    every kind at that instant unless they already were in the same ``rules.align`` period.
    Within one period the windows, and so the alerts, are the same (evaluation is
    idempotent), so once per period is all the work there is."""

    def __init__(self, rules: AlertRules | None = None) -> None:
        self.rules = rules or AlertRules()
        self._evaluated: datetime | None = None  # end of the current window last evaluated

    async def alerts(self, store: Store, at: datetime) -> list[Alert]:
        """Evaluate at ``at`` if this period was not evaluated yet; every raised alert,
        newest first."""
        end = self.rules.windows(at)[2]
        if end != self._evaluated:
            await evaluate_alerts(store, None, at, rules=self.rules)
            self._evaluated = end
        return await list_alerts(store)
