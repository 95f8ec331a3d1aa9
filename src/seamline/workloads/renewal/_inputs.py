"""The boundary inputs of a recorded renewal job, rebuilt for replay.

The job does not store its boundary inputs, but every part of one is derived
deterministically: the customer's facts and seeded support notes from the cohort, the signals
from the row's recorded patches, the policy version from the instant of the assessment (the
``at`` of the row's move out of ``assessing``, whose version minus one is the input's
version) and the catalog (list prices, plans at end of life) from the job's catalog stream as
it stood at that instant. Recovery replay checks the rebuild: the prompt hash of every
replayed attempt must equal the recorded one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from seamline.store import Event, Store
from seamline.workloads.renewal._agent import MACHINE
from seamline.workloads.renewal._catalog import catalog_at, catalog_stream
from seamline.workloads.renewal._customer import Customer
from seamline.workloads.renewal._facts import renewal_input
from seamline.workloads.renewal._job import CAMPAIGN_START, households, job_id
from seamline.workloads.renewal._offer import PolicyBook, RenewalInput

__all__ = ["recorded_inputs"]


async def _stream(store: Store, name: str) -> list[Event]:
    out: list[Event] = []
    while page := await store.read_stream(name, after=out[-1].stream_seq if out else 0):
        out.extend(page)
    return out


async def recorded_inputs(
    store: Store, customers: Sequence[Customer], *, seed: int
) -> list[tuple[str, str, RenewalInput]]:
    """Every recorded assessment of the job for ``customers`` and ``seed``, oldest first per
    customer: (run id, boundary idempotency key, the input it was given)."""
    job = job_id(customers, seed)
    book = PolicyBook(CAMPAIGN_START)
    homes = households(customers)
    catalog = await _stream(store, catalog_stream(job))
    found: list[tuple[str, str, RenewalInput]] = []
    for c in customers:
        data: dict[str, Any] = {}
        for e in await _stream(store, MACHINE.stream(f"{job}:{c.customer_id}")):
            if e.type != "transitioned":
                continue
            p = e.payload
            if p["from"] == "assessing" and p.get("at"):
                at = datetime.fromisoformat(p["at"])
                version = int(p["version"]) - 1
                run_id = f"{job}/{c.customer_id}"
                item = renewal_input(
                    c,
                    seed=seed,
                    version=version,
                    signals=data.get("signals", {}),
                    catalog=catalog_at(catalog, at),
                    policy_version=book.at(at).version,
                    household=homes.get(c.customer_id),
                )
                key = f"{run_id}:renewal-offer:{c.customer_id}:v{version}"
                found.append((run_id, key, item))
            data.update(p.get("patch") or {})
    return found
