"""The OpenAI-compatible and Anthropic providers, end to end over real HTTP.

Each test scripts ``tests/_chat_server.py`` (a local server speaking both protocols), calls the
provider through the official client, and checks both the ``ModelResponse``/``ModelError`` and
what the client actually sent, including how far apart its retries arrived.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from seamline.errors import ConfigError
from seamline.models._anthropic import AnthropicModel
from seamline.models._openai import OpenAIChatModel
from seamline.models._types import (
    Message,
    Model,
    ModelError,
    ModelRequest,
    ToolCall,
    ToolSpec,
)
from tests._chat_server import ChatServer, ToolUse, ok, raw, serve, slow, status

KEY = "sk-test-not-a-real-key-0123456789"
HELLO = ModelRequest(messages=(Message("system", "Be brief."), Message("user", "Say hello.")))
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}
# The clients' exponential backoff starts at 0.5 s and doubles, less up to 25% jitter.
FIRST_BACKOFF_S = 0.5 * 0.75


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with serve() as running:
        yield running


def openai_model(server: ChatServer, **config: Any) -> OpenAIChatModel:
    config.setdefault("timeout_s", 5.0)
    config.setdefault("max_retries", 0)
    return OpenAIChatModel(
        model="gpt-test", base_url=f"{server.base_url}/v1", api_key=KEY, **config
    )


def anthropic_model(server: ChatServer, **config: Any) -> AnthropicModel:
    config.setdefault("timeout_s", 5.0)
    config.setdefault("max_retries", 0)
    return AnthropicModel(model="claude-test", base_url=server.base_url, api_key=KEY, **config)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def expect_error(
    model: OpenAIChatModel | AnthropicModel, request: ModelRequest
) -> ModelError:
    async with model:
        with pytest.raises(ModelError) as caught:
            await model.complete(request)
    assert KEY not in str(caught.value)
    return caught.value


def make_model(
    provider: str, server: ChatServer, **config: Any
) -> OpenAIChatModel | AnthropicModel:
    factory = openai_model if provider == "openai" else anthropic_model
    return factory(server, **config)


PROVIDERS = pytest.mark.parametrize("provider", ["openai", "anthropic"])


# -- both providers --------------------------------------------------------------------------------


@PROVIDERS
@pytest.mark.parametrize(
    "hint",
    [
        status(429, retry_after="3600"),
        status(429, retry_after="Fri, 01 Jan 2100 00:00:00 GMT"),
        status(429, retry_after_ms="600000"),
    ],
    ids=["seconds", "http-date", "milliseconds"],
)
async def test_retry_after_beyond_two_minutes_is_not_retried(
    server: ChatServer, provider: str, hint: Any
) -> None:
    """No call sleeps more than 120 s on a server's say-so: it fails at once as rate_limited.

    The OpenAI client refuses such waits itself; the Anthropic client would sleep them, so
    AnthropicModel's response hook marks the response not-retryable.
    """
    server.script(hint)
    model = make_model(provider, server, max_retries=3)
    started = time.monotonic()
    error = await expect_error(model, HELLO)
    assert (error.code, error.retryable) == ("rate_limited", True)
    assert len(server.requests) == 1
    assert time.monotonic() - started < 2


@PROVIDERS
@pytest.mark.parametrize(
    ("code", "expected"), [(408, "timeout"), (409, "server_error"), (503, "server_error")]
)
async def test_transient_statuses_are_retryable(
    server: ChatServer, provider: str, code: int, expected: str
) -> None:
    """408, 409 and 5xx, which the clients retry, stay retryable once their retries run out."""
    server.fallback = status(code)
    error = await expect_error(make_model(provider, server, max_retries=0), HELLO)
    assert (error.code, error.retryable) == (expected, True)
    assert f"HTTP {code} after 1 attempt:" in str(error)


@PROVIDERS
async def test_unencodable_request_is_still_a_model_error(
    server: ChatServer, provider: str
) -> None:
    """Even a failure inside the client library leaves complete() as a ModelError."""
    tool = ToolSpec(name="t", description="d", parameters={"type": "object", "x": float("nan")})
    request = ModelRequest(messages=HELLO.messages, tools=(tool,))
    error = await expect_error(make_model(provider, server), request)
    assert (error.code, error.retryable) == ("unexpected", False)
    assert "ValueError" in str(error)
    assert server.requests == []


@PROVIDERS
@pytest.mark.parametrize(
    "config",
    [{"model": ""}, {"timeout_s": 0}, {"max_retries": -1}],
    ids=["no-model", "zero-timeout", "negative-retries"],
)
def test_bad_config_is_refused(provider: str, config: dict[str, Any]) -> None:
    """A missing model id, a non-positive timeout or negative retries is a ConfigError."""
    cls = OpenAIChatModel if provider == "openai" else AnthropicModel
    arguments: dict[str, Any] = {"model": "m", "base_url": "http://127.0.0.1:9", **config}
    with pytest.raises(ConfigError):
        cls(**arguments)


# -- OpenAI-compatible -----------------------------------------------------------------------------


async def test_openai_success_carries_text_usage_and_served_version(server: ChatServer) -> None:
    """A 200 becomes text, usage, the served model as model_version and a measured latency."""
    server.script(ok("Hello!", prompt_tokens=21, completion_tokens=3, model="gpt-test-0613"))
    async with openai_model(server) as model:
        assert isinstance(model, Model)
        response = await model.complete(HELLO)
    assert response.text == "Hello!"
    assert (response.model, response.model_version) == ("gpt-test", "gpt-test-0613")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (21, 3)
    assert response.finish_reason == "stop"
    assert response.tool_calls == ()
    assert 0 < response.latency_ms < 5000
    assert not response.simulated
    (sent,) = server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello."},
        ],
    }


async def test_openai_missing_usage_counts_as_zero(server: ChatServer) -> None:
    """A server that reports no usage gives zero tokens rather than failing."""
    server.script(raw('{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}'))
    async with openai_model(server) as model:
        response = await model.complete(HELLO)
    assert (response.text, response.usage.total_tokens) == ("hi", 0)
    assert response.model_version == "gpt-test"


async def test_openai_structured_output_sends_response_format(server: ChatServer) -> None:
    """json_schema goes out as a non-strict json_schema response_format under schema_name."""
    server.script(ok('{"answer": "42"}'))
    request = ModelRequest(
        messages=HELLO.messages,
        json_schema=SCHEMA,
        schema_name="final_answer",
        max_tokens=64,
        temperature=0.0,
    )
    async with openai_model(server) as model:
        response = await model.complete(request)
    assert response.text == '{"answer": "42"}'
    body = server.requests[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "final_answer", "schema": SCHEMA, "strict": False},
    }
    # A compatible server gets the max_tokens it knows, not OpenAI's max_completion_tokens.
    assert (body["max_tokens"], body["temperature"]) == (64, 0.0)


async def test_openai_tool_call_round_trip(server: ChatServer) -> None:
    """Tools go out as function tools, tool calls come back, and a tool result cites its id."""
    server.script(
        ok(
            None,
            tool_calls=(ToolUse("call_1", "get_weather", {"city": "Oslo"}),),
            finish="tool_calls",
        ),
        ok("It is cold in Oslo."),
    )
    asking = ModelRequest(messages=HELLO.messages, tools=(WEATHER,))
    async with openai_model(server) as model:
        first = await model.complete(asking)
        (call,) = first.tool_calls
        answering = ModelRequest(
            messages=(
                *HELLO.messages,
                Message("assistant", "", tool_calls=first.tool_calls),
                Message("tool", '{"temp_c": -3}', name=call.id),
            ),
            tools=(WEATHER,),
        )
        second = await model.complete(answering)
    assert (first.text, first.finish_reason) == ("", "tool_calls")
    assert (call.id, call.name, call.arguments) == ("call_1", "get_weather", '{"city": "Oslo"}')
    assert server.requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": dict(WEATHER.parameters),
            },
        }
    ]
    assert server.requests[1].body["messages"][-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": -3}'},
    ]
    assert second.text == "It is cold in Oslo."


async def test_openai_lenient_tool_calls_are_normalised(server: ChatServer) -> None:
    """Arguments sent as an object become JSON text, and a call without an id gets one."""
    server.script(
        raw(
            json.dumps(
                {
                    "choices": [
                        {
                            "finish_reason": "tool_calls",
                            "message": {
                                "content": None,
                                "tool_calls": [
                                    {
                                        "function": {
                                            "name": "get_weather",
                                            "arguments": {"city": "Oslo"},
                                        }
                                    }
                                ],
                            },
                        }
                    ]
                }
            )
        )
    )
    async with openai_model(server) as model:
        response = await model.complete(ModelRequest(messages=HELLO.messages, tools=(WEATHER,)))
    assert response.tool_calls == (ToolCall("call_0", "get_weather", '{"city": "Oslo"}'),)


async def test_openai_tool_message_without_id_is_refused_before_sending(server: ChatServer) -> None:
    """A tool result that names no tool call is a bad request; nothing goes on the wire."""
    request = ModelRequest(messages=(Message("user", "hi"), Message("tool", "{}")))
    error = await expect_error(openai_model(server), request)
    assert (error.code, error.retryable) == ("bad_request", False)
    assert server.requests == []


async def test_openai_429_waits_for_retry_after_then_succeeds(server: ChatServer) -> None:
    """The client retries a 429 itself, no sooner than its Retry-After of 1 s."""
    server.script(status(429, retry_after="1"), ok("after the wait"))
    async with openai_model(server, max_retries=1) as model:
        response = await model.complete(HELLO)
    assert response.text == "after the wait"
    assert len(server.requests) == 2
    assert server.gaps()[0] >= 1.0
    assert response.latency_ms >= 1000
    assert server.requests[1].headers["x-stainless-retry-count"] == "1"


async def test_openai_retry_after_ms_wins_over_retry_after(server: ChatServer) -> None:
    """retry-after-ms is read before Retry-After: a 0.2 s hint beats a 30 s one."""
    server.script(status(429, retry_after="30", retry_after_ms="200"), ok())
    async with openai_model(server, max_retries=1) as model:
        await model.complete(HELLO)
    (gap,) = server.gaps()
    assert 0.2 <= gap < 5


async def test_openai_persistent_500_is_retryable_server_error(server: ChatServer) -> None:
    """A 500 is retried max_retries times with growing backoff, then surfaces as server_error."""
    server.fallback = status(500)
    error = await expect_error(openai_model(server, max_retries=2), HELLO)
    assert (error.code, error.retryable, error.model) == ("server_error", True, "gpt-test")
    assert "HTTP 500 after 3 attempts" in str(error)
    assert len(server.requests) == 3
    first, second = server.gaps()
    assert first >= FIRST_BACKOFF_S
    assert second >= 2 * FIRST_BACKOFF_S


@pytest.mark.parametrize(
    ("code", "expected"),
    [(400, "bad_request"), (401, "auth"), (403, "auth"), (404, "bad_request")],
)
async def test_openai_client_errors_are_final(server: ChatServer, code: int, expected: str) -> None:
    """4xx other than 408/409/429 is not retried by the client and not retryable for us."""
    server.fallback = status(code)
    error = await expect_error(openai_model(server, max_retries=3), HELLO)
    assert (error.code, error.retryable) == (expected, False)
    assert len(server.requests) == 1


async def test_openai_slow_server_is_a_timeout(server: ChatServer) -> None:
    """An answer slower than timeout_s becomes a retryable timeout, promptly."""
    server.script(slow(5))
    model = openai_model(server, timeout_s=0.25)
    started = time.monotonic()
    error = await expect_error(model, HELLO)
    assert (error.code, error.retryable) == ("timeout", True)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "body",
    [
        raw("<html>Bad Gateway</html>", content_type="text/html"),
        raw('{"choices": [ {"mess'),
        raw('{"object": "chat.completion", "model": "x"}'),
        raw('{"choices": []}'),
    ],
    ids=["html", "cut-off-json", "no-choices", "empty-choices"],
)
async def test_openai_malformed_body_is_malformed_response(server: ChatServer, body: Any) -> None:
    """A 200 that is not a chat completion is a retryable malformed_response (sent once)."""
    server.script(body)
    error = await expect_error(openai_model(server, max_retries=2), HELLO)
    assert (error.code, error.retryable) == ("malformed_response", True)
    assert len(server.requests) == 1


async def test_openai_truncated_output_is_returned_with_length(server: ChatServer) -> None:
    """Output cut off by max_tokens is returned as is, finish_reason "length", for the boundary."""
    server.script(ok('{"answer": "the first part of a long', finish="length"))
    async with openai_model(server) as model:
        response = await model.complete(ModelRequest(messages=HELLO.messages, json_schema=SCHEMA))
    assert response.text == '{"answer": "the first part of a long'
    assert response.finish_reason == "length"


async def test_openai_empty_output_is_empty_response(server: ChatServer) -> None:
    """No text and no tool calls is an error; retryable unless max_tokens was the cause."""
    server.script(ok(""), ok(None, finish="length"))
    async with openai_model(server) as model:
        for retryable in (True, False):
            with pytest.raises(ModelError) as caught:
                await model.complete(HELLO)
            assert (caught.value.code, caught.value.retryable) == ("empty_response", retryable)


async def test_openai_connection_refused_is_connection_error() -> None:
    """Nothing listening on the port is a retryable connection error."""
    model = OpenAIChatModel(
        model="gpt-test",
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        timeout_s=2,
        max_retries=0,
    )
    error = await expect_error(model, HELLO)
    assert (error.code, error.retryable) == ("connection", True)


def test_openai_official_endpoint_without_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenAI's own endpoint needs a key: none given or in the environment is refused early."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIChatModel(model="gpt-4o-mini")


async def test_openai_local_server_needs_no_key(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compatible local server works without a key (the client gets a placeholder)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script(ok("hi"))
    async with OpenAIChatModel(model="llama", base_url=f"{server.base_url}/v1") as model:
        assert (await model.complete(HELLO)).text == "hi"


def test_openai_repr_shows_model_and_url_but_never_the_key() -> None:
    """repr names the model and base_url and leaves the key out."""
    model = OpenAIChatModel(model="gpt-4o-mini", api_key=KEY)
    assert (
        repr(model) == "OpenAIChatModel(model='gpt-4o-mini', base_url='https://api.openai.com/v1')"
    )
    assert KEY not in repr(model)
    assert KEY not in vars(model).values()


# -- Anthropic -------------------------------------------------------------------------------------


async def test_anthropic_success_carries_text_usage_and_served_version(server: ChatServer) -> None:
    """System messages go to system=, and the reply's text, usage and model are read back."""
    server.script(ok("Hello!", prompt_tokens=30, completion_tokens=4, model="claude-test-20260101"))
    async with anthropic_model(server, max_tokens=256) as model:
        assert isinstance(model, Model)
        response = await model.complete(HELLO)
    assert response.text == "Hello!"
    assert (response.model, response.model_version) == ("claude-test", "claude-test-20260101")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (30, 4)
    assert response.finish_reason == "stop"
    assert response.latency_ms > 0
    (sent,) = server.requests
    assert sent.path == "/v1/messages"
    # anthropic 2.x sends the key as a bearer token; earlier releases used x-api-key.
    assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert sent.body == {
        "model": "claude-test",
        "max_tokens": 256,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello."}],
    }


