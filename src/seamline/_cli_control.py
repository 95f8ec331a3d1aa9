"""``seamline approvals`` and ``seamline kill``: the human-in-the-loop planes from a shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from seamline._cli_common import StoreOption, fail, open_existing_store
from seamline.errors import ConfigError, SeamlineError
from seamline.patterns import (
    ApprovalDecided,
    ControlConfig,
    KillSwitch,
    NotAuthorised,
    decide_approval,
    expire_overdue,
)
from seamline.store import DEFAULT_STORE_URL, NotPending, SqlStore
from seamline.telemetry import configure_tracing, shutdown_tracing

__all__ = ["approvals_app", "kill_app"]

_out = Console()
_err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="SEAMLINE_CONTROL",
        help="Control file (YAML): kill_switch principals, approvers, throttles.",
    ),
]
AsOption = Annotated[str, typer.Option("--as", help="Who you are; recorded in the audit trail.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded in the audit trail.")]

approvals_app = typer.Typer(
    help="List, show and decide approvals and escalations. Every decision is audited with "
    "who made it and why.",
    no_args_is_help=True,
)
kill_app = typer.Typer(
    help="Stop a run (run:ID), a workflow kind (kind:NAME) or everything (all). Commits check "
    "the kill switch inside their own transaction: in-flight commits finish or never start.",
    no_args_is_help=True,
)


def load_control(path: Path | None) -> ControlConfig:
    if path is None:
        raise ConfigError(
            "no control file: pass --config FILE or set SEAMLINE_CONTROL. It names who may use "
            "the kill switch and decide approvals, e.g.\n  kill_switch: {alice: [all]}\n"
            "  approvers: [alice, bob]"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read control file {path}: {exc}") from exc
    try:
        return ControlConfig.model_validate(raw)
    except Exception as exc:
        raise ConfigError(f"control file {path} is not valid: {exc}") from exc


def _control(path: Path | None) -> ControlConfig:
    try:
        return load_control(path)
    except SeamlineError as exc:
        raise fail(exc) from exc


def _run(work: Any) -> Any:
    try:
        return asyncio.run(work)
    except SeamlineError as exc:
        raise fail(exc) from exc


async def _with_store(url: str, fn: Any, *, traced: bool = False) -> Any:
    """Run ``fn`` over the store; ``traced``: a person's action, whose ``human …`` span is
    kept in that store (and exported by OTLP when configured), as ``worker`` keeps its own."""
    store: SqlStore = open_existing_store(url)
    if traced:
        configure_tracing(store)
    try:
        return await fn(store)
    finally:
        if traced:
            await shutdown_tracing(store)
        await store.close()


@approvals_app.command("list")
def list_approvals(
    store: StoreOption = DEFAULT_STORE_URL,
    status: Annotated[
        str, typer.Option(help="pending, approved, rejected, edited, expired or all.")
    ] = "pending",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Show approvals and escalations, oldest first."""

    async def go(st: SqlStore) -> None:
        rows = await st.list_approvals(
            status=None if status == "all" else status,  # type: ignore[arg-type]
            limit=limit,
        )
        table = Table(title=f"approvals ({status})", title_justify="left")
        for col in ("id", "kind", "status", "requested by", "due", "reason"):
            table.add_column(col)
        for a in rows:
            table.add_row(
                a.id,
                a.kind,
                a.status,
                a.requested_by,
                a.due_at.isoformat(timespec="minutes") if a.due_at else "-",
                a.reason[:80],
            )
        _out.print(table)
        if not rows:
            _out.print("nothing to show")

    _run(_with_store(store, go))


@approvals_app.command("show")
def show(approval_id: str, store: StoreOption = DEFAULT_STORE_URL) -> None:
    """Show one request in full: what the agent tried, the decision needed, the options."""

    async def go(st: SqlStore) -> None:
        a = await st.get_approval(approval_id)
        if a is None:
            raise ConfigError(
                f"no approval {approval_id!r}; list them with "
                "'seamline approvals list --status all'"
            )
        _out.print(f"[bold]{a.kind} {a.id}[/] — {a.status}")
        _out.print(f"reason: {a.reason}")
        _out.print(
            f"requested by {a.requested_by} at {a.created_at.isoformat()}"
            + (f", due {a.due_at.isoformat()}" if a.due_at else "")
        )
        _out.print_json(json.dumps(a.request, default=str))
        if a.decision is not None:
            _out.print(f"decided by {a.decided_by} at {a.decided_at}:")
            _out.print_json(json.dumps(a.decision, default=str))

    _run(_with_store(store, go))


