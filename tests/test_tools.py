"""Hardened tools: validation, retries only on retryable failures, timeouts, rate limits,
circuit breaking, and structured errors instead of exceptions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pydantic
import pytest

from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.store import SqlStore, Throttled, UnitOfWork
from seamline.tools import (
    CircuitBreaker,
    HardenedTool,
    RetryableToolError,
    StoreTokenBucket,
    TokenBucket,
    ToolError,
    ToolOk,
)


class UsageQuery(pydantic.BaseModel):
    customer: str = pydantic.Field(pattern=r"^\d{4}-[A-Z]{5}$")


class UsageSignal(pydantic.BaseModel):
    gb_per_month: float = pydantic.Field(ge=0)


class Flaky:
    """Fails the first ``failures`` calls with ``error``, then answers ``answer``."""

    def __init__(
        self, failures: int, error: BaseException | None = None, answer: object = None
    ) -> None:
        self.failures, self.error, self.calls = failures, error, 0
        self.answer = answer if answer is not None else {"gb_per_month": 12.5}

    async def __call__(self, query: UsageQuery) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error or ConnectionError("reset by peer")
        return self.answer


def tool(fn: Flaky, **kw: object) -> HardenedTool[UsageQuery, UsageSignal]:
    options: dict[str, object] = {
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.002,
        "jitter_s": 0.001,
        **kw,
    }
    return HardenedTool("usage", fn, input=UsageQuery, output=UsageSignal, **options)  # type: ignore[arg-type]


GOOD = {"customer": "7590-VHVEG"}


async def test_valid_call_returns_typed_value() -> None:
    """A good call returns ToolOk with the validated output."""
    result = await tool(Flaky(0)).call(GOOD)
    assert isinstance(result, ToolOk)
    assert result.value == UsageSignal(gb_per_month=12.5) and result.attempts == 1


async def test_invalid_input_is_refused_before_the_call() -> None:
    """Bad arguments never reach the tool; the error names the field and is not retryable."""
    fn = Flaky(0)
    result = await tool(fn).call({"customer": "'; DROP TABLE users; --"})
    assert isinstance(result, ToolError)
    assert (result.code, result.retryable, fn.calls) == ("invalid_input", False, 0)
    assert "customer" in result.message


async def test_invalid_output_is_caught_after_the_call() -> None:
    """A tool that answers out of contract gives invalid_output, not a bad value."""
    result = await tool(Flaky(0, answer={"gb_per_month": -3})).call(GOOD)
    assert isinstance(result, ToolError) and result.code == "invalid_output"


async def test_retryable_failures_are_retried_then_succeed() -> None:
    """Connection errors are retried with backoff until the tool answers."""
    fn = Flaky(2)
    result = await tool(fn, attempts=3).call(GOOD)
    assert isinstance(result, ToolOk) and result.attempts == 3 and fn.calls == 3


async def test_retries_stop_at_the_attempt_limit() -> None:
    """A tool that keeps failing transiently ends in a retryable error after N attempts."""
    fn = Flaky(10, RetryableToolError("503"))
    result = await tool(fn, attempts=4).call(GOOD)
    assert isinstance(result, ToolError)
    assert (result.code, result.retryable, result.attempts, fn.calls) == ("failed", True, 4, 4)


async def test_non_retryable_failures_are_not_retried() -> None:
    """A programming error inside the tool is reported once, not retried."""
    fn = Flaky(10, KeyError("plan"))
    result = await tool(fn, attempts=5).call(GOOD)
    assert isinstance(result, ToolError)
    assert (result.retryable, fn.calls) == (False, 1)
    assert "KeyError" in result.message


async def test_timeout_is_a_structured_error() -> None:
    """A call slower than the timeout is cut off and reported as a retryable timeout."""

    async def slow(query: UsageQuery) -> object:
        await asyncio.sleep(5)
        return {"gb_per_month": 1}

    t = HardenedTool(
        "slow",
        slow,
        input=UsageQuery,
        output=UsageSignal,
        timeout_s=0.02,
        attempts=2,
        backoff_initial_s=0.001,
        backoff_max_s=0.001,
        jitter_s=0,
    )
    result = await t.call(GOOD)
    assert isinstance(result, ToolError)
    assert (result.code, result.retryable, result.attempts) == ("timeout", True, 2)


async def test_in_process_token_bucket_limits_calls() -> None:
    """Past the burst, calls are refused as rate_limited with the wait in the message."""
    now = [0.0]
    bucket = TokenBucket(rate_per_s=1, burst=2, now=lambda: now[0])
    t = tool(Flaky(0), rate_limit=bucket)
    assert [type(await t.call(GOOD)).__name__ for _ in range(3)] == [
        "ToolOk",
        "ToolOk",
        "ToolError",
    ]
    now[0] += 1.0
    assert isinstance(await t.call(GOOD), ToolOk)


async def test_store_token_bucket_is_shared_between_tools(
    store: SqlStore, clock: VirtualClock
) -> None:
    """Two tool instances (as in two processes) share one limit through the store."""
    first = tool(Flaky(0), rate_limit=StoreTokenBucket(store, rate_per_s=0.1, burst=2))
    second = tool(Flaky(0), rate_limit=StoreTokenBucket(store, rate_per_s=0.1, burst=2))
    results = [await first.call(GOOD), await second.call(GOOD), await second.call(GOOD)]
    assert [r.kind for r in results] == ["ok", "ok", "tool_error"]
    assert isinstance(results[2], ToolError) and results[2].code == "rate_limited"
    clock.advance(timedelta(seconds=10))
    assert isinstance(await first.call(GOOD), ToolOk)


async def test_store_bucket_a_hair_short_of_a_token_refuses_with_a_positive_wait(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A refusal a hair short of a token (0.9999997 refilled) is still a refusal: the store
    reports its wait rounded up, and acquire returns a positive wait, never the 0 that means
    granted."""
    bucket = StoreTokenBucket(store, rate_per_s=1.0, burst=1.3000007)
    assert await bucket.acquire("usage") == 0.0  # leaves 0.3000007 tokens
    clock.advance(timedelta(microseconds=699_999))  # refills to 0.9999997
    direct = await store.apply(
        UnitOfWork().take_tokens("tool:usage", rate_per_s=1.0, burst=1.3000007)
    )
    assert isinstance(direct, Throttled) and 0.0 < direct.retry_after_s <= 1e-6
    wait = await bucket.acquire("usage")
    assert 0.0 < wait <= 1e-6
    clock.advance(timedelta(microseconds=1))
    assert await bucket.acquire("usage") == 0.0


