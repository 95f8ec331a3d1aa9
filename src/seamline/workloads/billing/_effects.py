"""The two systems a credit changes, simulated in the store: the billing ledger and the
customer notification service. Both are idempotent on the key they are handed, as real
billing and messaging APIs are, so a saga step performed again after a crash lands once.

``Notifier`` is the extension point (a real e-mail or SMS gateway goes behind it);
``SimulatedNotifier`` bounces a seeded share of notices; ``RecordedNotifier`` wraps another
notifier and answers as the original run did, for recovery replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import pydantic

from seamline.errors import SeamlineError
from seamline.patterns import publish
from seamline.store import Duplicate, Store, UnitOfWork
from seamline.workloads.billing._events import (
    REGISTRY,
    CreditNotice,
    CreditPosted,
    CreditReversed,
    ledger_stream,
    notices_stream,
)

__all__ = [
    "Ledger",
    "ModelIdentity",
    "NotificationFailed",
    "Notifier",
    "RecordedNotifier",
    "SimulatedNotifier",
    "draw",
]


def draw(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``: seeded simulation that needs no state."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """Which model and which prompt produced a proposal: part of every derived event."""

    model: str
    model_version: str
    prompt_hash: str
    simulated: bool


class NotificationFailed(SeamlineError):
    """The notification service refused a notice (the saga step fails and is compensated)."""


async def _emit(
    store: Store,
    stream: str,
    event: pydantic.BaseModel,
    key: str,
    identity: ModelIdentity,
    unit: UnitOfWork | None = None,
) -> bool:
    """Publish once per key; False when the key was used already (a repeat after a crash)."""
    outcome = await publish(
        store,
        REGISTRY,
        stream,
        event,
        idempotency_key=key,
        from_model=True,
        model_version=identity.model_version,
        prompt_hash=identity.prompt_hash,
        unit=unit,
    )
    if isinstance(outcome, Duplicate) and outcome.what == "event":
        return False
    if not isinstance(outcome, int):
        raise SeamlineError(f"writing {type(event).__name__} under key {key} gave {outcome}")
    return True


def net_credits(facts: Iterable[object], cycle: int, *, excluding: str) -> Decimal:
    """Credits posted less credits reversed in ``facts`` for ``cycle``, but for ``excluding``."""
    total = Decimal(0)
    for fact in facts:
        if (
            isinstance(fact, CreditPosted | CreditReversed)
            and fact.cycle == cycle
            and fact.credit_id != excluding
        ):
            total += fact.amount if isinstance(fact, CreditPosted) else -fact.amount
    return total


class Ledger:
    """The billing ledger of one scope: a stream per customer of postings and reversals."""

    def __init__(self, store: Store, scope: str) -> None:
        self.store, self.scope = store, scope

    async def credited(self, customer_id: str, cycle: int, *, excluding: str) -> Decimal:
        """Net credits for the customer's cycle, leaving out credit ``excluding`` (so a
        redelivered anomaly sees the same figure it saw the first time)."""
        stream = await self.store.read_stream(ledger_stream(self.scope, customer_id))
        return net_credits((REGISTRY.decode(e) for e in stream), cycle, excluding=excluding)

    async def post(
        self, credit: CreditPosted, *, key: str, identity: ModelIdentity, unit: UnitOfWork
    ) -> bool:
        stream = ledger_stream(self.scope, credit.customer_id)
        return await _emit(self.store, stream, credit, key, identity, unit)

    async def posted(self, key: str) -> bool:
        return await self.store.event_by_key(key) is not None

    async def reverse(self, reversal: CreditReversed, *, key: str, identity: ModelIdentity) -> bool:
        stream = ledger_stream(self.scope, reversal.customer_id)
        return await _emit(self.store, stream, reversal, key, identity)


class Notifier(Protocol):
    """Tells a customer about a credit; idempotent on ``key``; raises when it cannot."""

    async def notify(
        self, notice: CreditNotice, *, scope: str, key: str, identity: ModelIdentity
    ) -> Mapping[str, Any]: ...


class SimulatedNotifier:
    """A SIMULATED notification service: the notice lands in ``notices:<scope>``; for a
    seeded share of customers (``bounce_rate``) it bounces and nothing is written."""

    def __init__(self, store: Store, *, seed: int, bounce_rate: float = 0.03) -> None:
        self.store, self.seed, self.bounce_rate = store, seed, bounce_rate

    async def notify(
        self, notice: CreditNotice, *, scope: str, key: str, identity: ModelIdentity
    ) -> Mapping[str, Any]:
        if draw(self.seed, "bounce", notice.credit_id) < self.bounce_rate:
            raise NotificationFailed(
                f"no deliverable contact for customer {notice.customer_id}: the notice of "
                f"credit {notice.credit_id} bounced"
            )
        await _emit(self.store, notices_stream(scope), notice, key, identity)
        return {"notice": key}


class RecordedNotifier:
    """Recovery replay of notifications: fails where the original failed (``failures``:
    credit id -> error) and otherwise delegates to ``inner`` (a sandbox outbox)."""

    def __init__(self, inner: Notifier, failures: Mapping[str, str]) -> None:
        self.inner, self.failures = inner, dict(failures)

    async def notify(
        self, notice: CreditNotice, *, scope: str, key: str, identity: ModelIdentity
    ) -> Mapping[str, Any]:
        if notice.credit_id in self.failures:
            raise NotificationFailed(self.failures[notice.credit_id])
        return await self.inner.notify(notice, scope=scope, key=key, identity=identity)