async def test_anthropic_structured_output_is_a_forced_tool(server: ChatServer) -> None:
    """json_schema becomes one tool the model must call; its input comes back as the JSON text."""
    server.script(
        ok(None, tool_calls=(ToolUse("toolu_1", "final", {"answer": "42"}),), finish="tool_calls")
    )
    request = ModelRequest(messages=HELLO.messages, json_schema=SCHEMA, schema_name="final")
    async with anthropic_model(server) as model:
        response = await model.complete(request)
    assert response.text == '{"answer": "42"}'
    assert (response.tool_calls, response.finish_reason) == ((), "stop")
    body = server.requests[0].body
    assert body["tool_choice"] == {"type": "tool", "name": "final"}
    assert body["tools"][0]["name"] == "final"
    assert body["tools"][0]["input_schema"] == SCHEMA


async def test_anthropic_non_object_schema_is_wrapped_and_unwrapped(server: ChatServer) -> None:
    """A schema that is not an object travels as {"value": ...} and comes back unwrapped."""
    server.script(
        ok(None, tool_calls=(ToolUse("toolu_1", "output", {"value": [1, 2]}),), finish="tool_calls")
    )
    array = {"type": "array", "items": {"$ref": "#/$defs/Small"}}
    defs = {"Small": {"type": "integer", "maximum": 9}}
    request = ModelRequest(messages=HELLO.messages, json_schema={**array, "$defs": defs})
    async with anthropic_model(server) as model:
        response = await model.complete(request)
    assert response.text == "[1, 2]"
    # Definitions stay at the root, where "#/$defs/..." references resolve.
    assert server.requests[0].body["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"value": array},
        "required": ["value"],
        "$defs": defs,
    }


