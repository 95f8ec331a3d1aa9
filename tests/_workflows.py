"""A small renewal workflow shared by the pattern tests and their worker processes."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from seamline.patterns import (
    DeadLetter,
    EscalateOnFailure,
    Goto,
    Retry,
    Sleep,
    StateMachine,
    StepContext,
    Workflow,
)

RENEWAL = StateMachine(
    kind="renewal",
    initial="open",
    transitions={
        "open": frozenset({"offered", "expired"}),
        "offered": frozenset({"accepted", "declined", "expired"}),
        "accepted": frozenset({"renewed"}),
        "declined": frozenset({"churned"}),
    },
    terminal=frozenset({"renewed", "churned", "expired"}),
    guards={("open", "offered"): lambda data, patch: patch.get("discount", 0) <= 0.3},
    on_failure={
        "open": Retry(times=3, backoff=timedelta(hours=1), then="escalate"),
        "offered": EscalateOnFailure(),
        "accepted": DeadLetter(),
    },
)


def _coin(row_id: str) -> bool:
    return hashlib.sha256(row_id.encode()).digest()[0] % 10 < 7


async def make_offer(ctx: StepContext) -> Goto:
    # The offer's commit is a store write in the same unit as the move: exactly once.
    ctx.unit.record_commit(
        f"{ctx.row.id}:offer", {"discount": 0.1}, run_id=ctx.row.id, boundary="offer"
    )
    return Goto("offered", {"discount": 0.1})


async def await_answer(ctx: StepContext) -> Goto | Sleep:
    answered_at = ctx.row.data.get("answer_at_day")
    if answered_at is None:
        return Goto("accepted" if _coin(ctx.row.id) else "declined")
    return Sleep(ctx.now + timedelta(days=1))


async def close_accepted(ctx: StepContext) -> Goto:
    ctx.unit.record_commit(
        f"{ctx.row.id}:renewal", {"renewed": True}, run_id=ctx.row.id, boundary="renew"
    )
    return Goto("renewed")


async def close_declined(ctx: StepContext) -> Goto:
    return Goto("churned")


WORKFLOW = Workflow(
    RENEWAL,
    handlers={
        "open": make_offer,
        "offered": await_answer,
        "accepted": close_accepted,
        "declined": close_declined,
    },
    enter_after={
        "offered": timedelta(days=30),
        "accepted": timedelta(days=7),
        "declined": timedelta(days=7),
    },
)
