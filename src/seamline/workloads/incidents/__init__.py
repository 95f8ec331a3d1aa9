"""Autonomous network-incident triage that applies and rolls back configuration changes.

For each incident of a seeded, simulated stream, diagnostics are gathered in parallel by
stateless workers behind hardened tools and merged by declared priority (P1); the model
proposes a remediation plan through a boundary (schema, versioned policy per device class,
blast radius, change freezes, an injection classifier over the ticket); a gate checks who
applies it and re-checks the live inventory (P4), with a supervisor around the triage worker;
and the plan is applied as a saga whose every change registers its rollback first (P2). A
change a device refuses rolls the earlier ones back in reverse order, once each; a rollback
that keeps failing goes to a person.

``seamline incidents run`` drives it; :func:`run_incidents` is the same job as a function.
The network, its customers, tickets, telemetry, alarms and faults are SIMULATED and seeded.
"""

from seamline.workloads.incidents._agent import (
    AGENT,
    OUTCOMES,
    IncidentAgent,
    IncidentOutcome,
    IncidentReport,
    apply_gate,
    remediation_saga,
)
from seamline.workloads.incidents._diagnostics import NocSystems, diagnostics_delegation
from seamline.workloads.incidents._incidents import Incident, SimulatedFaults, incident_stream
from seamline.workloads.incidents._job import (
    IncidentSummary,
    InventoryCheck,
    check_inventory,
    job_id,
    run_incidents,
)
from seamline.workloads.incidents._network import (
    STREAM_START,
    ConfigChange,
    DeviceState,
    Inventory,
    NetworkSim,
    build_inventory,
)
from seamline.workloads.incidents._plan import (
    RemediationPlan,
    SimulatedTriageModel,
    TriageBehaviour,
    TriageInput,
    plan_boundary,
)

ADR = "\n".join(
    (
        "1. Runtime class: autonomous",
        "2. Spine: none (no long pauses or waits on the outside world; state reconstructible "
        "from the original input; the world cannot change during a pause; the log need not be "
        "the truth)",
        "3. Coordination: P1 hierarchical delegation (single owner, deterministic merge) + P2 "
        "scatter-gather + saga (compensations for partial failure)",
        "4. Control: P4 supervisor + gate before every side effect",
        "5. Build sequence: state schema and console -> gate and audit -> orchestrator and one "
        "worker -> the other workers",
        "6. Date and model: 2026-11-21; sim:typical-v1",
    )
)
"""The architecture decision record (DESIGN.md §4): the six lines ``seamline adr`` prints for
this workload's answers (``examples/workloads/incidents/adr.yaml``), with the model it runs."""

__all__ = [
    "ADR",
    "AGENT",
    "ConfigChange",
    "DeviceState",
    "Incident",
    "IncidentAgent",
    "IncidentOutcome",
    "IncidentReport",
    "IncidentSummary",
    "Inventory",
    "InventoryCheck",
    "NetworkSim",
    "NocSystems",
    "OUTCOMES",
    "RemediationPlan",
    "STREAM_START",
    "SimulatedFaults",
    "SimulatedTriageModel",
    "TriageBehaviour",
    "TriageInput",
    "apply_gate",
    "build_inventory",
    "check_inventory",
    "diagnostics_delegation",
    "incident_stream",
    "job_id",
    "plan_boundary",
    "remediation_saga",
    "run_incidents",
]
