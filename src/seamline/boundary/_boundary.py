"""The stochastic-deterministic boundary.

A model proposes; deterministic verifiers check; an accepted proposal is committed exactly
once per idempotency key; a rejected one goes back to the model as a typed reject signal.
When attempts run out, the declared route is taken: escalate, fall back, or fail.

Durability sits at the boundary: the attempts (proposals, verdicts, rejects), the accept, the
commit and its ledger row are written in one unit of work when the boundary ends. A crash
before that re-runs the boundary from its input, which is safe because nothing was committed.
An external side effect is the exception: its accept and a pending ledger row are written
*before* it runs (outbox), so a crash after it never leads to a second, different action.

The kill switch is checked in the commit's own transaction (the store commit, or the outbox
row of a side effect): a commit lands before a stop on ``all``, ``kind:<kind>`` or
``run:<run id>`` (or a parent run) or never starts, and a stopped boundary ends as a typed
``Failed`` with reason ``killed``, retryable once the scope is revived. A side effect whose
outbox row was written before the stop is in flight: it is performed and recorded; one found
pending by a later run is performed again only if the scope is alive.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

import pydantic

from seamline import codec
from seamline.boundary._parse import SchemaParser
from seamline.boundary._results import (
    Attempt,
    BoundaryResult,
    Committed,
    EffectCommit,
    Escalate,
    Escalated,
    Fail,
    Failed,
    Fallback,
    ModelFailure,
    StoreCommit,
    _Recorded,
)
from seamline.boundary._verdicts import (
    Accept,
    Reject,
    RejectSignal,
    Verdict,
    Verifier,
    VerifyContext,
)
from seamline.budget import (
    Budget,
    BudgetLedger,
    BudgetStatus,
    CheaperModel,
    EscalateToHuman,
    PriceTable,
    Reservation,
)
from seamline.clock import Clock, SystemClock
from seamline.context import ContextPolicy
from seamline.errors import ConfigError, SeamlineError
from seamline.models import (
    Message,
    Model,
    ModelError,
    ModelRequest,
    ModelResponse,
    Usage,
    prompt_hash,
)
from seamline.store import (
    Applied,
    Duplicate,
    Event,
    Killed,
    NotPending,
    RunRecord,
    RunStatus,
    Store,
    UnitOfWork,
)
from seamline.telemetry import (
    SPAN_BATCH,
    SPAN_MAX_AGE_S,
    current_trace_id,
    flush_spans,
    provider_name,
    set_error,
    span,
    tracing_enabled,
)

__all__ = ["Boundary", "Runtime", "kill_scopes"]

I = TypeVar("I")  # noqa: E741 - the input type
C = TypeVar("C", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class Runtime:
    """What a boundary runs against: the store, the clock and the price table."""

    store: Store
    clock: Clock = field(default_factory=SystemClock)
    prices: PriceTable = field(default_factory=PriceTable)
    _ledgers: dict[str, BudgetLedger] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def ledger(self, budget: Budget) -> BudgetLedger:
        """The one ledger per budget this runtime's boundaries share: it serialises their
        reservations in this process, so only other processes cause CAS retries."""
        found = self._ledgers.get(budget.run_id)
        if found is None or found.budget != budget:
            found = BudgetLedger(self.store, budget, clock=self.clock, prices=self.prices)
            if len(self._ledgers) >= 1024:  # bounded: a long-lived worker sees many budgets
                self._ledgers.pop(next(iter(self._ledgers)))
            self._ledgers[budget.run_id] = found
        return found


class _BudgetStop(Exception):
    """The budget ended the boundary before a model call (its route, or a refused
    reservation); ``result`` is how it ended."""

    def __init__(self, result: BoundaryResult) -> None:
        super().__init__(result.kind)
        self.result = result


def _clean(text: str, limit: int = 1024 * 1024) -> str:
    """Raw output as recorded: lone surrogates (which no database stores) made visible, and
    cut to ``limit`` characters. The boundary passes a limit just above its parser's size
    limit, so a cut output was rejected as too large and replays as too large again."""
    if len(text) > limit:
        text = text[:limit] + f"…[cut: {len(text):,} characters in all]"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def kill_scopes(kind: str, run_id: str) -> tuple[str, ...]:
    """The kill-switch scopes a boundary's commit checks: everything, its workflow kind, its
    run and every parent of a sub-run (``a/b`` stops with ``run:a`` too)."""
    parts = run_id.split("/")
    runs = (f"run:{'/'.join(parts[: n + 1])}" for n in range(len(parts)))
    return tuple(dict.fromkeys(("all", f"kind:{kind}", *runs)))


def default_input_key(value: object) -> str:
    return hashlib.sha256(codec.encode(value).encode("utf-8")).hexdigest()[:24]


class Boundary(Generic[I, C]):
    """One action class's boundary, declared once and run per input.

    ``prompt`` builds the messages for an input; ``output`` is the pydantic model a proposal
    must parse into; ``verifiers`` run in order and the first reject ends the attempt;
    ``commit`` is a :class:`StoreCommit` or :class:`EffectCommit`; ``attempts`` bounds the
    proposals; ``on_exhausted`` says what happens when they run out. ``kind`` is the
    workflow kind its runs are counted under in metrics (default: its name);
    ``context_window`` is the proposer's window in tokens, for the context-utilisation
    metric.
    """

    def __init__(
        self,
        name: str,
        *,
        model: Model,
        prompt: Callable[[I], Sequence[Message]],
        output: type[C],
        commit: StoreCommit[C, I] | EffectCommit[C, I],
        verifiers: Sequence[Verifier[C]] = (),
        attempts: int = 3,
        on_exhausted: Escalate | Fallback[C, I] | Fail | None = None,
        input_key: Callable[[I], str] = default_input_key,
        untrusted: Callable[[I], Mapping[str, str]] | None = None,
        tenant: Callable[[I], str | None] | None = None,
        tool: str | None = None,
        max_output_bytes: int = 64 * 1024,
        context: ContextPolicy | None = None,
        review_sample_rate: float = 0.1,
        kind: str | None = None,
        context_window: int = 128_000,
    ) -> None:
        if not name or ":" in name:
            raise ConfigError(f"boundary name must be non-empty and free of ':', got {name!r}")
        if not 1 <= attempts <= 50:
            raise ConfigError(f"boundary {name}: attempts must be 1..50, got {attempts}")
        if not 0.0 <= review_sample_rate <= 1.0:
            raise ConfigError(f"boundary {name}: review_sample_rate must be in [0, 1]")
        if context_window < 1:
            raise ConfigError(f"boundary {name}: context_window must be >= 1 token")
        self.name = name
        self.model = model
        self.output = output
        self.verifiers = tuple(verifiers)
        self.commit = commit
        self.attempts = attempts
        self.on_exhausted: Escalate | Fallback[C, I] | Fail = on_exhausted or Fail()
        self._prompt = prompt
        self._input_key = input_key
        self._untrusted = untrusted
        self._tenant = tenant
        self._parser = SchemaParser(output, max_bytes=max_output_bytes, tool=tool)
        self._record_limit = max_output_bytes + 1024
        self._schema = output.model_json_schema()
        self._context = context
        self._review_rate = review_sample_rate
        self.kind = kind or name
        self.context_window = context_window

    def __repr__(self) -> str:
        return f"Boundary({self.name!r}, model={self.model.name}, attempts={self.attempts})"

    def key_for(self, input: I, run_id: str) -> str:
        """The default idempotency key: run id + boundary name + the input's identity."""
        return f"{run_id}:{self.name}:{self._input_key(input)}"

    def stream_for(self, key: str) -> str:
        return f"sdb:{self.name}:{key}"

    def run_sync(self, input: I, **kwargs: Any) -> BoundaryResult:
        """Blocking form of :meth:`run`, for scripts; not for use inside an event loop."""
        return asyncio.run(self.run(input, **kwargs))

    async def run(
        self,
        input: I,
        *,
        runtime: Runtime,
        run_id: str,
        key: str | None = None,
        budget: Budget | None = None,
    ) -> BoundaryResult:
        key = key or self.key_for(input, run_id)
        run = _Run(self, runtime, input, run_id, key, budget)
        attributes = {
            "seamline.run_id": run_id,
            "seamline.boundary": self.name,
            "seamline.kind": self.kind,
            "seamline.key": key,
        }
        with span(f"invoke_agent {self.name}", attributes) as current:
            result = await run.go()
            current.set_attribute("seamline.outcome", result.kind)
            if isinstance(result, Failed):
                current.set_attribute("seamline.reason_code", result.reason_code)
                set_error(current, f"{result.reason_code}: {result.message}")
            elif isinstance(result, Committed):
                current.set_attribute("seamline.replayed", result.replayed)
        # after the run span ended, so the run's own span is kept with its children; in
        # batches, so a busy process does not wait on a durable write per run
        await flush_spans(runtime.store, at_least=SPAN_BATCH, older_than_s=SPAN_MAX_AGE_S)
        return result


