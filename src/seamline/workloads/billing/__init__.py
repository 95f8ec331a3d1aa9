"""An autonomous billing-anomaly scanner that issues credits (P3 + P2 + P4).

Monthly charges, plan changes and outages (simulated, seeded, over the renewal workload's
customers) are published to a durable event log; a scanner consumes it with a durable offset,
finds anomalies with deterministic rules, has the model propose each credit through a
boundary, and issues it through a gate as a saga. Replaying the log on a fork with the
recorded proposals reproduces every decision. ``seamline billing run`` drives it.
"""

from seamline.workloads.billing._credit import (
    BOUNDARY,
    CreditBehaviour,
    CreditCase,
    CreditProposal,
    credit_boundary,
    default_policy,
    simulated_credit_model,
)
from seamline.workloads.billing._detect import Anomaly, History, detect
from seamline.workloads.billing._effects import (
    Ledger,
    ModelIdentity,
    NotificationFailed,
    Notifier,
    RecordedNotifier,
    SimulatedNotifier,
)
from seamline.workloads.billing._events import (
    ANOMALY_TYPES,
    MODEL_DERIVED,
    REGISTRY,
    decisions_stream,
    ledger_stream,
    log_stream,
    notices_stream,
)
from seamline.workloads.billing._generate import BILLING_START, Rates, billing_events
from seamline.workloads.billing._job import (
    BillingSummary,
    Decision,
    ReplayReport,
    decisions,
    job_id,
    recorded_model,
    replay_billing,
    run_billing,
    summarise,
)
from seamline.workloads.billing._scanner import BillingError, CreditScanner

ADR = "\n".join(
    (
        "1. Runtime class: autonomous",
        "2. Spine: P3 event log (the log must be the truth: replay and branching matter; no "
        "long pauses or waits on the outside world; state reconstructible from the original "
        "input; the world cannot change during a pause)",
        "3. Coordination: P2 scatter-gather + saga (compensations for partial failure)",
        "4. Control: P4 supervisor + gate before every side effect",
        "5. Build sequence: state schema and console -> gate and audit -> orchestrator and one "
        "worker -> the other workers",
        "6. Date and model: 2026-11-21; sim:typical-v1",
    )
)
"""The architecture decision record (DESIGN.md §4): the six lines ``seamline adr`` prints for
this workload's answers (``examples/workloads/billing/adr.yaml``), with the model it runs."""

__all__ = [
    "ADR",
    "ANOMALY_TYPES",
    "Anomaly",
    "BILLING_START",
    "BOUNDARY",
    "BillingError",
    "BillingSummary",
    "CreditBehaviour",
    "CreditCase",
    "CreditProposal",
    "CreditScanner",
    "Decision",
    "History",
    "Ledger",
    "MODEL_DERIVED",
    "ModelIdentity",
    "NotificationFailed",
    "Notifier",
    "REGISTRY",
    "Rates",
    "RecordedNotifier",
    "ReplayReport",
    "SimulatedNotifier",
    "billing_events",
    "credit_boundary",
    "decisions",
    "decisions_stream",
    "default_policy",
    "detect",
    "job_id",
    "ledger_stream",
    "log_stream",
    "notices_stream",
    "recorded_model",
    "replay_billing",
    "run_billing",
    "simulated_credit_model",
    "summarise",
]