def _decide(
    approval_id: str,
    decision: str,
    principal: str,
    reason: str,
    store: str,
    config: Path | None,
    edited: dict[str, Any] | None = None,
) -> None:
    # Who may decide comes from the control file, as for the kill switch: without one, or
    # with no approvers in it, nobody may (default deny), never "anybody who types --as".
    control = _control(config)
    if not control.approvers:
        raise fail(
            ConfigError(
                f"the control file {config} names no approvers; add e.g. 'approvers: "
                f"[{principal}]' to let {principal} decide approvals"
            )
        )
    approvers = frozenset(control.approvers)

    async def go(st: SqlStore) -> None:
        result = await decide_approval(
            st,
            approval_id,
            principal=principal,
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            edited=edited,
            approvers=approvers,
        )
        if isinstance(result, ApprovalDecided):
            _out.print(f"{approval_id}: {result.status} by {principal}")
        elif isinstance(result, NotPending):
            raise ConfigError(
                f"{approval_id} is not pending (status: {result.status}); a decision is made once"
            )
        elif isinstance(result, NotAuthorised):
            raise ConfigError(result.reason)

    _run(_with_store(store, go, traced=True))


@approvals_app.command()
def approve(
    approval_id: str,
    as_: AsOption,
    reason: ReasonOption,
    store: StoreOption = DEFAULT_STORE_URL,
    config: ConfigOption = None,
) -> None:
    """Approve a pending request."""
    _decide(approval_id, "approve", as_, reason, store, config)


@approvals_app.command()
def reject(
    approval_id: str,
    as_: AsOption,
    reason: ReasonOption,
    store: StoreOption = DEFAULT_STORE_URL,
    config: ConfigOption = None,
) -> None:
    """Reject a pending request."""
    _decide(approval_id, "reject", as_, reason, store, config)


@approvals_app.command()
def edit(
    approval_id: str,
    as_: AsOption,
    reason: ReasonOption,
    set_: Annotated[list[str], typer.Option("--set", help="FIELD=VALUE; repeatable.")],
    store: StoreOption = DEFAULT_STORE_URL,
    config: ConfigOption = None,
) -> None:
    """Approve with edited values, e.g. --set discount=0.15."""
    edited: dict[str, Any] = {}
    for item in set_:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} is not FIELD=VALUE")
        key, value = item.split("=", 1)
        edited[key] = value
    _decide(approval_id, "edit", as_, reason, store, config, edited)


@approvals_app.command("expire")
def expire(store: StoreOption = DEFAULT_STORE_URL) -> None:
    """Apply the fallback decision to every request past its SLA (default deny)."""

    async def go(st: SqlStore) -> None:
        from datetime import UTC, datetime

        done = await expire_overdue(st, datetime.now(UTC))
        _out.print(f"expired {len(done)} request(s)")

    _run(_with_store(store, go))


def _switch(
    scope: str, principal: str, reason: str, store: str, config: Path | None, revive: bool
) -> None:
    control = _control(config)

    async def go(st: SqlStore) -> None:
        switch = KillSwitch(st, control.kill_authorised())
        act = switch.revive if revive else switch.kill
        result = await act(scope, principal=principal, reason=reason)
        if isinstance(result, NotAuthorised):
            raise ConfigError(f"{result.reason} (see kill_switch in the control file)")
        _out.print(f"{scope}: {'revived' if revive else 'stopped'} by {principal}")

    _run(_with_store(store, go, traced=True))


@kill_app.command("stop")
def stop(
    scope: str,
    as_: AsOption,
    reason: ReasonOption,
    store: StoreOption = DEFAULT_STORE_URL,
    config: ConfigOption = None,
) -> None:
    """Stop SCOPE: 'all', 'kind:NAME' or 'run:ID'. Only principals the control file names."""
    _switch(scope, as_, reason, store, config, revive=False)


@kill_app.command("revive")
def revive(
    scope: str,
    as_: AsOption,
    reason: ReasonOption,
    store: StoreOption = DEFAULT_STORE_URL,
    config: ConfigOption = None,
) -> None:
    """Lift a stop on SCOPE."""
    _switch(scope, as_, reason, store, config, revive=True)


@kill_app.command("list")
def list_kills(store: StoreOption = DEFAULT_STORE_URL) -> None:
    """Show what is stopped, by whom and why."""

    async def go(st: SqlStore) -> None:
        kills = await st.kills()
        if not kills:
            _out.print("nothing is stopped")
        for scope, by, reason, at in kills:
            _out.print(f"{scope}: stopped by {by} at {at.isoformat()} — {reason}")

    _run(_with_store(store, go))
