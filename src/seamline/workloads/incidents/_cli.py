"""``seamline incidents``: autonomous network-incident triage on a simulated network."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption, fail
from seamline.errors import SeamlineError
from seamline.store import DEFAULT_STORE_URL, open_store, parse_store_url

if TYPE_CHECKING:
    from seamline.workloads.incidents._job import IncidentSummary

__all__ = ["cli"]

_out = Console()
_err = Console(stderr=True)

_SHORT = {"rollback_change": "rollback", "adjust_qos": "qos"}


def _ops(steps: tuple[str, ...]) -> list[str]:
    """Step names are ``c<n>-<op>-<device>``; the op is what the table shows."""
    return [step.split("-")[1] for step in steps]


cli = typer.Typer(
    help="Autonomous network-incident triage that applies and rolls back configuration "
    "changes, on a simulated network, in virtual time.",
    no_args_is_help=True,
)


@cli.callback()
def _incidents() -> None:
    """Autonomous network-incident triage (P1 + P2 + P4) on a SIMULATED network."""


@cli.command("run")
def run(
    store: StoreOption = DEFAULT_STORE_URL,
    incidents: Annotated[
        int, typer.Option(min=1, max=1000, help="How many seeded incidents to triage.")
    ] = 12,
    seed: SeedOption = 7,
    profile: Annotated[
        str, typer.Option(help="The simulated model's profile (e.g. typical-v1, careless-v1).")
    ] = "typical-v1",
    principal: Annotated[
        str, typer.Option(help="Who the agent applies plans as; the gate decides if it may.")
    ] = "incident-agent",
) -> None:
    """Triage a stream of seeded incidents: diagnose, plan, gate, apply or roll back.

    Run the same command again on the same store and it reads the job back: nothing is
    applied or rolled back twice, and the summary is the same.
    """
    try:
        _run(store, incidents, seed, profile, principal)
    except SeamlineError as exc:
        raise fail(exc) from exc


def _run(store_url: str, count: int, seed: int, profile: str, principal: str) -> None:
    from seamline.clock import VirtualClock
    from seamline.workloads.incidents._job import run_incidents
    from seamline.workloads.incidents._network import STREAM_START
    from seamline.workloads.incidents._plan import SimulatedTriageModel

    clock = VirtualClock(STREAM_START)
    model = SimulatedTriageModel(profile, seed=seed, clock=clock)
    _out.print(
        f"[yellow]SIMULATED model {model.name} (seeded, seed {seed}); the network, its "
        "customers, tickets, telemetry, alarms and faults are SIMULATED (seeded)[/]"
    )
    _out.print(f"store: {parse_store_url(store_url).display}")

    async def go() -> IncidentSummary:
        st = open_store(store_url, clock=clock)
        try:
            return await run_incidents(
                st, incidents=count, seed=seed, clock=clock, model=model, principal=principal
            )
        finally:
            await st.close()

    summary = asyncio.run(go())
    _print(summary)


def _print(s: IncidentSummary) -> None:
    label = "SIMULATED " if s.simulated else ""
    per = Table(title=f"incident job {s.job}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("incident", "kind", "device", "outcome", "plan", "undone"):
        per.add_column(column, no_wrap=column in ("incident", "outcome"))
    for r in s.reports[:40]:
        per.add_row(
            r.incident,
            r.kind,
            r.device,
            r.outcome,
            ", ".join(_SHORT.get(op, op) for op in _ops(r.plan)) or "-",
            ", ".join(step.split("-", 1)[0] for step in r.rolled_back) or "-",
        )
    if len(s.reports) > 40:
        per.add_row("…", f"{len(s.reports) - 40} more", "", "", "", "")
    _out.print(per)
    facts = Table(show_header=False, title="what happened", title_justify="left")
    facts.add_column()
    facts.add_column(justify="right")
    for name, value in (
        ("incidents", s.incidents),
        ("triaged", s.triaged),
        ("plans committed (boundary)", s.plans_committed),
        ("plans rejected (no plan passed verification)", s.plans_rejected),
        ("plans escalated to a person", s.plans_escalated),
        ("plans denied at the gate", s.gate_denied),
        ("config changes applied", s.changes_applied),
        ("rollbacks", s.rollbacks),
        ("proposals", s.proposals),
        ("diagnostic retries", s.diagnostics_retries),
        ("diagnostics missing (substituted)", s.diagnostics_substituted),
        ("triage restarts (supervisor)", s.triage_restarts),
        ("customers affected", s.customers_affected),
        ("tokens", s.tokens),
    ):
        facts.add_row(name, f"{value:,}")
    for outcome, n in s.outcomes.items():
        facts.add_row(f"outcome: {outcome}", f"{n:,}")
    for reason, n in list(s.rejects.items())[:8]:
        facts.add_row(f"rejects: {reason}", f"{n:,}")
    state = "[green]consistent[/]" if s.device_state_consistent else "[red]INCONSISTENT[/]"
    facts.add_row("final device state", state)
    if s.devices_left_for_person:
        facts.add_row("left changed for a person", ", ".join(s.devices_left_for_person))
    facts.add_row("model", f"{label}{s.model}")
    facts.add_row("wall time", f"{s.wall_seconds:.1f} s")
    _out.print(facts)
    for problem in s.consistency_problems:
        _err.print(f"[red]inconsistent:[/] {escape(problem)}")
    if s.simulated:
        _out.print("[yellow]All of the above ran against a SIMULATED network and model.[/]")
