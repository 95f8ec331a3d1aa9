"""The billing scanner's recorded credit decisions as replay inputs.

The billing workload's spine is its event log (P3), and every fact a credit case holds can be
read back from it: the anomaly from the ``AnomalyDetected`` decision event, and the credits
already granted to that customer for that cycle from the ledger streams, as they stood when
the boundary began (every ledger event recorded before the boundary's first event). The cap
and policy version come from the workload's policy. Recovery replay checks the rebuild: each
replayed attempt's prompt hash must equal the recorded one.
"""

from __future__ import annotations

from typing import Any

from seamline.errors import ConfigError
from seamline.method._replay import ReplayInput
from seamline.store import Store

__all__ = ["billing_boundary", "billing_inputs", "billing_jobs"]


async def billing_jobs(store: Store) -> list[str]:
    """The billing jobs recorded in ``store``, in the order they first decided anything."""
    from seamline.workloads.billing._job import _events

    jobs: dict[str, None] = {}
    for e in await _events(store, prefix="credits:"):
        job = e.stream.removeprefix("credits:")
        if "@" not in job:  # a fork (a replay branch) is not a job of its own
            jobs.setdefault(job, None)
    return list(jobs)


def billing_boundary(model: Any) -> Any:
    """The credit boundary as the scanner declares it (escalating when attempts run out)."""
    from seamline.workloads.billing._credit import credit_boundary, default_policy

    return credit_boundary(model, default_policy())


async def billing_inputs(store: Store, job: str) -> list[ReplayInput[Any]]:
    """Rebuild the ``CreditCase`` of every anomaly of ``job`` that reached the boundary."""
    from seamline.workloads.billing._credit import (
        BOUNDARY,
        CreditCase,
        default_policy,
        monthly_cap,
    )
    from seamline.workloads.billing._effects import net_credits
    from seamline.workloads.billing._events import (
        REGISTRY,
        decisions_stream,
    )
    from seamline.workloads.billing._job import _events

    policy = default_policy()
    cap = monthly_cap(policy)
    ledger = [(e.seq, REGISTRY.decode(e)) for e in await _events(store, prefix=f"ledger:{job}:")]
    firsts: dict[str, int] = {}
    for e in await _events(store, prefix=f"sdb:{BOUNDARY}:{job}:{BOUNDARY}:"):
        firsts.setdefault(e.stream, e.seq)
    stream = decisions_stream(job)
    decided = [e for e in await _events(store, prefix=stream) if e.stream == stream]
    if not decided:
        raise ConfigError(
            f"no billing job {job!r} in the store; run `seamline billing run` with this --store "
            "first, or pick one of the jobs it holds"
        )
    found: list[ReplayInput[Any]] = []
    for e in decided:
        if e.type != "AnomalyDetected":
            continue
        p = e.payload
        key = f"{job}:{BOUNDARY}:{p['anomaly_id']}"
        began = firsts.get(f"sdb:{BOUNDARY}:{key}")
        if began is None:
            continue  # denied before the boundary (the cap was already used up)
        cust = p["customer_id"]
        credited = net_credits(
            (f for seq, f in ledger if seq < began and getattr(f, "customer_id", None) == cust),
            p["cycle"],
            excluding=p["anomaly_id"],
        )
        case = CreditCase(
            anomaly_id=p["anomaly_id"],
            anomaly_type=p["type"],
            customer_id=p["customer_id"],
            cycle=p["cycle"],
            anomalous_amount=p["amount"],
            evidence=p["evidence"],
            monthly_cap=cap,
            credited_this_cycle=credited,
            policy_version=policy.version,
        )
        found.append(ReplayInput(job, key, case))
    return found
