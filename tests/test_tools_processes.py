"""The store-backed token bucket holds its limit when real OS processes race for it.

Four children (tests/_spend_worker.py) hammer one ``StoreTokenBucket`` for a fixed window on
each backend. A token bucket that starts full promises: by any moment t, no more than
``burst + rate * (t - t0)`` calls were granted, where t0 is when the bucket was created. The
parent notes the wall-clock time just before releasing the children (earlier than the
bucket's creation), and each child notes when each grant *returned* (later than the moment
the store took it), so checking every prefix of the merged grant times against that line is
exact — no tolerance for scheduling — and a bucket that lost an update between processes
would cross it.
"""

from __future__ import annotations

import pytest

from seamline.store import open_store
from tests._spend_procs import run_together

PROCESSES = 4
RATE_PER_S = 20.0
BURST = 5.0
WINDOW_S = 1.5


@pytest.mark.slow
async def test_processes_hammering_one_bucket_never_exceed_burst_plus_refill(
    store_url: str,
) -> None:
    """Across 4 processes, grants by any moment never exceed burst + rate x elapsed, the
    limit is actually reached (calls are refused), and the grants are near that line."""
    async with open_store(store_url):
        pass  # migrate once up front, so the race is over the bucket and not the schema
    argv = [
        "bucket",
        store_url,
        "--rate",
        str(RATE_PER_S),
        "--burst",
        str(BURST),
        "--window",
        str(WINDOW_S),
    ]
    released, finished = await run_together([argv] * PROCESSES)
    reports = [f.report() for f in finished]

    grants = sorted(t for r in reports for t in r["grants"])
    assert grants, "no process was ever granted a call"
    for count, at in enumerate(grants, start=1):
        allowed = BURST + RATE_PER_S * (at - released)
        assert count <= allowed + 1e-6, (
            f"{count} grants by {at - released:.3f} s after the release; a bucket of burst "
            f"{BURST} refilling {RATE_PER_S}/s allows at most {allowed:.2f}"
        )
    assert sum(r["refused"] for r in reports) > 0, "no call was refused: the race never hit the cap"
    assert sum(bool(r["grants"]) for r in reports) >= 2, "only one process was ever granted"
    # The limit is a limit, not a wall: the processes got most of what it allows.
    assert len(grants) >= BURST + RATE_PER_S * WINDOW_S * 0.5, (
        f"only {len(grants)} grants in {WINDOW_S} s"
    )
