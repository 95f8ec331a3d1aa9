"""P1 hierarchical delegation: one orchestrator hands typed tasks to stateless workers and
merges their typed results by a declared priority.

Use it when one decision needs several independent answers gathered in parallel (the renewal
agent's usage, network, billing and support signals) and one owner must put them together.
Use P2 (scatter-gather + saga) instead when workers have side effects to undo on failure.

Why it is built this way:

* Workers are stateless async callables ``(task) -> WorkerResult``. Whatever a worker does
  (raise, hang, return garbage), the orchestrator sees a typed :class:`Failure`.
* The retry budget belongs to the orchestrator alone: one count per run, shared by every
  worker, with exponential backoff on the clock. Workers never retry, so the worst case adds
  up instead of multiplying: a worker is called at most ``1 + min(retries,
  retries_per_worker)`` times and a run makes at most ``len(workers) + retries`` calls.
* What a lasting failure means is declared up front (:class:`Drop`, :class:`Substitute`,
  :class:`FailFast`), so a partial result is never a surprise.
* The merge is a pure function of the final results and the declared priority: a model never
  decides it and completion order cannot change it. Each merged field names its worker;
  values it overruled are listed as conflicts.
* :class:`NeedsHuman` is an answer, not a failure: never retried, handed to the caller (P6).

Timeouts are event-loop wall time from the moment a worker is called (not while it waits for
a concurrency slot); backoff waits on the :class:`~seamline.clock.Clock`, so under a
``VirtualClock`` retries cost no real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import pydantic

from seamline.clock import Clock, SystemClock
from seamline.errors import ConfigError

__all__ = [
    "Delegated",
    "Delegation",
    "DelegationFailed",
    "DelegationResult",
    "Drop",
    "FailFast",
    "Failure",
    "FieldConflict",
    "NeedsHuman",
    "Substitute",
    "Success",
    "TraceEntry",
    "Worker",
    "WorkerResult",
    "render_trace",
]

T = TypeVar("T")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Success(Generic[V]):
    """The worker did its task. ``value`` is a mapping of field names or a pydantic model;
    a field whose value is None counts as not provided."""

    value: V
    kind: Literal["success"] = "success"


@dataclass(frozen=True, slots=True)
class Failure:
    """The worker could not do its task. ``retryable``: calling it again may succeed."""

    reason_code: str
    message: str
    retryable: bool
    kind: Literal["failure"] = "failure"


@dataclass(frozen=True, slots=True)
class NeedsHuman:
    """The worker needs a person to decide; never retried, surfaced to the caller."""

    reason: str
    question: str
    kind: Literal["needs_human"] = "needs_human"


WorkerResult = Success[Any] | Failure | NeedsHuman


@dataclass(frozen=True)
class Worker(Generic[T]):
    """A named stateless worker. ``timeout_s`` bounds each call; ``output``, when given, is
    the pydantic model a ``Success`` value must validate against."""

    name: str
    fn: Callable[[T], Awaitable[WorkerResult]]
    _: KW_ONLY
    timeout_s: float = 10.0
    output: type[pydantic.BaseModel] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a worker needs a non-empty name")
        if not 0 < self.timeout_s <= 3600:
            raise ConfigError(
                f"worker {self.name}: timeout_s must be in (0, 3600] seconds, got {self.timeout_s}"
            )


@dataclass(frozen=True)
class Drop:
    """A worker that fails for good is left out; the merge uses what succeeded."""

    kind: Literal["drop"] = "drop"


@dataclass(frozen=True)
class Substitute:
    """A worker that fails for good is replaced by its declared default fields (one default
    per worker; an empty mapping means "contribute nothing"). A default only fills fields that
    no worker that succeeded provided."""

    defaults: Mapping[str, Mapping[str, Any]]
    kind: Literal["substitute"] = "substitute"


@dataclass(frozen=True)
class FailFast:
    """The first worker to fail for good cancels the others and the run fails."""

    kind: Literal["fail_fast"] = "fail_fast"


TraceEvent = Literal[
    "dispatched",
    "succeeded",
    "failed",
    "timed_out",
    "retried",
    "needs_human",
    "cancelled",
    "dropped",
    "substituted",
    "merged",
    "run_failed",
]


@dataclass(frozen=True, slots=True)
class TraceEntry:
    at: datetime
    event: TraceEvent
    worker: str | None = None
    attempt: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """Workers disagreed on ``field``; ``chosen`` won by declared priority over ``overruled``."""

    field: str
    chosen: str
    overruled: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Delegated:
    """The run produced a merged result. ``provenance`` maps each merged field to the worker
    it came from (a worker in ``substituted`` supplied its declared default)."""

    merged: Mapping[str, Any]
    provenance: Mapping[str, str]
    results_by_worker: Mapping[str, WorkerResult]
    dropped: tuple[str, ...]
    substituted: tuple[str, ...]
    needs_human: Mapping[str, NeedsHuman]
    attempts_by_worker: Mapping[str, int]
    conflicts: tuple[FieldConflict, ...]
    retries_used: int
    trace: tuple[TraceEntry, ...]
    kind: Literal["delegated"] = "delegated"


FailCode = Literal["worker_failed", "all_failed"]


@dataclass(frozen=True, slots=True)
class DelegationFailed:
    """The run produced no merged result; ``results_by_worker`` says what each worker did."""

    reason_code: FailCode
    message: str
    results_by_worker: Mapping[str, WorkerResult]
    attempts_by_worker: Mapping[str, int]
    trace: tuple[TraceEntry, ...]
    kind: Literal["delegation_failed"] = "delegation_failed"


DelegationResult = Delegated | DelegationFailed


class Delegation:
    """An orchestrator over ``workers``, declared once and run per set of tasks.

    ``priority`` is the global merge order (default: the order of ``workers``);
    ``field_priority`` puts named workers first for one field, the rest following in the
    global order. ``retries`` is the run's whole retry budget, ``retries_per_worker`` caps
    one worker's share of it. ``on_partial`` says what a lasting failure means.
    """

    def __init__(
        self,
        name: str,
        *,
        workers: Sequence[Worker[Any]],
        priority: Sequence[str] | None = None,
        field_priority: Mapping[str, Sequence[str]] | None = None,
        on_partial: Drop | Substitute | FailFast | None = None,
        retries: int = 2,
        retries_per_worker: int | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 2.0,
        max_concurrency: int = 4,
        clock: Clock | None = None,
    ) -> None:
        names = [w.name for w in workers]
        if not name or not names:
            raise ConfigError(
                f"a delegation needs a name and at least one worker; got {name!r}, {names}"
            )
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"delegation {name}: worker names must be unique; repeated: {twice}")
        order = list(priority) if priority is not None else names
        if sorted(order) != sorted(names):
            raise ConfigError(
                f"delegation {name}: priority must list each of the {len(names)} workers once; "
                f"got {order}, workers are {names}"
            )
        for fname, ranked in (field_priority or {}).items():
            if not ranked or len(set(ranked)) != len(ranked) or not set(ranked) <= set(names):
                raise ConfigError(
                    f"delegation {name}: field_priority[{fname!r}] must name known workers, "
                    f"each at most once; got {list(ranked)}, workers are {names}"
                )
        share = retries if retries_per_worker is None else retries_per_worker
        for label, value, low, high in (
            ("retries", retries, 0, 100),
            ("retries_per_worker", share, 0, retries),
            ("backoff_max_s", backoff_max_s, 0, 300),
            ("backoff_initial_s", backoff_initial_s, 0, backoff_max_s),
            ("max_concurrency", max_concurrency, 1, 1024),
        ):
            if not low <= value <= high:
                raise ConfigError(
                    f"delegation {name}: {label} must be in [{low}, {high}], got {value}"
                )
        policy = on_partial or Drop()
        if isinstance(policy, Substitute):
            policy = Substitute({w: dict(d) for w, d in policy.defaults.items()})
            missing = [n for n in names if n not in policy.defaults]
            extra = [n for n in policy.defaults if n not in names]
            if missing or extra:
                raise ConfigError(
                    f"delegation {name}: Substitute needs one default per worker; missing "
                    f"{missing}, unknown {extra} (an empty mapping means 'contribute nothing')"
                )
        self.name = name
        self.workers = tuple(workers)
        self.priority = tuple(order)
        self.field_priority = {f: tuple(r) for f, r in (field_priority or {}).items()}
        self.on_partial: Drop | Substitute | FailFast = policy
        self.retries, self.retries_per_worker = retries, share
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.max_concurrency = max_concurrency
        self.clock: Clock = clock or SystemClock()

    def __repr__(self) -> str:
        return (
            f"Delegation({self.name!r}, workers={[w.name for w in self.workers]}, "
            f"retries={self.retries}, on_partial={self.on_partial.kind})"
        )

    async def run(self, tasks: Mapping[str, object]) -> DelegationResult:
        """Send each worker its task (``tasks`` maps every worker name to one) and merge."""
        names = [w.name for w in self.workers]
        missing = [n for n in names if n not in tasks]
        unknown = [n for n in tasks if n not in names]
        if missing or unknown:
            raise ConfigError(
                f"delegation {self.name}: tasks must name each of the {len(names)} workers; "
                f"missing {missing}, unknown {unknown}"
            )
        return await _Run(self, tasks).go()

    def run_sync(self, tasks: Mapping[str, object]) -> DelegationResult:
        """Blocking form of :meth:`run`, for scripts; not for use inside an event loop."""
        return asyncio.run(self.run(tasks))


class _Run:
    """One execution of a delegation; discarded afterwards."""

    def __init__(self, d: Delegation, tasks: Mapping[str, object]) -> None:
        self.d, self.tasks = d, tasks
        self.sem = asyncio.Semaphore(d.max_concurrency)
        self.attempts = {w.name: 0 for w in d.workers}
        self.shares = {w.name: 0 for w in d.workers}
        self.retries_used = 0
        self.trace: list[TraceEntry] = []

    def note(
        self, event: TraceEvent, worker: str | None, detail: str, n: int | None = None
    ) -> None:
        self.trace.append(TraceEntry(self.d.clock.now(), event, worker, n, detail))

    async def go(self) -> DelegationResult:
        d = self.d
        pending = {asyncio.create_task(self._drive(w)): w.name for w in d.workers}
        finals: dict[str, tuple[WorkerResult, dict[str, Any] | None]] = {}
        culprit: str | None = None  # the worker whose failure ends a fail_fast run
        try:
            while pending and culprit is None:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                # A batch that finished together is read in priority order: deterministic.
                for task in sorted(done, key=lambda t: d.priority.index(pending[t])):
                    name = pending.pop(task)
                    finals[name] = task.result()
                    failed = isinstance(finals[name][0], Failure)
                    if failed and culprit is None and isinstance(d.on_partial, FailFast):
                        culprit = name
        finally:  # on fail_fast, and when the caller cancels the run itself
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for name in pending.values():
            why = f"cancelled because {culprit} failed first (fail_fast)"
            finals[name] = (Failure("cancelled", why, retryable=True), None)
            self.note("cancelled", name, why, self.attempts[name] or None)
        results = {w.name: finals[w.name][0] for w in d.workers}
        failures = {n: r for n, r in results.items() if isinstance(r, Failure)}
        if culprit is not None:
            cause, calls = failures[culprit], self.attempts[culprit]
            return self._failed(
                "worker_failed",
                f"{culprit} failed for good ({cause.reason_code}: {cause.message}) after "
                f"{calls} call(s); fail_fast cancelled {len(pending)} other worker(s). Declare "
                f"Drop or Substitute to accept partial results",
                results,
            )
        if isinstance(d.on_partial, Drop) and len(failures) == len(results):
            codes = ", ".join(f"{n}: {r.reason_code}" for n, r in failures.items())
            return self._failed(
                "all_failed",
                f"all {len(results)} workers failed ({codes}); nothing to merge. See "
                f"results_by_worker, or declare Substitute defaults",
                results,
            )
        return self._merge(results, {n: f for n, (_, f) in finals.items() if f is not None})

    def _merge(
        self, results: dict[str, WorkerResult], fields: dict[str, dict[str, Any]]
    ) -> Delegated:
        d = self.d
        values: dict[str, Mapping[str, Any]] = {}
        dropped: list[str] = []
        substituted: list[str] = []
        for name in d.priority:
            result = results[name]
            if isinstance(result, Success):
                values[name] = fields[name]
            elif isinstance(result, Failure) and isinstance(d.on_partial, Substitute):
                values[name] = d.on_partial.defaults[name]
                substituted.append(name)
                n = len(values[name])
                self.note("substituted", name, f"{n} default field(s) for {result.reason_code}")
            elif isinstance(result, Failure):
                dropped.append(name)
                self.note("dropped", name, f"{result.reason_code}; its fields are left out")
        merged, provenance, conflicts = _merge(
            values, d.priority, d.field_priority, fallback=frozenset(substituted)
        )
        tally = f"{len(merged)} field(s) from {len(set(provenance.values()))} worker(s)"
        self.note("merged", None, f"{tally}; {len(conflicts)} conflict(s) settled by priority")
        return Delegated(
            merged=merged,
            provenance=provenance,
            results_by_worker=results,
            dropped=tuple(dropped),
            substituted=tuple(substituted),
            needs_human={n: r for n, r in results.items() if isinstance(r, NeedsHuman)},
            attempts_by_worker=dict(self.attempts),
            conflicts=conflicts,
            retries_used=self.retries_used,
            trace=tuple(self.trace),
        )

    def _failed(
        self, code: FailCode, message: str, results: dict[str, WorkerResult]
    ) -> DelegationFailed:
        self.note("run_failed", None, f"{code}: {message}")
        return DelegationFailed(code, message, results, dict(self.attempts), tuple(self.trace))

    async def _drive(self, w: Worker[Any]) -> tuple[WorkerResult, dict[str, Any] | None]:
        """Call one worker until its answer is final; every retry is the orchestrator's."""
        while True:
            async with self.sem:  # the slot is held for the call only, not for the backoff
                self.attempts[w.name] += 1
                n = self.attempts[w.name]
                self.note("dispatched", w.name, "", n)
                result, fields = await _call_once(w, self.tasks[w.name])
            if isinstance(result, Success):
                self.note("succeeded", w.name, f"{len(fields or {})} field(s)", n)
                return result, fields
            if isinstance(result, NeedsHuman):
                self.note("needs_human", w.name, f"{result.reason}; not retried", n)
                return result, None
            event: TraceEvent = "timed_out" if result.reason_code == "timeout" else "failed"
            refused = "not retryable" if not result.retryable else self._take_retry(w.name)
            what = f"{result.reason_code}: {result.message}"
            if refused is not None:
                self.note(event, w.name, f"{what}; not retried: {refused}", n)
                return result, None
            share, d = self.shares[w.name], self.d
            delay = min(d.backoff_max_s, d.backoff_initial_s * 2 ** (share - 1))
            spent = (
                f"{self.retries_used} of {d.retries} (own share {share} of {d.retries_per_worker})"
            )
            self.note(event, w.name, what, n)
            self.note("retried", w.name, f"budget used {spent}; backoff {delay:.2f} s", n)
            await d.clock.sleep(delay)

    def _take_retry(self, name: str) -> str | None:
        """Spend one retry from the run's budget, or say why there is none."""
        d = self.d
        if self.retries_used >= d.retries:
            return f"the run's retry budget is spent ({self.retries_used} of {d.retries})"
        if self.shares[name] >= d.retries_per_worker:
            return f"{name}'s share is spent ({self.shares[name]} of {d.retries_per_worker})"
        self.retries_used += 1
        self.shares[name] += 1
        return None


