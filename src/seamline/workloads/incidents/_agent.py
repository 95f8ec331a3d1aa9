"""One incident, end to end: supervised triage (P1 + the boundary), the gate (P4), the saga (P2).

1. A :class:`~seamline.patterns.Supervisor` runs the triage worker: diagnostics gathered in
   parallel and merged by declared priority (P1), then the plan proposed by the model and
   verified at the boundary. A crash restarts it after a backoff; the plan boundary is keyed
   by the incident, so a restart replays a committed plan instead of asking again. Past the
   restart limit a person is asked.
2. A :class:`~seamline.patterns.Gate` decides whether the plan may be applied: the role table
   (who may apply), then versioned policy over the live inventory (a freeze may have started
   since the plan was made). A deny is audited; an allow is audited in the same unit as the
   authorisation it grants.
3. The plan runs as a :class:`~seamline.patterns.Saga`, one step per change, each registering
   its rollback before it runs. A change the device refuses ends the forward run and the
   changes before it are undone in reverse order, once each; a rollback that keeps failing
   is escalated to a person, with what was and was not undone.

Each incident ends with a ``closed`` event carrying its :class:`IncidentReport`; running the
same incidents again reads the reports back instead of acting twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from seamline import codec
from seamline.boundary import Committed, Escalated, Failed, PolicyVerifier, Runtime, load_policy
from seamline.budget import Budget, EscalateToHuman
from seamline.clock import Clock
from seamline.errors import SeamlineError
from seamline.models import Model
from seamline.patterns import (
    CompensationContext,
    Delegated,
    Gate,
    GateDeny,
    Saga,
    SagaCompensated,
    SagaCompleted,
    SagaNeedsHuman,
    SagaRecord,
    SagaStep,
    SagaStepContext,
    Supervisor,
    saga_step_key,
)
from seamline.store import Store, UnitOfWork
from seamline.workloads.incidents._diagnostics import (
    DiagnosticQuery,
    NocSystems,
    diagnostics_delegation,
)
from seamline.workloads.incidents._incidents import Incident, SimulatedFaults
from seamline.workloads.incidents._network import (
    ConfigChange,
    Inventory,
    NetworkSim,
)
from seamline.workloads.incidents._plan import (
    POLICIES,
    RemediationPlan,
    TriageInput,
    incident_stream_id,
    plan_boundary,
)

__all__ = [
    "AGENT",
    "IncidentAgent",
    "IncidentOutcome",
    "IncidentReport",
    "OUTCOMES",
    "apply_gate",
    "remediation_saga",
    "step_name",
]

AGENT = "incident-agent"
"""The principal the triage agent applies plans as."""
APPLY_POLICY = POLICIES / "config-apply-2026.11.yaml"

IncidentOutcome = Literal[
    "resolved",
    "rolled_back",
    "rollback_escalated",
    "plan_rejected",
    "plan_failed",
    "apply_denied",
    "triage_escalated",
]
OUTCOMES: tuple[IncidentOutcome, ...] = (
    "resolved",
    "rolled_back",
    "rollback_escalated",
    "plan_rejected",
    "plan_failed",
    "apply_denied",
    "triage_escalated",
)


@dataclass(frozen=True, slots=True)
class IncidentReport:
    """How one incident ended, as its ``closed`` event records it. Step names are the saga's
    (``c<n>-<op>-<device>``); ``rolled_back`` is in the order the rollbacks ran."""

    incident: str
    kind: str
    device: str
    outcome: IncidentOutcome
    customers: int
    plan: tuple[str, ...] = ()
    blast_radius: int = 0
    proposals: int = 0
    rejects: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    gate: str | None = None
    applied: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    not_undone: tuple[str, ...] = ()
    escalation: str | None = None
    diagnostics_retries: int = 0
    diagnostics_substituted: tuple[str, ...] = ()
    diagnostics_conflicts: tuple[str, ...] = ()
    triage_restarts: int = 0


class TriageCrashed(RuntimeError):
    """The triage worker died (a seeded, simulated fault)."""


@dataclass(frozen=True, slots=True)
class _Triaged:
    result: Committed | Escalated | Failed
    retries: int
    substituted: tuple[str, ...]
    conflicts: tuple[str, ...]


def apply_gate() -> Gate:
    """The gate before any configuration change: who may apply, and the apply policy."""
    policy = load_policy(APPLY_POLICY)
    return Gate(
        "config-apply",
        roles={"apply_plan": frozenset({AGENT, "noc-oncall"})},
        policy=PolicyVerifier(policy, name=f"policy:{policy.policy}"),
    )


def step_name(n: int, change: ConfigChange) -> str:
    return f"c{n + 1}-{change.op}-{change.device}"


def remediation_saga(plan: RemediationPlan, network: NetworkSim, faults: SimulatedFaults) -> Saga:
    """One step per change, in the plan's order; each step's rollback restores what the
    change overwrote, under its own key."""

    def action(change: ConfigChange, refuse: bool) -> Callable[[SagaStepContext], Awaitable[Any]]:
        async def act(ctx: SagaStepContext) -> Any:
            return await network.apply(change, key=ctx.key, refuse=refuse)

        return act

    def rollback(device: str, fail: bool) -> Callable[[CompensationContext], Awaitable[Any]]:
        async def undo(ctx: CompensationContext) -> Any:
            of_key = saga_step_key(ctx.saga_id, ctx.step)
            return await network.revert(device, of_key=of_key, key=ctx.key, fail=fail)

        return undo

    return Saga(
        "incident-remediation",
        [
            SagaStep(
                step_name(n, change),
                action(change, faults.reject_change == n),
                rollback(change.device, faults.rollback_fails == n),
            )
            for n, change in enumerate(plan.changes)
        ],
        step_timeout_s=10.0,
        compensation_attempts=3,
        backoff_initial_s=2.0,
        backoff_max_s=30.0,
        escalation_sla=timedelta(hours=1),
    )


@dataclass
class IncidentAgent:
    """The triage agent for one job: its boundary, orchestrator, gate and supervisor."""

    store: Store
    clock: Clock
    model: Model
    network: NetworkSim
    systems: NocSystems
    inventory: Inventory
    job: str
    principal: str = AGENT

    def __post_init__(self) -> None:
        self.runtime = Runtime(self.store, self.clock)
        self.boundary = plan_boundary(self.model)
        self.diagnostics = diagnostics_delegation(self.systems, clock=self.clock)
        self.gate = apply_gate()
        self.supervisor = Supervisor(
            self.store,
            clock=self.clock,
            max_restarts=2,
            window=timedelta(minutes=10),
            backoff_initial=timedelta(seconds=5),
            backoff_max=timedelta(minutes=1),
        )

    async def handle(self, incident: Incident) -> IncidentReport:
        """Triage, gate and apply one incident, or read back how it ended before."""
        stream = incident_stream_id(self.job, incident.id)
        recorded = await self._recorded(stream)
        if recorded is not None:
            return recorded
        customers = len(self.inventory.customers_of([incident.device]))
        await self._once(
            stream,
            "opened",
            {"kind": incident.kind, "device": incident.device, "customers": customers},
        )
        report = IncidentReport(
            incident.id, incident.kind, incident.device, "plan_failed", customers
        )
        triaged: list[_Triaged] = []
        runs = 0

        async def triage_worker() -> None:
            nonlocal runs
            runs += 1
            done = await self._triage(incident, runs)
            if runs <= incident.faults.triage_crashes:
                raise TriageCrashed(
                    f"triage of {incident.id} crashed after proposing (simulated fault, run "
                    f"{runs} of {incident.faults.triage_crashes} planned crashes)"
                )
            triaged.append(done)

        supervised = await self.supervisor.supervise(
            f"triage:{self.job}:{incident.id}", triage_worker
        )
        if supervised.outcome == "cancelled":  # the run is stopping: record nothing as ended
            raise asyncio.CancelledError
        report = replace(report, triage_restarts=supervised.restarts)
        if supervised.outcome != "finished" or not triaged:
            return await self._close(
                stream,
                replace(report, outcome="triage_escalated", escalation=supervised.approval_id),
            )
        t = triaged[-1]
        proposals, rejects = await self._boundary_record(t.result.key)
        report = replace(
            report,
            proposals=proposals,
            rejects=rejects,
            diagnostics_retries=t.retries,
            diagnostics_substituted=t.substituted,
            diagnostics_conflicts=t.conflicts,
        )
        if isinstance(t.result, Escalated):
            escalated = replace(report, outcome="plan_rejected", escalation=t.result.approval_id)
            return await self._close(stream, escalated)
        if isinstance(t.result, Failed):
            return await self._close(stream, replace(report, outcome="plan_failed"))
        plan = RemediationPlan.model_validate(t.result.result["plan"])
        report = replace(
            report,
            plan=tuple(step_name(n, c) for n, c in enumerate(plan.changes)),
            blast_radius=int(t.result.result["blast_radius"]),
            flags=t.result.flags,
        )
        if incident.faults.freeze_before_apply:
            reason = "emergency change freeze announced by the CAB (simulated)"
            await self.network.freeze(incident.device, reason=reason)
        denied = await self._authorise(incident, plan, report.blast_radius, stream)
        if denied is not None:
            gate = f"deny:{denied.gate}:{denied.rule}"
            return await self._close(stream, replace(report, outcome="apply_denied", gate=gate))
        return await self._close(stream, await self._apply(incident, plan, report))

    # --- P1 + the boundary -------------------------------------------------------------------

    async def _triage(self, incident: Incident, run: int) -> _Triaged:
        state, _ = await self.network.device(incident.device)
        query = DiagnosticQuery(
            incident_id=incident.id,
            kind=incident.kind,
            device=incident.device,
            router=state.router,
        )
        gathered = await self.diagnostics.run({w.name: query for w in self.diagnostics.workers})
        merged: dict[str, Any] = {}
        retries = 0
        missing = tuple(w.name for w in self.diagnostics.workers)
        conflicts: tuple[str, ...] = ()
        if isinstance(gathered, Delegated):
            merged = codec.decode(codec.encode(dict(gathered.merged)))
            retries, missing = gathered.retries_used, gathered.substituted + gathered.dropped
            conflicts = tuple(
                f"{c.field}: {c.chosen} over {', '.join(c.overruled)}" for c in gathered.conflicts
            )
        stream = incident_stream_id(self.job, incident.id)
        await self._once(
            stream,
            "diagnosed",
            {
                "run": run,
                "merged": merged,
                "provenance": dict(gathered.provenance) if isinstance(gathered, Delegated) else {},
                "missing": missing,
                "conflicts": conflicts,
                "retries": retries,
            },
            key=f"diagnosed:{run}",
        )
        item = TriageInput(
            job=self.job,
            incident_id=incident.id,
            kind=incident.kind,
            device=incident.device,
            ticket=incident.ticket,
            diagnostics=merged,
            missing=missing,
            inventory=await self.network.snapshot(),
        )
        run_id = f"{self.job}/{incident.id}"
        budget = Budget(run_id, max_tokens=40_000, on_alert=EscalateToHuman())
        result = await self.boundary.run(item, runtime=self.runtime, run_id=run_id, budget=budget)
        return _Triaged(result, retries, missing, conflicts)

    async def _boundary_record(self, key: str) -> tuple[int, tuple[str, ...]]:
        """Proposals and rejects as the boundary recorded them (a replayed result after a
        restart carries no attempts of its own)."""
        proposals, rejects = 0, []
        for e in await self.store.read_stream(self.boundary.stream_for(key)):
            if e.type == "proposed":
                proposals += 1
            elif e.type == "rejected":
                rejects += [f"{r['verifier']}: {r['reason_code']}" for r in e.payload["rejects"]]
        return proposals, tuple(rejects)

    # --- P4 ----------------------------------------------------------------------------------

    async def _authorise(
        self, incident: Incident, plan: RemediationPlan, radius: int, stream: str
    ) -> GateDeny | None:
        """Gate the plan against the live inventory; an allow is recorded once, with its
        audit entry, as the authorisation the saga runs under."""
        key = f"{self.job}:{incident.id}:apply"
        if await self.store.get_commit(key) is not None:
            return None  # authorised before an interruption: the saga resumes
        live = await self.network.snapshot(sorted({c.device for c in plan.changes}))
        inputs = {
            "incident": incident.id,
            "blast_radius": radius,
            "change_count": len(plan.changes),
            "frozen_devices": sum(s.frozen for s in live.values()),
            "devices": sorted(live),
        }
        decision = await self.gate.check(
            self.store,
            action="apply_plan",
            principal=self.principal,
            subject=stream,
            inputs=inputs,
            now=self.clock.now(),
        )
        if isinstance(decision, GateDeny):
            await self._once(
                stream,
                "apply_denied",
                {"gate": decision.gate, "rule": decision.rule, "reason": decision.reason},
            )
            return decision
        unit = (
            UnitOfWork()
            .record_commit(
                key,
                {"principal": self.principal, "policy_version": decision.policy_version},
                run_id=self.job,
                boundary="config-apply",
            )
            .append_event(
                stream, "apply_authorised", {"principal": self.principal}, idempotency_key=key
            )
        )
        await self.store.apply(self.gate.allow_into(unit, decision, inputs))
        return None

    # --- P2 ----------------------------------------------------------------------------------

    async def _apply(
        self, incident: Incident, plan: RemediationPlan, report: IncidentReport
    ) -> IncidentReport:
        saga_id = f"{self.job}:{incident.id}"
        saga = remediation_saga(plan, self.network, incident.faults)
        result = await saga.run(
            saga_id,
            {"incident": incident.id, "plan": plan.model_dump(mode="json")},
            store=self.store,
            clock=self.clock,
        )
        row = await self.store.get_row(f"saga:{saga_id}")
        assert row is not None  # the saga's run created it
        record = row.data_as(SagaRecord)
        applied = tuple(n for n in record.order if record.steps[n].effect == "done")
        report = replace(report, gate="allow", applied=applied)
        if isinstance(result, SagaCompleted):
            return replace(report, outcome="resolved")
        if isinstance(result, SagaCompensated):
            return replace(report, outcome="rolled_back", rolled_back=result.compensated_steps)
        if isinstance(result, SagaNeedsHuman):
            return replace(
                report,
                outcome="rollback_escalated",
                rolled_back=result.compensated_steps,
                not_undone=result.failed_compensations,
                escalation=result.approval_id,
            )
        raise SeamlineError(f"{result.why}; run the same incidents again to resume it")

    # --- the incident's record -----------------------------------------------------------------

    async def _once(
        self, stream: str, type: str, payload: object, *, key: str | None = None
    ) -> None:
        idem = f"{stream}:{key or type}"
        await self.store.apply(
            UnitOfWork().append_event(stream, type, payload, idempotency_key=idem)
        )  # a Duplicate means it was recorded before an interruption

    async def _close(self, stream: str, report: IncidentReport) -> IncidentReport:
        await self._once(stream, "closed", report)
        return report

    async def _recorded(self, stream: str) -> IncidentReport | None:
        for e in await self.store.read_stream(stream):
            if e.type == "closed":
                return codec.decode(e.payload_json, IncidentReport)
        return None
