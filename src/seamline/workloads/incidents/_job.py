"""The incident job: a stream of incidents through the triage agent, on one store.

The job id comes from the seed and the incidents, so running the same stream again on the same
store continues the same job: devices are installed once, a closed incident is read back, an
open one resumes (its plan boundary replays, its saga continues from its row). The summary is
folded from the incidents' reports and checked against the device rows and their journals,
which is also why a second run reports the same figures as the first.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from seamline import codec
from seamline.clock import Clock, VirtualClock
from seamline.errors import ConfigError
from seamline.models import Model
from seamline.patterns import saga_step_key
from seamline.store import Store
from seamline.workloads.incidents._agent import (
    AGENT,
    OUTCOMES,
    IncidentAgent,
    IncidentReport,
)
from seamline.workloads.incidents._diagnostics import NocSystems
from seamline.workloads.incidents._incidents import Incident, incident_stream
from seamline.workloads.incidents._network import (
    DeviceState,
    Inventory,
    NetworkSim,
    build_inventory,
    fold_journal,
)
from seamline.workloads.incidents._plan import SimulatedTriageModel

__all__ = ["IncidentSummary", "InventoryCheck", "check_inventory", "job_id", "run_incidents"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_KIND_CLASS = {"degraded_cell": {"cell"}, "packet_loss": {"router"}}


def job_id(incidents: Sequence[Incident], seed: int) -> str:
    digest = hashlib.sha256(codec.encode(list(incidents)).encode()).hexdigest()
    return f"incidents-s{seed}-{digest[:8]}"


@dataclass(frozen=True, slots=True)
class InventoryCheck:
    """Whether the devices' state agrees with their journals and with how each incident
    ended. ``left_for_person``: devices a failed rollback left changed, each escalated."""

    consistent: bool
    problems: tuple[str, ...]
    changes_applied: int
    rollbacks: int
    devices_changed: tuple[str, ...]
    left_for_person: tuple[str, ...]


def check_inventory(
    job: str,
    devices: Mapping[str, DeviceState],
    journals: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
    reports: Sequence[IncidentReport],
) -> InventoryCheck:
    """Pure: every device's configuration equals its journal folded from where it started;
    no change or rollback was recorded twice; a resolved incident's changes all stand, a
    rolled-back one's are all undone, and an escalated one's are undone except those a person
    was asked about."""
    problems: list[str] = []
    applied: dict[str, str] = {}
    reverted: dict[str, str] = {}
    for device, journal in journals.items():
        state = devices[device]
        folded = fold_journal(state.initial, journal)
        if folded != state.config:
            problems.append(f"{device}: configuration {state.config} is not its journal's {folded}")
        for kind, p in journal:
            if kind == "change_applied":
                if p["key"] in applied:
                    problems.append(f"{p['key']} was applied twice")
                applied[p["key"]] = device
            elif kind == "change_reverted":
                if p["undoes"] in reverted:
                    problems.append(f"{p['undoes']} was rolled back twice")
                if p["undoes"] not in applied:
                    problems.append(f"{p['key']} rolls back {p['undoes']}, never applied")
                reverted[p["undoes"]] = device
    left: set[str] = set()
    for r in reports:
        key = {step: saga_step_key(f"{job}:{r.incident}", step) for step in r.plan}
        standing = {s for s in r.plan if key[s] in applied and key[s] not in reverted}
        undone = {s for s in r.plan if key[s] in reverted}
        expected: set[str] = set()
        if r.outcome == "resolved":
            expected = set(r.plan)
        elif r.outcome == "rollback_escalated":
            expected = set(r.not_undone)
            left.update(applied[key[s]] for s in r.not_undone if key[s] in applied)
        if standing != expected:
            problems.append(
                f"{r.incident} ({r.outcome}): changes standing {sorted(standing)}, "
                f"expected {sorted(expected)}"
            )
        if undone != set(r.rolled_back):
            problems.append(
                f"{r.incident} ({r.outcome}): rolled back {sorted(undone)}, "
                f"reported {sorted(r.rolled_back)}"
            )
    return InventoryCheck(
        consistent=not problems,
        problems=tuple(problems),
        changes_applied=len(applied),
        rollbacks=len(reverted),
        devices_changed=tuple(sorted(d for d, s in devices.items() if s.config != s.initial)),
        left_for_person=tuple(sorted(left)),
    )


@dataclass(frozen=True)
class IncidentSummary:
    """What the job did. ``plans_escalated`` counts incidents handed to a person: no plan
    passed verification, a rollback kept failing, or the triage worker kept crashing."""

    job: str
    model: str
    simulated: bool
    incidents: int
    triaged: int
    outcomes: Mapping[str, int]
    plans_committed: int
    plans_rejected: int
    plans_escalated: int
    gate_denied: int
    changes_applied: int
    rollbacks: int
    proposals: int
    rejects: Mapping[str, int]
    diagnostics_retries: int
    diagnostics_substituted: int
    triage_restarts: int
    customers_affected: int
    device_state_consistent: bool
    devices_left_for_person: tuple[str, ...]
    consistency_problems: tuple[str, ...]
    tokens: int
    reports: tuple[IncidentReport, ...] = field(repr=False)
    wall_seconds: float = field(default=0.0, compare=False)


def _validate(incidents: Sequence[Incident], inventory: Inventory) -> None:
    seen: set[str] = set()
    for i in incidents:
        if not _ID.fullmatch(i.id) or i.id in seen:
            raise ConfigError(
                f"incident id {i.id!r}: ids must be unique, 1-32 letters, digits or '_.-'"
            )
        seen.add(i.id)
        state = inventory.devices.get(i.device)
        if state is None:
            raise ConfigError(
                f"incident {i.id}: no device {i.device!r}; known: {', '.join(inventory.devices)}"
            )
        allowed = _KIND_CLASS.get(i.kind, {"cell", "router"})
        if state.device_class not in allowed:
            raise ConfigError(
                f"incident {i.id}: a {i.kind} incident is about a {' or '.join(sorted(allowed))}, "
                f"but {i.device} is a {state.device_class}"
            )


async def run_incidents(
    store: Store,
    *,
    incidents: int | Sequence[Incident],
    seed: int,
    clock: Clock,
    model: Model | None = None,
    principal: str = AGENT,
    on_progress: Callable[[int, int], None] | None = None,
) -> IncidentSummary:
    """Triage ``incidents`` (a count of seeded ones, or the incidents themselves) one after
    the other, and summarise the job from the store.

    ``clock`` should be the one the store was opened with; a :class:`VirtualClock` is moved to
    each incident's arrival. ``model`` defaults to the simulated triage model (seeded by
    ``seed``); ``principal`` is who the agent applies plans as (the gate decides if it may).
    """
    started = time.perf_counter()
    inventory = build_inventory(seed)
    stream = (
        incident_stream(incidents, seed=seed, inventory=inventory)
        if isinstance(incidents, int)
        else tuple(incidents)
    )
    _validate(stream, inventory)
    job = job_id(stream, seed)
    model = model or SimulatedTriageModel(seed=seed, clock=clock)
    network = NetworkSim(store, job)
    await network.install(inventory)
    systems = NocSystems(network, seed=seed, faults={i.id: i.faults for i in stream})
    agent = IncidentAgent(store, clock, model, network, systems, inventory, job, principal)
    start = clock.now()
    reports: list[IncidentReport] = []
    for n, incident in enumerate(stream, 1):
        if isinstance(clock, VirtualClock):
            clock.advance_to(start + timedelta(minutes=incident.minute))
        reports.append(await agent.handle(incident))
        if on_progress is not None:
            on_progress(n, len(stream))
    devices = await network.snapshot()
    journals = {d: await network.journal(d) for d in inventory.devices}
    check = check_inventory(job, devices, journals, reports)
    tokens = (await store.usage_totals(job, include_children=True)).total_tokens
    return summarise(job, model, reports, check, tokens, time.perf_counter() - started)


def summarise(
    job: str,
    model: Model,
    reports: Sequence[IncidentReport],
    check: InventoryCheck,
    tokens: int,
    wall_seconds: float = 0.0,
) -> IncidentSummary:
    """Fold the reports and the inventory check into the job's figures. Pure."""
    outcomes = Counter(r.outcome for r in reports)
    rejects = Counter(code for r in reports for code in r.rejects)
    return IncidentSummary(
        job=job,
        model=model.name,
        simulated=model.name.startswith("sim:"),
        incidents=len(reports),
        triaged=len(reports) - outcomes["triage_escalated"],
        outcomes={o: outcomes[o] for o in OUTCOMES},
        plans_committed=sum(bool(r.plan) for r in reports),
        plans_rejected=outcomes["plan_rejected"],
        plans_escalated=sum(r.escalation is not None for r in reports),
        gate_denied=outcomes["apply_denied"],
        changes_applied=check.changes_applied,
        rollbacks=check.rollbacks,
        proposals=sum(r.proposals for r in reports),
        rejects=dict(sorted(rejects.items(), key=lambda kv: (-kv[1], kv[0]))),
        diagnostics_retries=sum(r.diagnostics_retries for r in reports),
        diagnostics_substituted=sum(len(r.diagnostics_substituted) for r in reports),
        triage_restarts=sum(r.triage_restarts for r in reports),
        customers_affected=sum(r.customers for r in reports),
        device_state_consistent=check.consistent,
        devices_left_for_person=check.left_for_person,
        consistency_problems=check.problems,
        tokens=tokens,
        reports=tuple(reports),
        wall_seconds=wall_seconds,
    )
