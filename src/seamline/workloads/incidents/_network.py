"""The simulated network: its device inventory and the device API.

Everything here is SIMULATED and seeded: the devices, the customers they serve (a synthetic
cohort), the recent changes in effect on them, and which cells are under a change freeze.

Each device is one row in the store (kind ``netdev``), so its configuration is durable and
checkable. The device API is the outside system the remediation saga drives, and it behaves
like a careful element manager: every change and every undo is applied with a
compare-and-swap on the device row, recorded in the commit ledger under its own key
(``netdev:<saga key>``) and journaled on the device's stream, in one unit of work. The same key
twice answers the first result and changes nothing, which is what lets the saga re-perform a
step after a crash without applying it twice.

What a change does to a device (:func:`change_effect`) and whether a device's configuration
matches its journal (:func:`fold_journal`) are pure functions over values.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pydantic

from seamline import codec
from seamline.errors import ConfigError
from seamline.store import Applied, Duplicate, StaleVersion, Store, UnitOfWork
from seamline.workloads.renewal import synthetic_cohort

__all__ = [
    "CELLS",
    "QOS_PROFILES",
    "ROUTERS",
    "AdjustQos",
    "ConfigChange",
    "DeviceRejected",
    "DeviceState",
    "DeviceUnreachable",
    "Effect",
    "IncidentKind",
    "Inventory",
    "NetworkSim",
    "RecentChange",
    "Reroute",
    "Restart",
    "RollbackChange",
    "STREAM_START",
    "build_inventory",
    "change_effect",
    "draw",
    "fold_journal",
]

DeviceClass = Literal["cell", "router"]
IncidentKind = Literal["degraded_cell", "packet_loss", "qos_misconfig"]
ConfigValue = str | int

STREAM_START = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
"""Where the command line's virtual clock starts the incident stream."""
ROUTERS: tuple[str, ...] = ("rtr-01", "rtr-02", "rtr-03")
CELLS_PER_ROUTER = 4
CELLS: tuple[str, ...] = tuple(f"cell-{n:02d}" for n in range(1, 1 + CELLS_PER_ROUTER * 3))
CUSTOMERS = 480
QOS_PROFILES: tuple[str, ...] = ("gold-v3", "silver-v2", "voice-priority-v2")
"""Profiles the planning policy allows; ``gold-v4-beta`` exists on devices but is not one."""
PATHS: tuple[str, ...] = ("path-a", "path-b")
_CAS_TRIES = 8

DeviceId = Annotated[str, pydantic.Field(pattern=r"^(cell|rtr)-\d{2}$")]