class _Run(Generic[I, C]):
    """One execution of a boundary for one input; discarded afterwards."""

    def __init__(
        self, b: Boundary[I, C], rt: Runtime, input: I, run_id: str, key: str, budget: Budget | None
    ) -> None:
        self.b, self.rt, self.input, self.run_id, self.key = b, rt, input, run_id, key
        self.budget = budget
        # A shared budget goes through the store-backed ledger call by call; an exclusive one
        # (one spender at a time) is read from the usage ledger plus this run's own spend.
        self.ledger = rt.ledger(budget) if budget is not None and budget.shared else None
        self.spent = Usage()
        self.spent_cost = Decimal(0)
        self.stream = b.stream_for(key)
        self.store = rt.store
        self.attempts: list[Attempt] = []
        self.extra_events: list[tuple[str, object, str]] = []
        self.model: Model = b.model
        self.input_id = b._input_key(input)
        self.started_at = rt.clock.now()
        self.started = time.monotonic()

    # --- the flow -------------------------------------------------------------------------

    async def go(self) -> BoundaryResult:
        self.rt.prices.price(self.model.name)  # an unpriced model fails before any call
        recorded = _read_recorded(await self.store.read_stream(self.stream), self.b, self.key)
        if recorded.end is not None:
            return recorded.end
        if recorded.pending_effect and recorded.accepted_json is not None:
            recorded_candidate = self.b.output.model_validate_json(recorded.accepted_json)
            return await self._perform(
                recorded_candidate, recorded.via, recorded.flags, resumed=True
            )
        first = recorded.next_attempt
        messages = list(self.b._prompt(self.input))
        for number in range(first, first + self.b.attempts):
            try:
                attempt, candidate = await self._attempt(number, messages)
            except _BudgetStop as stop:
                return stop.result
            self.attempts.append(attempt)
            if candidate is not None:
                flags = _flags(attempt.verdicts)
                return await self._commit(candidate, attempt, "model", flags)
            if attempt.failure is not None:
                if not attempt.failure.retryable:
                    break
                continue
            if attempt.response is not None:
                messages.append(Message("assistant", _clean(attempt.response.text)))
            signal = RejectSignal(self.b.name, number, attempt.rejects)
            messages.append(signal.as_message())
            if not signal.retry_can_help:
                break
            messages = await self._manage_context(messages, number)
        return await self._exhausted(first + len(self.attempts))

    async def _attempt(self, number: int, messages: list[Message]) -> tuple[Attempt, C | None]:
        request = ModelRequest(
            messages=tuple(messages),
            json_schema=self.b._schema,
            schema_name=self.b.output.__name__,
            metadata={"boundary": self.b.name, "input": self.input_id, "attempt": str(number)},
        )
        phash = prompt_hash(request)
        held = await self._reserve(request)
        try:
            response = await self._call_model(request, number)
        except ModelError as exc:
            if held is not None and self.ledger is not None:
                await self.ledger.release(held)
            failure = ModelFailure(exc.code, str(exc), exc.retryable)
            return Attempt(number, phash, None, failure), None
        except BaseException:
            if held is not None and self.ledger is not None:
                await asyncio.shield(self.ledger.release(held))
            raise
        if held is not None and self.ledger is not None:
            # Charged now, in its own unit: a crash before the boundary ends still counts it.
            await self.ledger.charge(held, response)
        elif self.budget is not None:  # exclusive: written with the boundary's ending
            self.spent = Usage(
                self.spent.prompt_tokens + response.usage.prompt_tokens,
                self.spent.completion_tokens + response.usage.completion_tokens,
            )
            self.spent_cost += self.rt.prices.cost(response.model, response.usage)
        parsed = self.b._parser.parse(response)
        if isinstance(parsed, Reject):
            _verdict_span(parsed, number)
            return Attempt(number, phash, response, verdicts=(parsed,)), None
        verdicts = self._verify(parsed, number)
        candidate_json = codec.encode(parsed)
        attempt = Attempt(
            number,
            phash,
            response,
            candidate_json=candidate_json,
            verdicts=(Accept(self.b._parser.name), *verdicts),
        )
        return attempt, (parsed if attempt.status == "accepted" else None)

    async def _call_model(self, request: ModelRequest, number: int) -> ModelResponse:
        """One model call, traced as a GenAI ``chat`` span."""
        model = self.model
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_name(model),
            "gen_ai.request.model": model.name,
            "seamline.attempt": number,
        }
        with span(f"chat {model.name}", attributes) as current:
            try:
                response = await model.complete(request)
            except ModelError as exc:
                current.set_attribute("error.type", exc.code)
                set_error(current, f"{exc.code}: {exc}")
                raise
            if current.is_recording():
                current.set_attributes(
                    {
                        "gen_ai.response.model": response.model,
                        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
                        "gen_ai.usage.output_tokens": response.usage.completion_tokens,
                        "gen_ai.response.finish_reasons": (response.finish_reason or "stop",),
                        "seamline.latency_ms": round(response.latency_ms, 3),
                        "seamline.simulated": response.simulated,
                    }
                )
            return response

    def _verify(self, candidate: C, number: int) -> list[Verdict]:
        ctx = VerifyContext(
            boundary=self.b.name,
            run_id=self.run_id,
            input=self.input,
            attempt=number,
            now=self.rt.clock.now(),
            tenant=self.b._tenant(self.input) if self.b._tenant else None,
            untrusted=self.b._untrusted(self.input) if self.b._untrusted else {},
        )
        verdicts: list[Verdict] = []
        for verifier in self.b.verifiers:
            try:
                verdict = verifier.verify(candidate, ctx)
            except Exception as exc:  # a verifier that breaks must not let a candidate through
                verdict = Reject(
                    verifier.name,
                    f"{verifier.name}.error",
                    "verifier_error",
                    f"verifier raised {type(exc).__name__}: {exc}",
                    "the verifier is broken; the candidate was not accepted",
                    retryable=False,
                )
            verdicts.append(verdict)
            _verdict_span(verdict, number)
            if isinstance(verdict, Reject):
                break
        return verdicts

    async def _reserve(self, request: ModelRequest) -> Reservation | None:
        """The budget gate in front of a model call, and its reservation, in one step: the
        level before this call decides the route (as a gate would); a refused reservation
        (the cap is spent or held) ends the boundary."""
        if self.budget is None:
            return None
        if self.ledger is None:  # exclusive: no other spender, nothing to reserve
            totals = await self.store.usage_totals(self.budget.run_id, include_children=True)
            status = self.budget.check(
                totals.total_tokens + self.spent.total_tokens, totals.cost + self.spent_cost
            )
            stop = await self._budget_route(status) if status.level != "ok" else None
            if stop is not None:
                raise _BudgetStop(stop)
            return None
        held = await self.ledger.reserve(
            model=self.model.name, estimate=self.budget.estimate(request), run_id=self.run_id
        )
        status = held if isinstance(held, BudgetStatus) else held.before
        stop = await self._budget_route(status) if status.level != "ok" else None
        if stop is None and isinstance(held, BudgetStatus):
            why = (
                f"budget {held.level}: {held.share:.0%} of the cap for run "
                f"{self.budget.run_id} is spent or held"
            )
            stop = await self._end_failed("budget_exhausted", why, retryable=False)
        if stop is not None:
            if isinstance(held, Reservation):
                await self.ledger.release(held)
            raise _BudgetStop(stop)
        return held if isinstance(held, Reservation) else None

    async def _budget_route(self, status: BudgetStatus) -> BoundaryResult | None:
        """At the alert line or the cap: record it once, then take the declared route (None:
        go on, e.g. with the cheaper model)."""
        assert self.budget is not None
        await self._once(
            f"{self.budget.run_id}:budget_{status.level}",
            f"budget:{self.budget.run_id}",
            f"budget_{status.level}",
            {
                "share": round(status.share, 4),
                "tokens": status.spent_tokens,
                "cost": status.spent_cost,
                "route": self.budget.on_alert.kind,
            },
        )
        route = self.budget.on_alert
        if status.level == "alert" and isinstance(route, CheaperModel):
            if self.model is not route.model:
                self.rt.prices.price(route.model.name)
                self.model = route.model
            return None
        why = (
            f"budget {status.level}: {status.share:.0%} of the cap for run "
            f"{self.budget.run_id} is spent"
        )
        if isinstance(route, EscalateToHuman):
            return await self._escalate(
                Escalate(decision=f"{why}; decide whether to continue"), reason=why
            )
        return await self._end_failed("budget_" + status.level, why, retryable=False)

    async def _once(self, idem: str, stream: str, type: str, payload: object) -> None:
        await self.store.apply(
            UnitOfWork().append_event(stream, type, payload, idempotency_key=idem)
        )

    async def _manage_context(self, messages: list[Message], number: int) -> list[Message]:
        policy = self.b._context
        if policy is None or not policy.needs_summary(messages):
            return messages
        compacted, record = await policy.compact(messages)
        self.extra_events.append(
            ("context_summarised", {"attempt": number, **record}, f"{self.key}:context:{number}")
        )
        return compacted

    # --- endings --------------------------------------------------------------------------

    def _record(self, status: RunStatus, reason: str | None) -> RunRecord:
        """This instance's row in the runs table, for the ending being written. Spend and
        rejects are this run's; ``attempts`` counts every attempt the instance has made."""
        responses = [a.response for a in self.attempts if a.response is not None]
        prompt = sum(r.usage.prompt_tokens for r in responses)
        completion = sum(r.usage.completion_tokens for r in responses)
        widest = max((r.usage.prompt_tokens for r in responses), default=None)
        return RunRecord(
            id=self.key,
            run_id=self.run_id,
            boundary=self.b.name,
            kind=self.b.kind,
            status=status,
            reason=reason,
            attempts=self.attempts[-1].number if self.attempts else 0,
            rejects=sum(a.status == "rejected" for a in self.attempts),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=sum((self.rt.prices.cost(r.model, r.usage) for r in responses), Decimal(0)),
            context_utilisation=None if widest is None else widest / self.b.context_window,
            started_at=self.started_at,
            ended_at=self.rt.clock.now(),
            latency_ms=(time.monotonic() - self.started) * 1000,
            trace_id=current_trace_id(),
        )

    def _unit(self, *, alive: bool = False) -> UnitOfWork:
        """Every attempt's events and usage, ready for the ending's own writes. ``alive``: the
        unit commits only if no kill-switch scope of this run is stopped (checked first)."""
        unit = UnitOfWork()
        if alive:
            unit.require_alive(*kill_scopes(self.b.kind, self.run_id))
        for a in self.attempts:
            if a.response is not None:
                r = a.response
                unit.append_event(
                    self.stream,
                    "proposed",
                    {
                        "attempt": a.number,
                        "raw": _clean(r.text, self.b._record_limit),
                        "tool_calls": [[c.id, c.name, _clean(c.arguments)] for c in r.tool_calls],
                        "model": r.model,
                        "usage": [r.usage.prompt_tokens, r.usage.completion_tokens],
                        "latency_ms": round(r.latency_ms, 3),
                        "simulated": r.simulated,
                        "finish_reason": r.finish_reason,
                    },
                    model_version=r.model_version,
                    prompt_hash=a.prompt_hash,
                    idempotency_key=f"{self.key}:proposed:{a.number}",
                )
                if self.ledger is None:  # a shared budget's ledger charged it already
                    unit.record_usage(
                        run_id=self.run_id,
                        model=r.model,
                        prompt_tokens=r.usage.prompt_tokens,
                        completion_tokens=r.usage.completion_tokens,
                        cost=self.rt.prices.cost(r.model, r.usage),
                        latency_ms=r.latency_ms,
                    )
            if a.failure is not None:
                unit.append_event(
                    self.stream,
                    "model_failed",
                    {
                        "attempt": a.number,
                        "code": a.failure.code,
                        "message": a.failure.message,
                        "retryable": a.failure.retryable,
                        "model": self.model.name,
                    },
                    prompt_hash=a.prompt_hash,
                    idempotency_key=f"{self.key}:model_failed:{a.number}",
                )
            elif a.status == "rejected":
                signal = RejectSignal(self.b.name, a.number, a.rejects)
                unit.append_event(
                    self.stream,
                    "rejected",
                    signal.as_payload(),
                    idempotency_key=f"{self.key}:rejected:{a.number}",
                )
        for type, payload, idem in self.extra_events:
            unit.append_event(self.stream, type, payload, idempotency_key=idem)
        return unit

    def _accept_events(
        self,
        unit: UnitOfWork,
        candidate: C,
        attempt: Attempt | None,
        via: str,
        flags: tuple[str, ...],
    ) -> None:
        verdicts = attempt.verdicts if attempt else ()
        policy_versions = sorted({v.policy_version for v in verdicts if v.policy_version})
        unit.append_event(
            self.stream,
            "accepted",
            {
                "attempt": attempt.number if attempt else None,
                "candidate": candidate,
                "verdicts": [v.verifier for v in verdicts],
                "flags": list(flags),
                "via": via,
                "policy_versions": policy_versions,
            },
            model_version=attempt.response.model_version if attempt and attempt.response else None,
            prompt_hash=attempt.prompt_hash if attempt else None,
            idempotency_key=f"{self.key}:accepted",
        )
        unit.audit(
            actor=f"boundary:{self.b.name}",
            action="accept",
            subject=self.key,
            decision="accept",
            reason=f"all {len(verdicts)} verifiers accepted",
            policy_version=",".join(policy_versions) or None,
            details={"flags": list(flags), "via": via},
        )
        if flags and _sampled(self.key, self.b._review_rate):
            unit.append_event(
                self.stream,
                "review_sampled",
                {"flags": list(flags)},
                idempotency_key=f"{self.key}:review",
            )

    async def _commit(
        self, candidate: C, attempt: Attempt | None, via: str, flags: tuple[str, ...]
    ) -> BoundaryResult:
        attributes = {"seamline.commit.kind": self.b.commit.kind, "seamline.via": via}
        with span(f"commit {self.b.name}", attributes) as current:
            result = await self._commit_untraced(candidate, attempt, via, flags)
            current.set_attribute("seamline.outcome", result.kind)
            return result

    async def _commit_untraced(
        self, candidate: C, attempt: Attempt | None, via: str, flags: tuple[str, ...]
    ) -> BoundaryResult:
        unit = self._unit(alive=True)
        self._accept_events(unit, candidate, attempt, via, flags)
        commit = self.b.commit
        if isinstance(commit, EffectCommit):
            unit.commit_intent(self.key, run_id=self.run_id, boundary=self.b.name)
            outcome = await self.store.apply(unit)
            if isinstance(outcome, Killed):
                return await self._end_killed(outcome)
            if not isinstance(outcome, Applied):
                return await self._after_race()
            return await self._perform(candidate, via, flags, resumed=False)
        result = commit.write(candidate, self.input, unit)
        unit.record_run(self._record("committed", None))
        unit.record_commit(self.key, result, run_id=self.run_id, boundary=self.b.name)
        unit.append_event(
            self.stream,
            "committed",
            {"result": result, "via": via},
            idempotency_key=f"{self.key}:committed",
        )
        outcome = await self.store.apply(unit)
        if isinstance(outcome, Applied):
            return Committed(
                self.b.name,
                self.key,
                codec.decode(codec.encode(result)),
                tuple(self.attempts),
                via=_via(via),
                flags=flags,
            )
        if isinstance(outcome, Killed):
            return await self._end_killed(outcome)
        if isinstance(outcome, Duplicate) and outcome.what == "commit":
            return await self._after_race()
        # The commit's own writes conflicted (e.g. a CAS on a row that moved): nothing of it
        # happened. Record the attempts and end; a caller re-reads and runs again.
        return await self._end_failed(
            "commit_conflict", f"the commit's writes conflicted: {outcome}", retryable=True
        )

    async def _perform(
        self, candidate: C, via: str, flags: tuple[str, ...], *, resumed: bool
    ) -> BoundaryResult:
        """Perform the recorded side effect. ``resumed``: its outbox row was found pending, so
        it is called again only if the run's scopes are alive now (the check is a transaction
        of its own: the call itself cannot be inside one)."""
        commit = self.b.commit
        assert isinstance(commit, EffectCommit)
        if resumed:
            alive = await self.store.apply(
                UnitOfWork().require_alive(*kill_scopes(self.b.kind, self.run_id))
            )
            if isinstance(alive, Killed):
                return await self._end_killed(alive)
        try:
            result = await commit.perform(candidate, self.input, self.key)
            result_json = codec.decode(codec.encode(result))
        except Exception as exc:  # the effect broke: a tool failure, the intent stays pending
            n = len(await self.store.read_stream(self.stream))
            await self._once(
                f"{self.key}:effect_failed:{n}",
                self.stream,
                "effect_failed",
                {"error": f"{type(exc).__name__}: {exc}"},
            )
            return Failed(
                self.b.name,
                self.key,
                "effect_failed",
                f"the side effect raised {type(exc).__name__}: {exc}; it will be "
                "performed again with the same idempotency key on the next run",
                retryable=True,
                attempts=tuple(self.attempts),
            )
        outcome = await self.store.apply(
            UnitOfWork()
            .record_run(self._record("committed", None))
            .complete_commit(self.key, result_json)
            .append_event(
                self.stream,
                "committed",
                {"result": result_json, "via": via},
                idempotency_key=f"{self.key}:committed",
            )
        )
        if isinstance(outcome, NotPending):
            return await self._after_race()
        return Committed(
            self.b.name, self.key, result_json, tuple(self.attempts), via=_via(via), flags=flags
        )

    async def _after_race(self) -> BoundaryResult:
        """Another run of the same key recorded first: report what it recorded."""
        recorded = _read_recorded(await self.store.read_stream(self.stream), self.b, self.key)
        if recorded.end is not None:
            return recorded.end
        stored = await self.store.get_commit(self.key)
        if recorded.pending_effect and recorded.accepted_json is not None:
            candidate = self.b.output.model_validate_json(recorded.accepted_json)
            return await self._perform(candidate, recorded.via, recorded.flags, resumed=True)
        raise SeamlineError(
            f"boundary {self.b.name} key {self.key}: the store refused the ending as a duplicate "
            f"but records no ending (commit ledger: {stored}); inspect stream {self.stream}"
        )

    async def _exhausted(self, next_attempt: int) -> BoundaryResult:
        route = self.b.on_exhausted
        if isinstance(route, Escalate):
            return await self._escalate(route, reason=self._why_exhausted())
        if isinstance(route, Fallback):
            candidate = route.produce(self.input)
            verdicts = self._verify(candidate, next_attempt)
            if all(isinstance(v, Accept) for v in verdicts):
                fake = Attempt(
                    next_attempt,
                    "fallback",
                    None,
                    candidate_json=codec.encode(candidate),
                    verdicts=tuple(verdicts),
                )
                return await self._commit(candidate, fake, "fallback", _flags(verdicts))
            rejects = "; ".join(v.message for v in verdicts if isinstance(v, Reject))
            return await self._end_failed(
                "fallback_rejected",
                f"the fallback candidate was rejected: {rejects}",
                retryable=False,
            )
        last = self.attempts[-1] if self.attempts else None
        retryable = bool(last and last.failure and last.failure.retryable)
        return await self._end_failed("attempts_exhausted", self._why_exhausted(), retryable)

    def _why_exhausted(self) -> str:
        codes = [r.reason_code for a in self.attempts for r in a.rejects]
        codes += [a.failure.code for a in self.attempts if a.failure]
        return (
            f"{len(self.attempts)} attempt(s) without an accepted proposal "
            f"({', '.join(codes) or 'no attempts'})"
        )

    async def _escalate(self, route: Escalate, *, reason: str) -> BoundaryResult:
        approval_id = f"esc:{self.key}"
        tried = [
            {
                "attempt": a.number,
                "status": a.status,
                "candidate": codec.decode(a.candidate_json) if a.candidate_json else None,
                "raw": _clean(a.response.text)[:2000] if a.response else None,
                "rejects": [
                    {"reason_code": r.reason_code, "field": r.field, "message": r.message}
                    for r in a.rejects
                ],
                "failure": a.failure.code if a.failure else None,
            }
            for a in self.attempts
        ]
        request = {
            "boundary": self.b.name,
            "run_id": self.run_id,
            "input": self.input,
            "tried": tried,
            "decision_needed": route.decision,
            "options": [{"option": o, "expected_impact": _impact(o)} for o in route.options],
        }
        unit = self._unit()
        unit.open_approval(
            id=approval_id,
            kind="escalation",
            reason=reason,
            request=request,
            requested_by=f"boundary:{self.b.name}",
            run_id=self.run_id,
            due_at=self.rt.clock.now() + route.sla if route.sla else None,
        )
        unit.record_run(self._record("escalated", reason))
        unit.append_event(
            self.stream,
            "escalated",
            {"approval_id": approval_id, "reason": reason},
            idempotency_key=f"{self.key}:escalated",
        )
        outcome = await self.store.apply(unit)
        if not isinstance(outcome, Applied):
            return await self._after_race()
        return Escalated(self.b.name, self.key, approval_id, reason, tuple(self.attempts))

    async def _end_killed(self, killed: Killed) -> BoundaryResult:
        """The kill switch refused the commit: nothing of it was written. Record the attempts
        and a retryable ending (a run after the revive carries on), and say who stopped what."""
        message = (
            f"{killed.scope} was stopped by {killed.killed_by} ({killed.reason}); nothing was "
            "committed. Run the boundary again once the scope is revived."
        )
        unit = self._unit()
        n = self.attempts[-1].number if self.attempts else 0
        unit.record_run(self._record("failed", "killed"))
        unit.append_event(
            self.stream,
            "failed",
            {
                "reason_code": "killed",
                "message": message,
                "retryable": True,
                "last_attempt": n,
                "scope": killed.scope,
            },
            idempotency_key=f"{self.key}:killed:{n}",
        )
        # A Duplicate here is a second stopped run of a pending effect: already recorded.
        await self.store.apply(unit)
        return Failed(self.b.name, self.key, "killed", message, True, tuple(self.attempts))

    async def _end_failed(self, code: str, message: str, retryable: bool) -> BoundaryResult:
        unit = self._unit()
        n = self.attempts[-1].number if self.attempts else 0
        unit.record_run(self._record("failed", code))
        unit.append_event(
            self.stream,
            "failed",
            {"reason_code": code, "message": message, "retryable": retryable, "last_attempt": n},
            idempotency_key=f"{self.key}:failed:{n}",
        )
        outcome = await self.store.apply(unit)
        if not isinstance(outcome, Applied):
            return await self._after_race()
        return Failed(self.b.name, self.key, code, message, retryable, tuple(self.attempts))


