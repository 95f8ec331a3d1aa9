"""P1: diagnostics gathered in parallel by stateless workers, merged by declared priority.

Three NOC systems are read through hardened tools: telemetry, the change log and the alarm
history. The tools validate what goes in and what comes out, time out, rate-limit and break
the circuit, but do not retry (``attempts=1``): the one retry budget belongs to the
orchestrator, so a flaky system costs at most the budget, never tools x workers x retries.
A worker that fails for good contributes nothing (``Substitute`` with an empty default) and
the plan is proposed from what was gathered, with the gap named in the facts.

The systems are SIMULATED: seeded values, seeded failures (an HTTP 503) and hangs (no answer
before the tool's timeout), plus per-incident faults that take a tool down entirely.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic

from seamline.clock import Clock
from seamline.patterns import Delegation, Failure, Substitute, Success, Worker, WorkerResult
from seamline.tools import CircuitBreaker, HardenedTool, TokenBucket, ToolOk
from seamline.workloads.incidents._incidents import SimulatedFaults
from seamline.workloads.incidents._network import (
    IncidentKind,
    NetworkSim,
    draw,
)

__all__ = [
    "AlarmHistory",
    "ChangeLog",
    "DiagnosticQuery",
    "NocSystems",
    "Telemetry",
    "diagnostics_delegation",
]

TOOL_TIMEOUT_S = 0.05
"""Wall time a tool waits for its system; a simulated hang outlasts it."""
FAIL_RATE = 0.06
HANG_RATE = 0.02


class DiagnosticQuery(pydantic.BaseModel):
    """The task every diagnostic worker is given."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    incident_id: str
    kind: IncidentKind
    device: str
    router: str | None = None


class Telemetry(pydantic.BaseModel):
    symptom: str
    suspected_device: str
    metrics: dict[str, float]


class ChangeSeen(pydantic.BaseModel):
    id: str
    device: str
    field: str
    before: str | int
    after: str | int
    hours_ago: int


class ChangeLog(pydantic.BaseModel):
    recent_changes: list[ChangeSeen]
    suspected_change: str | None = None
    suspected_device: str | None = None


class Alarm(pydantic.BaseModel):
    device: str
    code: str
    count: int


class AlarmHistory(pydantic.BaseModel):
    alarms: list[Alarm]
    suspected_device: str