async def test_circuit_opens_after_repeated_failures_and_recovers() -> None:
    """After the threshold the breaker opens and calls fail fast; after the reset a trial
    call goes through and a success closes it."""
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_after_s=30, now=lambda: now[0])
    fn = Flaky(2, KeyError("down"))
    t = tool(fn, breaker=breaker)
    await t.call(GOOD)
    await t.call(GOOD)
    assert breaker.state == "open"
    blocked = await t.call(GOOD)
    assert isinstance(blocked, ToolError) and blocked.code == "circuit_open"
    assert fn.calls == 2
    now[0] += 31
    assert breaker.state == "half_open"
    assert isinstance(await t.call(GOOD), ToolOk)
    assert breaker.state == "closed"


async def test_tool_error_is_a_message_a_model_can_read() -> None:
    """A tool error renders as JSON with status tool_error: never a rejection, never done."""
    result = await tool(Flaky(10, KeyError("x")), attempts=1).call(GOOD)
    assert isinstance(result, ToolError)
    payload = result.as_payload()
    assert payload["status"] == "tool_error" and payload["code"] == "failed"


def test_limits_are_validated() -> None:
    """Nonsense limits are refused at construction with the numbers in the message."""
    with pytest.raises(ConfigError):
        TokenBucket(rate_per_s=0, burst=1)
    with pytest.raises(ConfigError):
        CircuitBreaker(threshold=0)
    with pytest.raises(ConfigError):
        tool(Flaky(0), attempts=0)
