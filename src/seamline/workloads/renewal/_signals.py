"""Day -90: the signals a renewal is assessed on, and the retention case of a customer at risk.

Four SIMULATED services (usage, network, billing, support) answer from the customer's own
columns, and fail the way services do: a seeded 3% of calls raise a connection error, 0.2%
hang, 0.2% answer something that is not a valid signal. Each is called through a
:class:`~seamline.tools.HardenedTool`, which validates the query and the answer, bounds each
call with a timeout, retries the retryable failures (connection errors, timeouts) and keeps a
circuit breaker per service. A P1 delegation calls the four at once and merges their answers by
declared priority; a service that still fails is replaced by its declared empty default, and
the assessment goes on with what is known.

For a customer at risk (month-to-month, under a year) the billing fetcher is a step of a P2
saga that runs alongside the other three: it reads the billing service and *writes* — it
caches a billing snapshot for the retention team (row ``billing-snapshot:...``) — then a
callback is booked with the retention team. The snapshot's compensation (drop it) is
registered before the write; when the booking fails, the saga drops the snapshot, and the
assessment goes on with the billing signal's declared empty default. The write is idempotent
on the row id, so a step re-run after a crash writes nothing twice.

Failures are drawn from the seed, the service, the customer and the attempt within one
gathering, so the same run fails the same calls whatever the order or concurrency.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import pydantic

from seamline.clock import Clock
from seamline.patterns import (
    CompensationContext,
    Delegated,
    Delegation,
    Failure,
    Saga,
    SagaCompleted,
    SagaStep,
    SagaStepContext,
    Substitute,
    Success,
    Worker,
    WorkerResult,
)
from seamline.store import Applied, Duplicate, Store, UnitOfWork
from seamline.tools import CircuitBreaker, HardenedTool, ToolError
from seamline.workloads.renewal._customer import Customer
from seamline.workloads.renewal._offer import stable_fraction

__all__ = [
    "SIGNALS",
    "SignalQuery",
    "Signals",
    "at_risk",
    "fresh_attempts",
]

SIGNALS = ("usage", "network", "billing", "support")
FAIL_RATE, HANG_RATE, GARBAGE_RATE = 0.03, 0.002, 0.002

_attempts: contextvars.ContextVar[dict[tuple[str, str], int]] = contextvars.ContextVar(
    "renewal_signal_attempts"
)


@contextmanager
def fresh_attempts() -> Iterator[None]:
    """Number the service calls of one gathering from 1 (the failures are drawn per attempt)."""
    token = _attempts.set({})
    try:
        yield
    finally:
        _attempts.reset(token)


def _attempt(service: str, customer_id: str) -> int:
    counts = _attempts.get(None)
    if counts is None:
        counts = {}
        _attempts.set(counts)
    n = counts[(service, customer_id)] = counts.get((service, customer_id), 0) + 1
    return n


def at_risk(c: Customer) -> bool:
    return c.contract == "Month-to-month" and c.tenure < 12


class SignalQuery(pydantic.BaseModel):
    """What every signal service is asked: one customer."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    customer_id: str = pydantic.Field(pattern=r"^\d{4}-[A-Z]{5}$")