class NocSystems:
    """The simulated systems behind the tools. Which call fails is fixed by the seed, the
    incident and the call's number, so the same run fails the same way every time."""

    def __init__(
        self,
        network: NetworkSim,
        *,
        seed: int,
        faults: dict[str, SimulatedFaults],
        fail_rate: float = FAIL_RATE,
        hang_rate: float = HANG_RATE,
    ) -> None:
        self.network, self.seed, self.faults = network, seed, faults
        self.fail_rate, self.hang_rate = fail_rate, hang_rate
        self.calls: Counter[tuple[str, str]] = Counter()

    async def _weather(self, tool: str, q: DiagnosticQuery) -> None:
        self.calls[tool, q.incident_id] += 1
        faults = self.faults.get(q.incident_id, SimulatedFaults())
        roll = draw(self.seed, tool, q.incident_id, self.calls[tool, q.incident_id])
        if tool in faults.tools_hang or roll < self.hang_rate:
            await asyncio.sleep(30)  # never answers: the tool's timeout ends the call
        if tool in faults.tools_down or roll < self.hang_rate + self.fail_rate:
            raise ConnectionError(f"{tool} API answered 503 (simulated)")

    async def telemetry(self, q: DiagnosticQuery) -> Telemetry:
        await self._weather("telemetry", q)
        level = draw(self.seed, "level", q.incident_id)
        if q.kind == "degraded_cell":
            rate = round(4 + 6 * level, 1)
            return Telemetry(
                symptom=f"call drop rate {rate}% on {q.device} (baseline 0.6%)",
                suspected_device=q.device,
                metrics={"drop_rate_pct": rate, "prb_utilisation_pct": round(60 + 30 * level)},
            )
        if q.kind == "packet_loss":
            loss = round(2 + 5 * level, 1)
            return Telemetry(
                symptom=f"packet loss {loss}% on the primary uplink of {q.device}",
                suspected_device=q.device,
                metrics={"packet_loss_pct": loss, "latency_ms": round(40 + 80 * level)},
            )
        return Telemetry(
            symptom=f"voice bearers on {q.device} marked best effort; MOS {3.4 - level:.1f}",
            suspected_device=q.device,
            metrics={"voice_mos": round(3.4 - level, 1)},
        )

    async def changes(self, q: DiagnosticQuery) -> ChangeLog:
        await self._weather("changes", q)
        seen: list[ChangeSeen] = []
        for device in (q.device, q.router):
            if device is None:
                continue
            state, _ = await self.network.device(device)
            seen += [
                ChangeSeen(device=device, **c.model_dump(mode="python")) for c in state.in_effect()
            ]
        own = [c for c in seen if c.device == q.device]
        suspect = min(own, key=lambda c: c.hours_ago) if own else None
        return ChangeLog(
            recent_changes=seen,
            suspected_change=suspect.id if suspect else None,
            suspected_device=suspect.device if suspect else None,
        )

    async def alarms(self, q: DiagnosticQuery) -> AlarmHistory:
        await self._weather("alarms", q)
        code = {"degraded_cell": "RU_FAULT", "packet_loss": "LINK_ERRORS"}.get(
            q.kind, "QOS_MISMATCH"
        )
        count = 3 + int(9 * draw(self.seed, "count", q.incident_id))
        alarms = [Alarm(device=q.device, code=code, count=count)]
        suspected = q.device
        if q.router is not None and draw(self.seed, "flap", q.incident_id) < 0.3:
            # The alarm system blames the router upstream: a conflict the merge settles.
            alarms.append(Alarm(device=q.router, code="LINK_FLAP", count=2))
            suspected = q.router
        return AlarmHistory(alarms=alarms, suspected_device=suspected)


def _worker(
    tool: HardenedTool[DiagnosticQuery, Any], output: type[pydantic.BaseModel]
) -> Worker[DiagnosticQuery]:
    async def work(q: DiagnosticQuery) -> WorkerResult:
        answer = await tool.call(q)
        if isinstance(answer, ToolOk):
            return Success(answer.value)
        return Failure(answer.code, answer.message, answer.retryable)

    return Worker(tool.name, work, timeout_s=2.0, output=output)


def diagnostics_delegation(systems: NocSystems, *, clock: Clock) -> Delegation:
    """The orchestrator over the three diagnostic workers. Merge order: telemetry, then the
    change log, then alarms; for the suspected device, telemetry and alarms (what is broken)
    come before the change log (what changed)."""

    def now() -> float:
        return clock.now().timestamp()  # limits and breakers on the run's clock

    def tool(
        name: str,
        fn: Callable[[DiagnosticQuery], Awaitable[Any]],
        output: type[pydantic.BaseModel],
    ) -> Worker[DiagnosticQuery]:
        hardened: HardenedTool[DiagnosticQuery, Any] = HardenedTool(
            name,
            fn,
            input=DiagnosticQuery,
            output=output,
            timeout_s=TOOL_TIMEOUT_S,
            attempts=1,
            rate_limit=TokenBucket(rate_per_s=2.0, burst=10, now=now),
            breaker=CircuitBreaker(threshold=8, reset_after_s=60.0, now=now),
        )
        return _worker(hardened, output)

    return Delegation(
        "incident-diagnostics",
        workers=[
            tool("telemetry", systems.telemetry, Telemetry),
            tool("changes", systems.changes, ChangeLog),
            tool("alarms", systems.alarms, AlarmHistory),
        ],
        priority=["telemetry", "changes", "alarms"],
        field_priority={"suspected_device": ["telemetry", "alarms", "changes"]},
        on_partial=Substitute(defaults={"telemetry": {}, "changes": {}, "alarms": {}}),
        retries=3,
        retries_per_worker=2,
        backoff_initial_s=1.0,
        backoff_max_s=4.0,
        max_concurrency=3,
        clock=clock,
    )
