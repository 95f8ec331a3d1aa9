"""Number porting: a long-horizon workflow with multi-day waits on another carrier.

Customers bring their numbers in from a donor carrier. One durable P5 row per port request
moves through intake (the model reads the customer's form through a boundary), submission to
the donor, days of waiting for its answer (a silent donor escalates to a person after five
days), a cutover slot, and a cutover saga behind a gate. The donor, the customers, the
operations desk and the network systems are SIMULATED (seeded), and labelled so.

``seamline porting run`` drives it; the pieces are importable for tests and experiments.
"""

from seamline.workloads.porting._agent import PortingAgent
from seamline.workloads.porting._intake import (
    PortFormBehaviour,
    PortRequest,
    SimulatedPortingModel,
    intake_boundary,
)
from seamline.workloads.porting._job import PortingSummary, job_id, run_porting, summarise
from seamline.workloads.porting._machine import (
    CUTOVER_GATE,
    DONOR_TIMEOUT,
    ESCALATION_SLA,
    KIND,
    MACHINE,
    TERMINAL,
)
from seamline.workloads.porting._world import CARRIERS, SimulatedWorld

ADR = (
    "\n".join(
        (
            "1. Runtime class: long-horizon",
            (
                "2. Spine: P5 shared state machine (long pauses or waits on the outside world; "
                "state not reconstructible from the original input; the world can change during a"
                " pause)"
            ),
            "3. Coordination: P2 scatter-gather + saga (compensations for partial failure)",
            (
                "4. Control: P4 supervisor + gate before every side effect + P6 human in the loop"
                " (legal or financial consequences, out-of-policy cases, audit needs)"
            ),
            (
                "5. Build sequence: state schema and console -> gate and audit -> orchestrator "
                "and one worker -> the other workers -> P6: kill switch, escalation, approval, "
                "throttling"
            ),
            "6. Date and model: 2026-11-21; sim:typical-v1",
        )
    )
    + "\n"
)

__all__ = [
    "ADR",
    "CARRIERS",
    "CUTOVER_GATE",
    "DONOR_TIMEOUT",
    "ESCALATION_SLA",
    "KIND",
    "MACHINE",
    "PortFormBehaviour",
    "PortRequest",
    "PortingAgent",
    "PortingSummary",
    "SimulatedPortingModel",
    "SimulatedWorld",
    "TERMINAL",
    "intake_boundary",
    "job_id",
    "run_porting",
    "summarise",
]