async def _call_once(w: Worker[Any], task: object) -> tuple[WorkerResult, dict[str, Any] | None]:
    """One call, turned into a typed result whatever the worker does."""
    scope = asyncio.timeout(w.timeout_s)
    try:
        async with scope:
            raw: object = await w.fn(task)
    except TimeoutError as exc:
        if scope.expired():
            return Failure("timeout", f"no answer within {w.timeout_s} s", retryable=True), None
        return _raised(exc), None
    except Exception as exc:  # a worker's bug or outage must become a value, not escape
        return _raised(exc), None
    return _check(w, raw)


def _raised(exc: Exception) -> Failure:
    # Transient by nature (as in seamline.tools); any other exception is a bug to fix first.
    transient = isinstance(exc, ConnectionError | TimeoutError)
    return Failure("worker_raised", f"{type(exc).__name__}: {exc}", retryable=transient)


def _check(w: Worker[Any], raw: object) -> tuple[WorkerResult, dict[str, Any] | None]:
    expected = "a worker must return Success, Failure or NeedsHuman"
    if isinstance(raw, Failure):
        if isinstance(raw.reason_code, str) and isinstance(raw.retryable, bool):
            return raw, None
        return Failure("invalid_result", f"malformed {raw!r}; {expected}", False), None
    if isinstance(raw, NeedsHuman):
        return raw, None
    if not isinstance(raw, Success):
        return Failure("invalid_result", f"got {type(raw).__name__}; {expected}", False), None
    value: object = raw.value
    if w.output is not None:
        try:
            value = w.output.model_validate(value)
        except pydantic.ValidationError as exc:
            e = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in e["loc"]) or "value"
            why = f"value does not fit {w.output.__name__}: {where}: {e['msg']}"
            return Failure("invalid_result", why, False), None
    if isinstance(value, pydantic.BaseModel):
        return Success(value), {f: getattr(value, f) for f in type(value).model_fields}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return Success(value), dict(value)
    why = f"Success({type(value).__name__}): the value must be a mapping of field names or a model"
    return Failure("invalid_result", why, False), None


