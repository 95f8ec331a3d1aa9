"""The values diagnostics work with: thresholds, the recorded snapshot a rule reads, a
signature of the catalog, a finding and the report."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from seamline.errors import ConfigError
from seamline.store import Approval, AuditEntry, CommitRecord, Event, Row

__all__ = ["Finding", "Pattern", "Recorded", "Signature", "Thresholds"]

Pattern = Literal["boundary", "P1", "P2", "P3", "P4", "P5", "P6"]
_ENDINGS = ("committed", "escalated", "failed")
_REVIEW = "review:"  # ids and run ids of the re-derivation review queue (method._replay)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a count becomes a finding. The defaults keep a healthy renewal run silent."""

    max_examples: int = 5
    stale_writes_per_row: int = 3
    timer_noops: int = 1
    min_read_s: float = 10.0
    rubber_stamp_min: int = 3
    rubber_stamp_share: float = 0.5
    expiry_min_decided: int = 4
    expiry_share: float = 0.5
    attempts_per_instance: int = 5
    replay_divergence: float = 0.2
    dead_letters: int = 1
    pending_escalations: int = 3
    saga_stuck_after: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        for name in ("expiry_share", "rubber_stamp_share", "replay_divergence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a share in [0, 1], got {getattr(self, name)}")
        if self.max_examples < 1:
            raise ConfigError(f"max_examples must be at least 1, got {self.max_examples}")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the rules read: everything recorded since ``since``, plus the commit-ledger rows
    of every boundary instance seen (the ledger is read by key only)."""

    events: tuple[Event, ...]
    audit: tuple[AuditEntry, ...]
    approvals: tuple[Approval, ...]
    rows: tuple[Row, ...]
    commits: Mapping[str, CommitRecord]
    since: datetime | None = None

    @property
    def horizon(self) -> datetime | None:
        """The latest instant anything was recorded: "now" for the recorded run."""
        stamps = [e.recorded_at for e in self.events] + [a.at for a in self.audit]
        return max(stamps) if stamps else None

    def streams(self, prefix: str) -> dict[str, list[Event]]:
        out: dict[str, list[Event]] = defaultdict(list)
        for e in self.events:
            if e.stream.startswith(prefix):
                out[e.stream].append(e)
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One signature seen in the store, with the numbers and where to look."""

    signature: str
    summary: str
    count: int
    examples: tuple[str, ...]
    kind: Literal["finding"] = "finding"


Detect = Callable[[Recorded, Thresholds], Finding | None]


@dataclass(frozen=True, slots=True)
class Signature:
    """A failure signature: symptom → cause → pattern weakness → ranked corrections."""

    id: str
    pattern: Pattern
    title: str
    symptom: str
    detection: str
    cause: str
    weakness: str
    corrections: tuple[str, ...]
    detect: Detect = field(repr=False, compare=False)
    kind: Literal["signature"] = "signature"