async def test_anthropic_tool_call_round_trip(server: ChatServer) -> None:
    """Tools carry input_schema, tool_use comes back as a ToolCall, results go as tool_result."""
    server.script(
        ok(
            "Let me check.",
            tool_calls=(ToolUse("toolu_1", "get_weather", {"city": "Oslo"}),),
            finish="tool_calls",
        ),
        ok("It is cold in Oslo."),
    )
    async with anthropic_model(server) as model:
        first = await model.complete(ModelRequest(messages=HELLO.messages, tools=(WEATHER,)))
        (call,) = first.tool_calls
        second = await model.complete(
            ModelRequest(
                messages=(
                    *HELLO.messages,
                    Message("assistant", "Let me check.", tool_calls=first.tool_calls),
                    Message("tool", '{"temp_c": -3}', name=call.id),
                ),
                tools=(WEATHER,),
            )
        )
    assert (first.text, first.finish_reason) == ("Let me check.", "tool_calls")
    assert (call.id, call.name, call.arguments) == ("toolu_1", "get_weather", '{"city": "Oslo"}')
    assert server.requests[0].body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "input_schema": dict(WEATHER.parameters),
        }
    ]
    assert "tool_choice" not in server.requests[0].body
    assert server.requests[1].body["messages"][-2:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp_c": -3}'}
            ],
        },
    ]
    assert second.text == "It is cold in Oslo."


