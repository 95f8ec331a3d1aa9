"""Hardened tools: validated, rate-limited, retried, timed out and circuit-broken calls that
return a structured error instead of raising into the agent.

A tool failure ("the tool broke, retrying may help") is a different thing from a policy
rejection ("the boundary says no"): a :class:`ToolError` carries a code, whether a retry can
help, and how many attempts were made, and it can be shown to a model as it is.

Only failures marked retryable are retried (``retry_on``: timeouts and connection errors by
default, and :class:`RetryableToolError`), with exponential backoff and jitter from tenacity.
Rate limits are token buckets: :class:`TokenBucket` in one process, or
:class:`StoreTokenBucket` shared by every process on a store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import pydantic
import tenacity

from seamline import codec
from seamline.errors import ConfigError
from seamline.store import Store, Throttled, UnitOfWork
from seamline.telemetry import set_error, span

__all__ = [
    "CircuitBreaker",
    "HardenedTool",
    "RateLimiter",
    "RetryableToolError",
    "StoreTokenBucket",
    "TokenBucket",
    "ToolError",
    "ToolOk",
]

A = TypeVar("A", bound=pydantic.BaseModel)
R = TypeVar("R")

ToolErrorCode = Literal[
    "invalid_input", "invalid_output", "timeout", "rate_limited", "circuit_open", "failed"
]


class RetryableToolError(Exception):
    """Raise from a tool function to say the failure is transient and a retry may succeed."""


@dataclass(frozen=True, slots=True)
class ToolOk(Generic[R]):
    tool: str
    value: R
    attempts: int
    latency_ms: float
    kind: Literal["ok"] = "ok"


@dataclass(frozen=True, slots=True)
class ToolError:
    """A structured tool failure a model (or a worker) can reason about."""

    tool: str
    code: ToolErrorCode
    message: str
    retryable: bool
    attempts: int
    kind: Literal["tool_error"] = "tool_error"

    def as_payload(self) -> dict[str, Any]:
        return {
            "status": "tool_error",
            "tool": self.tool,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "attempts": self.attempts,
        }


class RateLimiter(Protocol):
    async def acquire(self, name: str) -> float:
        """Take one token; return 0 on success or the seconds to wait before one is free."""
        ...


class TokenBucket:
    """An in-process token bucket: ``rate_per_s`` tokens a second, at most ``burst`` saved."""

    def __init__(
        self, *, rate_per_s: float, burst: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ConfigError(
                f"token bucket needs rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}"
            )
        self.rate, self.burst, self._now = rate_per_s, burst, now
        self._tokens, self._at = burst, now()

    async def acquire(self, name: str) -> float:
        now = self._now()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


_MIN_WAIT_S = 1e-6


class StoreTokenBucket:
    """A token bucket kept in the store, so the limit holds across processes and machines."""

    def __init__(
        self, store: Store, *, rate_per_s: float, burst: float, prefix: str = "tool:"
    ) -> None:
        self.store, self.rate, self.burst, self.prefix = store, rate_per_s, burst, prefix

    async def acquire(self, name: str) -> float:
        outcome = await self.store.apply(
            UnitOfWork().take_tokens(self.prefix + name, rate_per_s=self.rate, burst=self.burst)
        )
        if isinstance(outcome, Throttled):
            # The store rounds the wait to the microsecond, so a bucket a hair short of a token
            # says 0.0; a refusal must never read as a grant.
            return max(outcome.retry_after_s, _MIN_WAIT_S)
        return 0.0


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_after_s`` lets one trial
    call through (half-open); a success closes it, a failure opens it again."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_after_s: float = 30.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or reset_after_s <= 0:
            raise ConfigError("circuit breaker needs threshold >= 1 and reset_after_s > 0")
        self.threshold, self.reset_after_s, self._now = threshold, reset_after_s, now
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._now() - self._opened_at >= self.reset_after_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        return self.state != "open"

    def record(self, ok: bool) -> None:
        if ok:
            self._failures, self._opened_at = 0, None
            return
        self._failures += 1
        if self.state == "half_open" or self._failures >= self.threshold:
            self._opened_at = self._now()


class HardenedTool(Generic[A, R]):
    """Wraps ``fn`` so every call is validated, limited, retried, timed out and broken."""

    def __init__(
        self,
        name: str,
        fn: Callable[[A], Awaitable[R]],
        *,
        input: type[A],
        output: type[R],
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        jitter_s: float = 0.1,
        retry_on: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError),
        rate_limit: RateLimiter | None = None,
        max_rate_wait_s: float = 0.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if attempts < 1 or timeout_s <= 0:
            raise ConfigError(f"tool {name}: attempts >= 1 and timeout_s > 0 required")
        self.name, self._fn = name, fn
        self._input, self._output = pydantic.TypeAdapter(input), pydantic.TypeAdapter(output)
        self.timeout_s, self.attempts = timeout_s, attempts
        self._wait = tenacity.wait_exponential_jitter(
            multiplier=backoff_initial_s, max=backoff_max_s, jitter=jitter_s
        )
        self._retry_on = (*retry_on, RetryableToolError)
        self.rate_limit, self.max_rate_wait_s, self.breaker = rate_limit, max_rate_wait_s, breaker

    def __repr__(self) -> str:
        return f"HardenedTool({self.name!r}, attempts={self.attempts}, timeout={self.timeout_s}s)"

    def _error(
        self, code: ToolErrorCode, message: str, retryable: bool, attempts: int
    ) -> ToolError:
        return ToolError(self.name, code, message, retryable, attempts)

    async def call(self, args: A | Mapping[str, Any]) -> ToolOk[R] | ToolError:
        """Run the tool once (with its retries); never raises for a tool failure."""
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": self.name}
        with span(f"execute_tool {self.name}", attributes) as current:
            result = await self._call(args)
            if isinstance(result, ToolError):
                current.set_attribute("seamline.tool.outcome", result.code)
                current.set_attribute("seamline.tool.attempts", result.attempts)
                set_error(current, f"{result.code}: {result.message}")
            else:
                current.set_attribute("seamline.tool.outcome", "ok")
                current.set_attribute("seamline.tool.attempts", result.attempts)
            return result

    async def _call(self, args: A | Mapping[str, Any]) -> ToolOk[R] | ToolError:
        try:
            parsed: A = self._input.validate_python(args)
        except pydantic.ValidationError as exc:
            return self._error("invalid_input", _first_error(exc), False, 0)
        if self.breaker is not None and not self.breaker.allow():
            return self._error(
                "circuit_open",
                f"{self.name} failed repeatedly; calls are "
                f"paused for up to {self.breaker.reset_after_s:.0f} s",
                True,
                0,
            )
        if self.rate_limit is not None:
            limited = await self._rate_wait()
            if limited is not None:
                return limited
        started = time.perf_counter()
        tries = 0
        try:
            async for attempt in tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(self.attempts),
                wait=self._wait,
                retry=tenacity.retry_if_exception_type(self._retry_on),
                reraise=True,
            ):
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    async with asyncio.timeout(self.timeout_s):
                        raw = await self._fn(parsed)
        except TimeoutError:
            self._record(False)
            return self._error(
                "timeout", f"no answer within {self.timeout_s} s ({tries} attempt(s))", True, tries
            )
        except Exception as exc:  # the tool itself failed; retryable ones already were
            self._record(False)
            retryable = isinstance(exc, self._retry_on)
            return self._error(
                "failed", f"{type(exc).__name__}: {exc} ({tries} attempt(s))", retryable, tries
            )
        try:
            value: R = self._output.validate_python(raw)
        except pydantic.ValidationError as exc:
            self._record(False)
            return self._error("invalid_output", _first_error(exc), False, tries)
        self._record(True)
        return ToolOk(self.name, value, tries, (time.perf_counter() - started) * 1000)

    async def _rate_wait(self) -> ToolError | None:
        assert self.rate_limit is not None
        waited = 0.0
        while True:
            wait = await self.rate_limit.acquire(self.name)
            if wait <= 0:
                return None
            if waited + wait > self.max_rate_wait_s:
                return self._error(
                    "rate_limited",
                    f"rate limit reached; next call possible in {wait:.2f} s",
                    True,
                    0,
                )
            await asyncio.sleep(wait)
            waited += wait

    def _record(self, ok: bool) -> None:
        if self.breaker is not None:
            self.breaker.record(ok)


def _first_error(exc: pydantic.ValidationError) -> str:
    e = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in e["loc"]) or "value"
    return f"{where}: {e['msg']} ({len(exc.errors())} error(s))"


def tool_error_payload(error: ToolError) -> str:
    """The error as canonical JSON, ready to show a model."""
    return codec.encode(error.as_payload())
