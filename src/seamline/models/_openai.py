"""A :class:`Model` over any OpenAI-compatible chat-completions endpoint.

OpenAI itself, vLLM, Ollama, the llama.cpp server and the like all answer
``POST {base_url}/chat/completions``; this provider talks to them through the official
``openai`` client, so authentication, connection pooling and retries are the vendor's tested
code rather than ours. The client retries 408/409/429/5xx responses, timeouts and connection
failures ``max_retries`` times with exponential backoff and jitter, and it waits as long as a
``retry-after-ms`` or ``Retry-After`` header asks, up to two minutes (a longer wait is not
retried at all, so it surfaces at once as ``rate_limited``).

Why every failure becomes a :class:`ModelError`: callers (the boundary, budgets, fallbacks)
decide what to do from ``code`` and ``retryable`` alone, whichever provider or server failed.
So ``complete`` lets nothing else escape: a status error, a timeout, a refused connection, a
200 whose body is not a chat completion, and any surprise from the client library all arrive
as a ``ModelError`` whose message says what was seen and what to do.

The response body is read raw and validated here with small, lenient pydantic models rather than
the client's own types: compatible servers differ in fields the client requires (ids, ``created``,
``object``), and a body that is not JSON must be reported, not returned as a string.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import openai
import pydantic

from seamline.errors import ConfigError
from seamline.models._types import Message, ModelError, ModelRequest, ModelResponse, ToolCall, Usage

if TYPE_CHECKING:
    from openai.types.chat import (
        ChatCompletionFunctionToolParam,
        ChatCompletionMessageParam,
    )
    from openai.types.shared_params import ResponseFormatJSONSchema

__all__ = ["OPENAI_BASE_URL", "OpenAIChatModel"]

OPENAI_BASE_URL = "https://api.openai.com/v1"

_PLACEHOLDER_KEY = "unused"  # local servers ignore the key, but the client insists on one


class OpenAIChatModel:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``api_key`` defaults to ``$OPENAI_API_KEY``; only OpenAI's own endpoint requires one (a
    local server gets a placeholder). ``timeout_s`` bounds each HTTP attempt and the client makes
    up to ``1 + max_retries`` attempts. The key is handed to the client and never kept, logged
    or shown in ``repr``. Call :meth:`aclose` (or use ``async with``) to release connections.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        check_config("OpenAIChatModel", model=model, timeout_s=timeout_s, max_retries=max_retries)
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self._official = urlsplit(base_url).hostname == "api.openai.com"
        if not key:
            if self._official:
                raise ConfigError(
                    f"OpenAIChatModel(model={model!r}) talks to {base_url}, which needs an API "
                    "key, but api_key was not given and OPENAI_API_KEY is not set; pass api_key= "
                    "or set OPENAI_API_KEY (a local OpenAI-compatible server needs no key)"
                )
            key = _PLACEHOLDER_KEY
        self._model = model
        self._base_url = base_url
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )

    @property
    def name(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"OpenAIChatModel(model={self._model!r}, base_url={self._base_url!r})"

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        await self._client.close()

    async def __aenter__(self) -> OpenAIChatModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one chat completion; return it or raise :class:`ModelError` (nothing else)."""
        messages = [self._message(m) for m in request.messages]
        started = time.perf_counter()
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self._model,
                messages=messages,
                **self._options(request),
            )
            body = raw.http_response.content
        except Exception as exc:
            raise self._error(exc) from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        return self._response(body, latency_ms)

    def _message(self, message: Message) -> ChatCompletionMessageParam:
        if message.role == "system":
            return {"role": "system", "content": message.content}
        if message.role == "user":
            return {"role": "user", "content": message.content}
        if message.role == "assistant":
            if not message.tool_calls:
                return {"role": "assistant", "content": message.content}
            return {
                "role": "assistant",
                "content": message.content or None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in message.tool_calls
                ],
            }
        if not message.name:
            raise ModelError(
                "a role='tool' message needs name= set to the id of the tool call it answers; "
                "got none",
                code="bad_request",
                retryable=False,
                model=self._model,
            )
        return {"role": "tool", "tool_call_id": message.name, "content": message.content}

    def _options(self, request: ModelRequest) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.json_schema is not None:
            response_format: ResponseFormatJSONSchema = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": dict(request.json_schema),
                    # Strict mode accepts only a subset of JSON Schema; the boundary validates
                    # the output anyway, so any schema the caller wrote is sent as written.
                    "strict": False,
                },
            }
            options["response_format"] = response_format
        if request.tools:
            tools: list[ChatCompletionFunctionToolParam] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in request.tools
            ]
            options["tools"] = tools
        if request.max_tokens is not None:
            # OpenAI deprecated max_tokens (its reasoning models refuse it); compatible servers
            # still mostly know only max_tokens.
            key = "max_completion_tokens" if self._official else "max_tokens"
            options[key] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        return options

    def _response(self, body: bytes, latency_ms: float) -> ModelResponse:
        try:
            completion = _Completion.model_validate_json(body)
        except pydantic.ValidationError as exc:
            raise ModelError(
                f"{self._where()} answered 200 but the body is not a chat completion with at "
                f"least one choice ({first_problem(exc)}); body starts {body[:120]!r}. "
                "Check that base_url points at an OpenAI-compatible /v1 endpoint",
                code="malformed_response",
                retryable=True,
                model=self._model,
            ) from exc
        choice = completion.choices[0]
        text = choice.message.content or ""
        calls = tuple(
            ToolCall(
                id=call.id or f"call_{index}",
                name=call.function.name,
                arguments=call.function.arguments_text(),
            )
            for index, call in enumerate(choice.message.tool_calls or ())
        )
        if not text and not calls:
            raise empty_response_error(self._where(), choice.finish_reason, self._model)
        usage = completion.usage or _Usage()
        return ModelResponse(
            text=text,
            model=self._model,
            model_version=completion.model or self._model,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens or 0,
                completion_tokens=usage.completion_tokens or 0,
            ),
            latency_ms=latency_ms,
            tool_calls=calls,
            finish_reason=choice.finish_reason,
        )

    def _where(self) -> str:
        return f"model {self._model!r} at {self._base_url}"

    def _error(self, exc: Exception) -> ModelError:
        return sdk_error(openai, self._where(), exc, self._model)


