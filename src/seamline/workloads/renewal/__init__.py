"""The 90-day contract-renewal agent on the IBM Telco churn data: the reference workload.

``seamline renewals run`` drives it; the pieces are importable for tests and experiments.
"""

from typing import Any

from seamline.workloads.renewal._agent import KIND, MACHINE, TERMINAL, RenewalAgent
from seamline.workloads.renewal._catalog import (
    WORLD_SCHEDULE,
    Catalog,
    PolicyVersionChanged,
    PriceChanged,
    ProductEndOfLife,
    catalog_at,
    recheck,
)
from seamline.workloads.renewal._customer import CONTRACTS, Contract, Customer
from seamline.workloads.renewal._data import (
    TELCO_COLUMNS,
    CohortSummary,
    LoadResult,
    RowIssue,
    describe,
    load_customers,
    synthetic_cohort,
)
from seamline.workloads.renewal._inputs import recorded_inputs
from seamline.workloads.renewal._job import (
    CAMPAIGN_START,
    JobProgress,
    job_id,
    run_renewals,
    trigger_window,
)
from seamline.workloads.renewal._offer import PolicyBook, RenewalOffer, SimulatedRenewalModel
from seamline.workloads.renewal._summary import RenewalSummary, ReviewItem, summarise


def __getattr__(name: str) -> Any:
    # The report pulls in matplotlib; load it only when asked, not on every CLI start.
    if name == "write_report":
        from seamline.workloads.renewal._report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CAMPAIGN_START",
    "CONTRACTS",
    "Catalog",
    "CohortSummary",
    "Contract",
    "Customer",
    "JobProgress",
    "KIND",
    "LoadResult",
    "MACHINE",
    "PolicyBook",
    "PolicyVersionChanged",
    "PriceChanged",
    "ProductEndOfLife",
    "RenewalAgent",
    "RenewalOffer",
    "RenewalSummary",
    "ReviewItem",
    "RowIssue",
    "SimulatedRenewalModel",
    "TELCO_COLUMNS",
    "TERMINAL",
    "WORLD_SCHEDULE",
    "catalog_at",
    "describe",
    "job_id",
    "load_customers",
    "recheck",
    "recorded_inputs",
    "run_renewals",
    "summarise",
    "synthetic_cohort",
    "trigger_window",
    "write_report",
]