def draw(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``: seeded simulation that needs no shared state."""
    return random.Random("|".join(str(p) for p in parts)).random()


# --- the changes a plan may ask for ---------------------------------------------------------


class _Change(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    device: DeviceId


class Reroute(_Change):
    """Move a router's traffic onto another of its uplink paths."""

    op: Literal["reroute"]
    via: str = pydantic.Field(max_length=20)


class Restart(_Change):
    """Restart a device (no configuration changes; service drops for a minute)."""

    op: Literal["restart"]


class RollbackChange(_Change):
    """Undo a recent change still in effect on the device."""

    op: Literal["rollback_change"]
    change_id: str = pydantic.Field(max_length=20)


class AdjustQos(_Change):
    """Put the device on another QoS profile."""

    op: Literal["adjust_qos"]
    profile: str = pydantic.Field(max_length=30)


ConfigChange = Annotated[
    Reroute | Restart | RollbackChange | AdjustQos, pydantic.Field(discriminator="op")
]


# --- devices ----------------------------------------------------------------------------------


class RecentChange(pydantic.BaseModel):
    """A change made before the incident (by people, in a change window)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    id: str
    field: str
    before: ConfigValue
    after: ConfigValue
    hours_ago: int


class DeviceState(pydantic.BaseModel):
    """One device as its row holds it. ``initial`` is its configuration when it was installed,
    the starting point its journal is folded from."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    device: str
    device_class: DeviceClass
    router: str | None = None
    cells: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    customers: int
    frozen: bool = False
    freeze_reason: str | None = None
    config: dict[str, ConfigValue]
    initial: dict[str, ConfigValue]
    recent_changes: tuple[RecentChange, ...] = ()
    boots: int = 0

    def in_effect(self) -> tuple[RecentChange, ...]:
        """Recent changes whose value the device still carries."""
        return tuple(c for c in self.recent_changes if self.config.get(c.field) == c.after)


@dataclass(frozen=True)
class Inventory:
    """The network as installed: every device, and the customers each cell serves."""

    devices: Mapping[str, DeviceState]
    customers: Mapping[str, tuple[str, ...]]
    """cell -> the ids of the customers it serves."""

    def cells_of(self, device: str) -> tuple[str, ...]:
        state = self.devices[device]
        return state.cells if state.device_class == "router" else (device,)

    def customers_of(self, devices: Iterable[str]) -> frozenset[str]:
        return frozenset(
            c
            for d in devices
            if d in self.devices
            for cell in self.cells_of(d)
            for c in self.customers[cell]
        )


_BASE: Mapping[DeviceClass, Mapping[str, ConfigValue]] = {
    "cell": {"qos_profile": "gold-v3", "tx_power_dbm": 43, "admin_state": "up"},
    "router": {"qos_profile": "gold-v3", "primary_path": "path-a", "mtu": 9000},
}
_RECENT: Mapping[DeviceClass, tuple[tuple[str, ConfigValue, ConfigValue], ...]] = {
    "cell": (("qos_profile", "gold-v3", "gold-v4-beta"), ("tx_power_dbm", 43, 46)),
    "router": (("mtu", 9000, 1500), ("qos_profile", "gold-v3", "gold-v4-beta")),
}
_FIRMWARE_WINDOW = "radio firmware upgrade window (CAB-2026-114)"


def _recent(rng: random.Random, device_class: DeviceClass, serial: int) -> RecentChange:
    field, before, after = _RECENT[device_class][0 if rng.random() < 0.5 else 1]
    return RecentChange(
        id=f"CHG-{serial}", field=field, before=before, after=after, hours_ago=rng.randint(2, 30)
    )


def build_inventory(seed: int) -> Inventory:
    """Three aggregation routers with four cells each, serving a synthetic cohort of customers;
    each device carries one recent change still in effect, and two cells are under a freeze."""
    rng = random.Random(f"{seed}:inventory")
    served: dict[str, list[str]] = {c: [] for c in CELLS}
    for customer in synthetic_cohort(CUSTOMERS, seed=seed):
        home = CELLS[int(draw(seed, "home", customer.customer_id) * len(CELLS))]
        served[home].append(customer.customer_id)
    frozen = set(rng.sample(CELLS, 2))
    devices: dict[str, DeviceState] = {}
    serial = 4100 + rng.randrange(800)
    for r, router in enumerate(ROUTERS):
        cells = CELLS[r * CELLS_PER_ROUTER : (r + 1) * CELLS_PER_ROUTER]
        for cell in cells:
            serial += 1
            change = _recent(rng, "cell", serial)
            config = {**_BASE["cell"], change.field: change.after}
            devices[cell] = DeviceState(
                device=cell,
                device_class="cell",
                router=router,
                customers=len(served[cell]),
                frozen=cell in frozen,
                freeze_reason=_FIRMWARE_WINDOW if cell in frozen else None,
                config=config,
                initial=config,
                recent_changes=(change,),
            )
        serial += 1
        change = _recent(rng, "router", serial)
        config = {**_BASE["router"], change.field: change.after}
        devices[router] = DeviceState(
            device=router,
            device_class="router",
            cells=cells,
            paths=PATHS,
            customers=sum(len(served[c]) for c in cells),
            config=config,
            initial=config,
            recent_changes=(change,),
        )
    return Inventory(devices, {c: tuple(ids) for c, ids in served.items()})


# --- what a change does -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Effect:
    """What a change does to a device's configuration: ``before`` and ``after`` hold the
    fields it touches (empty for a restart, which only reboots the device)."""

    before: Mapping[str, ConfigValue]
    after: Mapping[str, ConfigValue]
    reboots: int = 0


def change_effect(state: DeviceState, change: ConfigChange) -> Effect | str:
    """The effect of ``change`` on ``state``, or why the device refuses it. Pure."""
    config = state.config
    if change.device != state.device:
        return f"change is for {change.device}, not {state.device}"
    if isinstance(change, Reroute):
        if state.device_class != "router" or change.via not in state.paths:
            return f"{state.device} has no uplink path {change.via!r}"
        if config.get("primary_path") == change.via:
            return f"{change.via} already carries {state.device}'s traffic"
        return Effect({"primary_path": config["primary_path"]}, {"primary_path": change.via})
    if isinstance(change, Restart):
        return Effect({}, {}, reboots=1)
    if isinstance(change, RollbackChange):
        found = next((c for c in state.recent_changes if c.id == change.change_id), None)
        if found is None:
            return f"{state.device} has no change {change.change_id}"
        if config.get(found.field) != found.after:
            return f"{change.change_id} is no longer in effect on {state.device}"
        return Effect({found.field: config[found.field]}, {found.field: found.before})
    return Effect({"qos_profile": config["qos_profile"]}, {"qos_profile": change.profile})


def fold_journal(
    initial: Mapping[str, ConfigValue], journal: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, ConfigValue]:
    """A device's configuration rebuilt from where it started and its journal
    (``change_applied`` sets ``after``; ``change_reverted`` sets ``restored``). Pure."""
    config = dict(initial)
    for kind, payload in journal:
        if kind == "change_applied":
            config.update(payload["after"])
        elif kind == "change_reverted":
            config.update(payload["restored"])
    return config


# --- the device API ---------------------------------------------------------------------------


class DeviceRejected(Exception):
    """The device refused the change; nothing was applied."""


class DeviceUnreachable(ConnectionError):
    """The device did not answer; whether a retry helps is unknown, so it is retried."""


class NetworkSim:
    """The simulated element manager: device rows, their journals, and apply/revert."""

    def __init__(self, store: Store, job: str) -> None:
        self.store, self.job = store, job

    def row_id(self, device: str) -> str:
        return f"{self.job}:dev:{device}"

    def stream(self, device: str) -> str:
        return f"netdev:{self.job}:{device}"

    async def install(self, inventory: Inventory) -> None:
        """Create the device rows once; a job that exists keeps its devices as they are."""
        for device, state in inventory.devices.items():
            if await self.store.get_row(self.row_id(device)) is not None:
                continue
            await self.store.apply(
                UnitOfWork()
                .create_row(self.row_id(device), kind="netdev", state=_state(state), data=state)
                .append_event(
                    self.stream(device),
                    "device_installed",
                    {"config": state.config},
                    idempotency_key=f"{self.row_id(device)}:installed",
                )
            )

    async def device(self, device: str) -> tuple[DeviceState, int]:
        row = await self.store.get_row(self.row_id(device))
        if row is None:
            raise ConfigError(f"no device {device} in job {self.job}; install the inventory first")
        return row.data_as(DeviceState), row.version

    async def snapshot(self, devices: Iterable[str] | None = None) -> dict[str, DeviceState]:
        """The named devices as they are now; all of the job's devices when None (one read)."""
        if devices is not None:
            return {d: (await self.device(d))[0] for d in devices}
        prefix = self.row_id("")
        rows = await self.store.list_rows(kind="netdev", after_id=prefix, limit=1000)
        return {
            r.id[len(prefix) :]: r.data_as(DeviceState) for r in rows if r.id.startswith(prefix)
        }

    async def journal(self, device: str) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        after = 0
        while page := await self.store.read_stream(self.stream(device), after=after):
            out.extend((e.type, e.payload) for e in page)
            after = page[-1].stream_seq
        return out

    async def apply(self, change: ConfigChange, *, key: str, refuse: bool = False) -> Any:
        """Apply ``change`` once under ``key``; the same key again answers the first result.
        ``refuse``: the simulated device's commit check fails (a seeded fault)."""
        ledger = f"netdev:{key}"
        for _ in range(_CAS_TRIES):
            done = await self.store.get_commit(ledger)
            if done is not None and done.status == "done":
                return done.result
            state, version = await self.device(change.device)
            effect = (
                f"commit check failed on {change.device} (simulated fault)"
                if refuse
                else change_effect(state, change)
            )
            if isinstance(effect, str):
                await self.store.apply(
                    UnitOfWork().append_event(
                        self.stream(change.device),
                        "change_refused",
                        {"key": key, "op": change.op, "reason": effect},
                        idempotency_key=f"{ledger}:refused",
                    )
                )
                raise DeviceRejected(f"{change.device} refused {change.op}: {effect}")
            result = {
                "key": key,
                "device": change.device,
                "op": change.op,
                "before": dict(effect.before),
                "after": dict(effect.after),
            }
            changed = state.model_copy(
                update={
                    "config": {**state.config, **effect.after},
                    "boots": state.boots + effect.reboots,
                }
            )
            if await self._write(change.device, version, changed, ledger, "change_applied", result):
                return result
        raise DeviceUnreachable(f"{change.device}: the row kept moving ({_CAS_TRIES} tries)")

    async def revert(self, device: str, *, of_key: str, key: str, fail: bool = False) -> Any:
        """Undo what was applied under ``of_key``, once, under ``key``. Nothing applied under
        ``of_key`` means nothing to undo. ``fail``: the device stops answering (seeded)."""
        applied = await self.store.get_commit(f"netdev:{of_key}")
        if applied is None or applied.status != "done":
            return {"key": key, "device": device, "undone": False, "why": "nothing was applied"}
        if fail:
            raise DeviceUnreachable(f"{device} did not answer the rollback (simulated fault)")
        ledger = f"netdev:{key}"
        for _ in range(_CAS_TRIES):
            done = await self.store.get_commit(ledger)
            if done is not None and done.status == "done":
                return done.result
            state, version = await self.device(device)
            restored = dict(applied.result["before"])
            result = {"key": key, "device": device, "undoes": of_key, "restored": restored}
            changed = state.model_copy(update={"config": {**state.config, **restored}})
            if await self._write(device, version, changed, ledger, "change_reverted", result):
                return result
        raise DeviceUnreachable(f"{device}: the row kept moving ({_CAS_TRIES} tries)")

    async def freeze(self, device: str, *, reason: str) -> None:
        """Put ``device`` under a change freeze (a decision made outside the agent)."""
        for _ in range(_CAS_TRIES):
            state, version = await self.device(device)
            if state.frozen:
                return
            frozen = state.model_copy(update={"frozen": True, "freeze_reason": reason})
            outcome = await self.store.apply(
                UnitOfWork()
                .transition(
                    self.row_id(device), expect_version=version, to="change_freeze", data=frozen
                )
                .append_event(self.stream(device), "freeze_started", {"reason": reason})
            )
            if isinstance(outcome, Applied):
                return
        raise DeviceUnreachable(f"{device}: the row kept moving ({_CAS_TRIES} tries)")

    async def _write(
        self,
        device: str,
        version: int,
        state: DeviceState,
        ledger: str,
        event: str,
        result: Mapping[str, Any],
    ) -> bool:
        """Row, ledger entry and journal line in one unit. False: the row moved or the key was
        used meanwhile (the caller reads again)."""
        outcome = await self.store.apply(
            UnitOfWork()
            .transition(self.row_id(device), expect_version=version, to=_state(state), data=state)
            .record_commit(ledger, result, run_id=self.job, boundary="netdev")
            .append_event(self.stream(device), event, result, idempotency_key=ledger)
        )
        if isinstance(outcome, Applied):
            return True
        if isinstance(outcome, StaleVersion | Duplicate):
            return False
        raise DeviceUnreachable(f"{device}: the store refused the write: {codec.encode(outcome)}")


def _state(state: DeviceState) -> str:
    return "change_freeze" if state.frozen else "in_service"