_IMPACTS = {
    "approve an edited proposal": "the edited action is verified and committed once",
    "reject": "nothing is committed; the workflow takes its no-action path",
    "take over manually": "the agent stops; a person acts outside seamline",
}


def _impact(option: str) -> str:
    return _IMPACTS.get(option, "as described by the option")


def _via(via: str) -> Any:
    return "fallback" if via == "fallback" else "model"


def _verdict_span(verdict: Verdict, attempt: int) -> None:
    """A verdict is instant and already decided: its span records what was decided."""
    if not tracing_enabled():
        return
    if isinstance(verdict, Reject):
        attributes = {
            "seamline.verdict": "reject",
            "seamline.verifier": verdict.verifier,
            "seamline.reason_code": verdict.reason_code,
            "seamline.rule": verdict.rule_id,
            "seamline.policy_version": verdict.policy_version,
            "seamline.attempt": attempt,
        }
    else:
        attributes = {
            "seamline.verdict": "accept",
            "seamline.verifier": verdict.verifier,
            "seamline.policy_version": verdict.policy_version,
            "seamline.attempt": attempt,
        }
    with span(f"verify {verdict.verifier}", attributes):
        pass


def _flags(verdicts: Sequence[Verdict]) -> tuple[str, ...]:
    return tuple(f for v in verdicts if isinstance(v, Accept) for f in v.flags)