async def test_anthropic_consecutive_tool_results_share_one_user_turn(server: ChatServer) -> None:
    """Two tool results in a row go in one user turn, and a later user message in its own."""
    server.script(ok("done"))
    request = ModelRequest(
        messages=(
            Message("user", "Weather in Oslo and Bergen?"),
            Message("assistant", "Checking both."),
            Message("tool", "-3", name="toolu_1"),
            Message("tool", "4", name="toolu_2"),
            Message("user", "In Celsius, please."),
        ),
        temperature=0.2,
    )
    async with anthropic_model(server) as model:
        await model.complete(request)
    body = server.requests[0].body
    assert body["messages"][2:] == [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "4"},
            ],
        },
        {"role": "user", "content": "In Celsius, please."},
    ]
    # API version 2026-10-21 rejects sampling parameters, so temperature is not sent.
    assert "temperature" not in body


async def test_anthropic_structured_output_alongside_tools_requires_some_tool(
    server: ChatServer,
) -> None:
    """With tools offered too, the output tool joins them and tool_choice is "any"."""
    server.script(ok(None, tool_calls=(ToolUse("toolu_1", "get_weather", {"city": "Oslo"}),)))
    request = ModelRequest(messages=HELLO.messages, json_schema=SCHEMA, tools=(WEATHER,))
    async with anthropic_model(server) as model:
        response = await model.complete(request)
    assert [call.name for call in response.tool_calls] == ["get_weather"]
    body = server.requests[0].body
    assert [tool["name"] for tool in body["tools"]] == ["get_weather", "output"]
    assert body["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    "request_",
    [
        ModelRequest(messages=(Message("user", "hi"), Message("tool", "{}"))),
        ModelRequest(
            messages=HELLO.messages, json_schema=SCHEMA, schema_name="get_weather", tools=(WEATHER,)
        ),
    ],
    ids=["tool-result-without-id", "schema-name-clashes-with-tool"],
)
async def test_anthropic_unsendable_request_is_refused_before_sending(
    server: ChatServer, request_: ModelRequest
) -> None:
    """A request the API could not accept is a bad_request, and nothing goes on the wire."""
    error = await expect_error(anthropic_model(server), request_)
    assert (error.code, error.retryable) == ("bad_request", False)
    assert server.requests == []