class UsageSignal(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    streaming: bool
    internet: Literal["DSL", "Fiber optic", "No"]


class NetworkSignal(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    outage_minutes: int = pydantic.Field(ge=0, le=24 * 60 * 90)


class BillingSignal(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    monthly_charges: str = pydantic.Field(pattern=r"^\d+\.\d\d$")
    paperless: bool
    payment: str = pydantic.Field(min_length=1, max_length=40)


class SupportSignal(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    open_tickets: int = pydantic.Field(ge=0, le=100)
    tech_support: Literal["Yes", "No", "No internet service"]


def _usage(c: Customer) -> dict[str, Any]:
    return {"streaming": c.streaming_tv == "Yes", "internet": c.internet_service}


def _network(c: Customer) -> dict[str, Any]:
    return {"outage_minutes": int(stable_fraction("net", c.customer_id) * 120)}


def _billing(c: Customer) -> dict[str, Any]:
    return {
        "monthly_charges": str(c.monthly_charges),
        "paperless": c.paperless_billing,
        "payment": c.payment_method,
    }


def _support(c: Customer) -> dict[str, Any]:
    return {
        "open_tickets": int(stable_fraction("tickets", c.customer_id) * 4),
        "tech_support": c.tech_support,
    }


_READS: Mapping[str, tuple[Callable[[Customer], dict[str, Any]], type[pydantic.BaseModel]]] = {
    "usage": (_usage, UsageSignal),
    "network": (_network, NetworkSignal),
    "billing": (_billing, BillingSignal),
    "support": (_support, SupportSignal),
}


class Signals:
    """The job's signal services as hardened tools, the P1 delegation over them and the P2
    retention saga; bound to the job's store, customers and seed."""

    def __init__(
        self, store: Store, customers: Mapping[str, Customer], *, job: str, seed: int, clock: Clock
    ) -> None:
        self.store, self.customers, self.job, self.seed = store, customers, job, seed
        self.clock = clock
        # The breakers run on the job's clock: in virtual time a tripped one resets on
        # virtual seconds, like every other wait of the job.
        now = lambda: clock.now().timestamp()  # noqa: E731 - a clock reading, named once
        self.tools = {
            name: self._tool(name, read, out, CircuitBreaker(threshold=20, now=now))
            for name, (read, out) in _READS.items()
        }
        self.callback_tool = self._tool(
            "callback_booking",
            lambda c: {"booked": True},
            _Booked,
            CircuitBreaker(threshold=20, now=now),
            lasting=lambda c: stable_fraction("callback", c.customer_id) < 0.03,
        )
        self.delegation = self._delegation(SIGNALS)
        self.reads = self._delegation(tuple(n for n in SIGNALS if n != "billing"))
        self.saga = Saga(
            "retention-case",
            [
                SagaStep("cache_billing_snapshot", self._cache_snapshot, self._drop),
                SagaStep("book_callback", self._book_callback, _nothing_to_undo),
            ],
            compensation_attempts=3,
            backoff_initial_s=0.01,
            backoff_max_s=0.05,
        )

    # --- the services -------------------------------------------------------------------------

    def _tool(
        self,
        name: str,
        read: Callable[[Customer], dict[str, Any]],
        output: type[pydantic.BaseModel],
        breaker: CircuitBreaker,
        *,
        lasting: Callable[[Customer], bool] = lambda c: False,
    ) -> HardenedTool[SignalQuery, Any]:
        seed, customers = self.seed, self.customers

        async def service(q: SignalQuery) -> dict[str, Any]:
            c = customers[q.customer_id]
            draw = stable_fraction(seed, name, q.customer_id, _attempt(name, q.customer_id))
            if lasting(c) or draw < FAIL_RATE:
                raise ConnectionError(f"{name} service unavailable")
            if draw < FAIL_RATE + HANG_RATE:
                await asyncio.sleep(5)  # a hung service: the tool's timeout cuts it short
            if draw < FAIL_RATE + HANG_RATE + GARBAGE_RATE:
                return {"error": "upstream returned an empty body"}
            return read(c)

        return HardenedTool(
            name,
            service,
            input=SignalQuery,
            output=output,
            timeout_s=0.05,
            attempts=3,
            backoff_initial_s=0.0,  # simulated in-process services: retry at once
            jitter_s=0.0,
            breaker=breaker,
        )

    def _delegation(self, names: tuple[str, ...]) -> Delegation:
        return Delegation(
            "renewal-signals",
            workers=[self._worker(name) for name in names],
            priority=[n for n in ("billing", "usage", "support", "network") if n in names],
            on_partial=Substitute(defaults={name: {} for name in names}),
            retries=0,  # the tools retry what may pass on a retry; the orchestrator adds none
        )

    def _worker(self, name: str) -> Worker[Customer]:
        tool = self.tools[name]

        async def fetch(c: Customer) -> WorkerResult:
            result = await tool.call(SignalQuery(customer_id=c.customer_id))
            if isinstance(result, ToolError):
                return Failure(result.code, result.message, result.retryable)
            value: pydantic.BaseModel = result.value
            return Success(value.model_dump(mode="json"))

        return Worker(name, fetch, timeout_s=5.0)

    async def gather(self, c: Customer) -> tuple[dict[str, Any], str | None]:
        """The merged signals of one customer, and for one at risk how its retention case
        ended. A service that still failed contributes its empty default."""
        if not at_risk(c):
            return await self._merged(self.delegation, c), None
        signals, case = await asyncio.gather(
            self._merged(self.reads, c),
            self.saga.run(
                self.saga_id(c.customer_id),
                {"customer": c.customer_id},
                store=self.store,
                clock=self.clock,  # compensation backoff waits on the job's clock
            ),
        )
        if isinstance(case, SagaCompleted):
            signals = {**case.results["cache_billing_snapshot"]["billing"], **signals}
        return signals, case.kind

    async def _merged(self, delegation: Delegation, c: Customer) -> dict[str, Any]:
        result = await delegation.run({w.name: c for w in delegation.workers})
        return dict(result.merged) if isinstance(result, Delegated) else {}

    # --- P2: the retention case ---------------------------------------------------------------

    def saga_id(self, customer_id: str) -> str:
        return f"{self.job}:case:{customer_id}"

    async def _write_once(self, row_id: str, kind: str, state: str, data: Any) -> None:
        outcome = await self.store.apply(
            UnitOfWork().create_row(row_id, kind=kind, state=state, data=data)
        )
        if not isinstance(outcome, Applied | Duplicate):  # Duplicate: written before a crash
            raise ConnectionError(f"could not write {row_id}: {outcome}")

    async def _undo(self, row_id: str, frm: str, to: str) -> dict[str, Any]:
        row = await self.store.get_row(row_id)
        if row is None or row.state != frm:  # never written, or undone already
            return {"undone": False, "row": row_id}
        outcome = await self.store.apply(
            UnitOfWork().transition(row_id, expect_version=row.version, to=to)
        )
        if not isinstance(outcome, Applied):
            raise ConnectionError(f"could not undo {row_id}: {outcome}")
        return {"undone": True, "row": row_id}

    def snapshot_row(self, customer_id: str) -> str:
        return f"billing-snapshot:{self.job}:{customer_id}"

    async def _cache_snapshot(self, step: SagaStepContext) -> dict[str, Any]:
        cid = step.input["customer"]
        result = await self.tools["billing"].call(SignalQuery(customer_id=cid))
        if isinstance(result, ToolError):
            raise ConnectionError(f"{result.code}: {result.message}")
        billing = result.value.model_dump(mode="json")
        row = self.snapshot_row(cid)
        await self._write_once(row, "billing_snapshot", "cached", {**billing, "key": step.key})
        return {"snapshot": row, "billing": billing}

    async def _drop(self, comp: CompensationContext) -> dict[str, Any]:
        return await self._undo(self.snapshot_row(comp.input["customer"]), "cached", "dropped")

    async def _book_callback(self, step: SagaStepContext) -> dict[str, Any]:
        result = await self.callback_tool.call(SignalQuery(customer_id=step.input["customer"]))
        if isinstance(result, ToolError):
            raise ConnectionError(f"scheduling system: {result.code}: {result.message}")
        return {"callback": "booked"}


class _Booked(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    booked: bool


async def _nothing_to_undo(comp: CompensationContext) -> None:
    # The booking is the last step: it is compensated only when its own outcome is unknown
    # (a timeout), and the scheduling system drops unconfirmed bookings by itself.
    return None