def _merge(
    values: Mapping[str, Mapping[str, Any]],
    priority: Sequence[str],
    field_priority: Mapping[str, Sequence[str]],
    *,
    fallback: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, str], tuple[FieldConflict, ...]]:
    """Each field from the first worker in its declared order that provided it (not None);
    ``fallback`` workers (substituted defaults) rank after every real answer, so a default
    only fills a gap. Pure: the same values and declaration always give the same output, its
    fields in the order first met walking the workers in global priority order."""
    names: dict[str, None] = {}
    for worker in priority:
        names.update(dict.fromkeys(values.get(worker, {})))
    merged: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    conflicts: list[FieldConflict] = []
    for name in names:
        first = tuple(field_priority.get(name, ()))
        ranked = sorted(
            first + tuple(w for w in priority if w not in first), key=fallback.__contains__
        )
        offered = [(w, values[w][name]) for w in ranked if values.get(w, {}).get(name) is not None]
        if not offered:
            continue
        (winner, value), rest = offered[0], offered[1:]
        merged[name], provenance[name] = value, winner
        overruled = tuple(w for w, other in rest if other != value)
        if overruled:
            conflicts.append(FieldConflict(name, winner, overruled))
    return merged, provenance, tuple(conflicts)


def render_trace(trace: Sequence[TraceEntry]) -> str:
    """The trace as aligned lines, times relative to the first entry."""
    if not trace:
        return ""
    start = trace[0].at
    width = max(len(e.worker or "-") for e in trace)
    lines = []
    for e in trace:
        at = (e.at - start).total_seconds()
        attempt = f"#{e.attempt}" if e.attempt else ""
        line = f"+{at:6.3f}s  {e.event:<11}  {e.worker or '-':<{width}}  {attempt:<3} {e.detail}"
        lines.append(line.rstrip())
    return "\n".join(lines)