# -- helpers shared with the Anthropic provider --------------------------------------------------


def sdk_error(sdk: Any, where: str, exc: Exception, model: str) -> ModelError:
    """Map an exception of the official openai or anthropic client (both generated by the
    same toolkit, with the same exception classes) to a typed ModelError."""
    if isinstance(exc, sdk.APIStatusError):
        return status_error(where, exc.status_code, exc.message, exc.response, model)
    if isinstance(exc, sdk.APITimeoutError):
        return ModelError(
            f"{where} did not answer within the timeout{attempts_note(exc.request)}; raise "
            "timeout_s for slow models or check the server",
            code="timeout",
            retryable=True,
            model=model,
        )
    if isinstance(exc, sdk.APIConnectionError):
        return ModelError(
            f"could not connect to {where}{attempts_note(exc.request)}: "
            f"{exc.__cause__ or exc}; check base_url and that the server is running",
            code="connection",
            retryable=True,
            model=model,
        )
    return unexpected_error(where, exc, model)


def check_config(kind: str, *, model: str, timeout_s: float, max_retries: int) -> None:
    if not model:
        raise ConfigError(f"{kind} needs a model id, got {model!r}")
    if not timeout_s > 0:
        raise ConfigError(f"{kind}(model={model!r}) needs timeout_s > 0, got {timeout_s!r}")
    if max_retries < 0:
        raise ConfigError(f"{kind}(model={model!r}) needs max_retries >= 0, got {max_retries!r}")


def attempts_note(request: Any) -> str:
    """`` after N attempts`` from the retry-count header both official clients send."""
    try:
        taken = int(request.headers.get("x-stainless-retry-count", ""))
    except (AttributeError, TypeError, ValueError):
        return ""
    return f" after {taken + 1} attempt{'s' if taken else ''}"


def status_error(where: str, status: int, detail: str, response: Any, model: str) -> ModelError:
    """Classify an HTTP error status the client gave up on (after its own retries)."""
    attempts = attempts_note(getattr(response, "request", None))
    if status == 429:
        code, retryable, advice = "rate_limited", True, "slow down or raise the rate limit"
    elif status == 408:
        code, retryable, advice = "timeout", True, "try again later"
    elif status >= 500 or status == 409:
        code, retryable, advice = "server_error", True, "try again later"
    elif status in (401, 403):
        code, retryable, advice = "auth", False, "check the API key and its permissions"
    else:
        code, retryable, advice = "bad_request", False, "fix the request or the model id"
    return ModelError(
        f"{where} answered HTTP {status}{attempts}: {detail}; {advice}",
        code=code,
        retryable=retryable,
        model=model,
    )


def empty_response_error(where: str, finish_reason: str | None, model: str) -> ModelError:
    """A completion with neither text nor tool calls."""
    truncated = finish_reason == "length"
    advice = (
        "max_tokens ran out before any output; raise max_tokens"
        if truncated
        else "the model produced nothing; try again"
    )
    return ModelError(
        f"{where} returned no text and no tool calls (finish_reason={finish_reason!r}); {advice}",
        code="empty_response",
        # The same request would truncate again; anything else may well work next time.
        retryable=not truncated,
        model=model,
    )


def unexpected_error(where: str, exc: Exception, model: str) -> ModelError:
    return ModelError(
        f"calling {where} failed unexpectedly: {type(exc).__name__}: {exc}",
        code="unexpected",
        retryable=False,
        model=model,
    )


def first_problem(exc: pydantic.ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


# -- the parts of a chat completion we read -------------------------------------------------------


class _Function(pydantic.BaseModel):
    name: str
    # The protocol says a JSON string; some compatible servers send the object itself.
    arguments: str | dict[str, Any] = ""

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


class _ToolCall(pydantic.BaseModel):
    id: str | None = None
    function: _Function


class _Message(pydantic.BaseModel):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(pydantic.BaseModel):
    message: _Message
    finish_reason: str | None = None


class _Usage(pydantic.BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Completion(pydantic.BaseModel):
    model: str | None = None
    choices: list[_Choice] = pydantic.Field(min_length=1)
    usage: _Usage | None = None
