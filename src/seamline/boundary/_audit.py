"""The audit query: per boundary instance, what was proposed, accepted, rejected, committed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from seamline.store import Store

__all__ = ["BoundaryCounts", "boundary_audit"]


@dataclass(frozen=True, slots=True)
class BoundaryCounts:
    boundary: str
    key: str
    proposals: int
    accepts: int
    rejects: int
    model_failures: int
    commits: int
    escalations: int
    failures: int


async def boundary_audit(
    store: Store, boundary: str | None = None, *, page: int = 5000
) -> list[BoundaryCounts]:
    """Count each instance's events, for one boundary (by name) or all of them."""
    prefix = "sdb:" if boundary is None else f"sdb:{boundary}:"
    counts: dict[str, Counter[str]] = {}
    after = 0
    while True:
        events = await store.read_events(after_seq=after, limit=page, stream_prefix=prefix)
        if not events:
            break
        for e in events:
            counts.setdefault(e.stream, Counter())[e.type] += 1
        after = events[-1].seq
    out = []
    for stream, c in sorted(counts.items()):
        _, name, key = stream.split(":", 2)
        out.append(
            BoundaryCounts(
                name,
                key,
                c["proposed"],
                c["accepted"],
                c["rejected"],
                c["model_failed"],
                c["committed"],
                c["escalated"],
                c["failed"],
            )
        )
    return out