async def test_anthropic_empty_output_is_empty_response(server: ChatServer) -> None:
    """A reply with no text and no tool use is a retryable empty_response."""
    server.script(ok(None))
    error = await expect_error(anthropic_model(server), HELLO)
    assert (error.code, error.retryable) == ("empty_response", True)


async def test_anthropic_429_waits_for_retry_after_then_succeeds(server: ChatServer) -> None:
    """The client retries a 429 itself, no sooner than its Retry-After of 1 s."""
    server.script(status(429, retry_after="1"), ok("after the wait"))
    async with anthropic_model(server, max_retries=1) as model:
        response = await model.complete(HELLO)
    assert response.text == "after the wait"
    assert len(server.requests) == 2
    assert server.gaps()[0] >= 1.0
    assert server.requests[1].headers["x-stainless-retry-count"] == "1"


async def test_anthropic_persistent_500_is_retryable_server_error(server: ChatServer) -> None:
    """A 500 is retried max_retries times with growing backoff, then surfaces as server_error."""
    server.fallback = status(500)
    error = await expect_error(anthropic_model(server, max_retries=2), HELLO)
    assert (error.code, error.retryable) == ("server_error", True)
    assert len(server.requests) == 3
    first, second = server.gaps()
    assert first >= FIRST_BACKOFF_S
    assert second >= 2 * FIRST_BACKOFF_S