def _sampled(key: str, rate: float) -> bool:
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    return digest / 2**32 < rate


def _read_recorded(events: Sequence[Event], b: Boundary[Any, Any], key: str) -> _Recorded:
    """Rebuild what earlier runs of this instance recorded (usually nothing)."""
    if not events:
        return _Recorded()
    last_attempt = 0
    accepted_json: str | None = None
    via: Any = "model"
    flags: tuple[str, ...] = ()
    end: BoundaryResult | None = None
    for e in events:
        payload = e.payload
        attempt = payload.get("attempt") if isinstance(payload, dict) else None
        if isinstance(attempt, int):
            last_attempt = max(last_attempt, attempt)
        if e.type == "accepted":
            accepted_json = codec.encode(payload["candidate"])
            via, flags = payload.get("via", "model"), tuple(payload.get("flags", ()))
        elif e.type == "committed":
            end = Committed(b.name, key, payload["result"], replayed=True, via=via, flags=flags)
        elif e.type == "escalated":
            end = Escalated(b.name, key, payload["approval_id"], payload["reason"], replayed=True)
        elif e.type == "failed":
            last_attempt = max(last_attempt, int(payload.get("last_attempt") or 0))
            end = (
                None
                if payload["retryable"]
                else Failed(
                    b.name, key, payload["reason_code"], payload["message"], False, replayed=True
                )
            )
    pending = accepted_json is not None and end is None
    return _Recorded(
        end=end,
        accepted_json=accepted_json,
        pending_effect=pending,
        next_attempt=last_attempt + 1,
        via=via,
        flags=flags,
    )
