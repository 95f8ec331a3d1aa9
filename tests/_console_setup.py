"""A console over a renewal job paused with escalations waiting for a person."""

from __future__ import annotations

from dataclasses import dataclass

from seamline.clock import VirtualClock, advance_to_next_timer
from seamline.console import ApiToken, ConsoleConfig, User, hash_password, hash_token
from seamline.patterns import Runner
from seamline.store import Approval, Store
from seamline.workloads.renewal import synthetic_cohort
from seamline.workloads.renewal._job import build_agent, enqueue_renewals, runner_for

PASSWORD = "correct horse battery"
OPS_TOKEN = "ops-token-0123456789abcdef0123456789"
VIEW_TOKEN = "view-token-0123456789abcdef012345678"
SECRET = "s" * 40


def console_config() -> ConsoleConfig:
    hashed = hash_password(PASSWORD, salt=b"0123456789abcdef")
    return ConsoleConfig(
        users={
            "alice": User(password_hash=hashed, roles=("admin",)),
            "bob": User(password_hash=hashed, roles=("operator",)),
            "vic": User(password_hash=hashed, roles=("viewer",)),
        },
        tokens=[
            ApiToken(name="ops", sha256=hash_token(OPS_TOKEN), roles=("operator",)),
            ApiToken(name="prometheus", sha256=hash_token(VIEW_TOKEN), roles=("viewer",)),
        ],
        kill_switch={"alice": ["all"], "token:ops": ["kind:*"]},
        secret_key=SECRET,
    )


@dataclass
class PausedJob:
    """A renewal job stepped until escalations wait; ``step_row`` moves one row on."""

    runner: Runner
    clock: VirtualClock
    store: Store

    async def step_until_moved(self, row_id: str, state: str, *, max_steps: int = 50) -> str:
        """Run due timers until the row leaves ``state``; its new state."""
        for _ in range(max_steps):
            row = await self.store.get_row(row_id)
            assert row is not None
            if row.state != state:
                return row.state
            if await advance_to_next_timer(self.clock, self.store) is None:
                break
            await self.runner.step()
        raise AssertionError(f"row {row_id} stayed in {state}")


async def paused_renewals(store: Store, clock: VirtualClock, n: int = 40) -> PausedJob:
    customers = synthetic_cohort(n, seed=7)
    await enqueue_renewals(store, customers, clock=clock, seed=7, source={"synthetic": n})
    agent = build_agent(store, customers, clock=clock, seed=7)
    runner = runner_for(store, agent, clock=clock, owner="console-test", concurrency=8)
    for _ in range(500):
        pending = await store.list_approvals(status="pending")
        if any(a.kind == "escalation" for a in pending):
            return PausedJob(runner, clock, store)
        if await advance_to_next_timer(clock, store) is None:
            break
        await runner.step()
    raise AssertionError("the job never escalated; pick another seed or more customers")


async def an_escalation(store: Store) -> tuple[Approval, str]:
    """A pending escalation and the row it holds in needs_person."""
    pending = [a for a in await store.list_approvals(status="pending") if a.kind == "escalation"]
    rows = await store.list_rows(kind="renewal", state="needs_person", limit=1000)
    by_approval = {r.data.get("escalation"): r.id for r in rows}
    for a in pending:
        if a.id in by_approval:
            return a, by_approval[a.id]
    raise AssertionError("no escalation with its row in needs_person")