async def test_anthropic_slow_server_is_a_timeout(server: ChatServer) -> None:
    """An answer slower than timeout_s becomes a retryable timeout, promptly."""
    server.script(slow(5))
    model = anthropic_model(server, timeout_s=0.25)
    started = time.monotonic()
    error = await expect_error(model, HELLO)
    assert (error.code, error.retryable) == ("timeout", True)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "body",
    [raw("upstream error", content_type="text/plain"), raw('{"type": "message", "model": "x"}')],
    ids=["text", "no-content"],
)
async def test_anthropic_malformed_body_is_malformed_response(
    server: ChatServer, body: Any
) -> None:
    """A 200 that is not a message is a retryable malformed_response (sent once)."""
    server.script(body)
    error = await expect_error(anthropic_model(server, max_retries=2), HELLO)
    assert (error.code, error.retryable) == ("malformed_response", True)
    assert len(server.requests) == 1


async def test_anthropic_truncated_output_is_returned_with_length(server: ChatServer) -> None:
    """stop_reason max_tokens is reported as finish_reason "length" with the cut-off text."""
    server.script(ok('{"answer": "the first part of a long', finish="length"))
    async with anthropic_model(server) as model:
        response = await model.complete(HELLO)
    assert response.text == '{"answer": "the first part of a long'
    assert response.finish_reason == "length"


async def test_anthropic_connection_refused_is_connection_error() -> None:
    """Nothing listening on the port is a retryable connection error."""
    model = AnthropicModel(
        model="claude-test",
        base_url=f"http://127.0.0.1:{closed_port()}",
        timeout_s=2,
        max_retries=0,
    )
    error = await expect_error(model, HELLO)
    assert (error.code, error.retryable) == ("connection", True)


def test_anthropic_official_endpoint_without_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anthropic's own endpoint needs a key: none given or in the environment is refused early."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicModel(model="claude-test")


def test_anthropic_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the anthropic package, building the model says which extra to install."""
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ImportError, match=r"pip install 'seamline\[anthropic\]'"):
        AnthropicModel(model="claude-test", api_key=KEY)


def test_anthropic_repr_never_shows_the_key() -> None:
    """repr names the model and base_url and leaves the key out."""
    model = AnthropicModel(model="claude-test", api_key=KEY)
    assert (
        repr(model) == "AnthropicModel(model='claude-test', base_url='https://api.anthropic.com')"
    )
