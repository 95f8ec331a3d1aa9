"""A :class:`Model` over Anthropic's messages API, through the official ``anthropic`` client.

The client is an optional extra (``pip install 'seamline[anthropic]'``), imported when an
:class:`AnthropicModel` is built, so this module (and ``seamline.models``) imports without it.

Mapping from the protocol:

- System messages, wherever they appear, are joined into the API's ``system`` parameter.
- A ``role="tool"`` message becomes a ``tool_result`` block (``name`` is the ``tool_use`` id) in
  a user turn; consecutive results share one turn, as the API wants.
- Structured output (``json_schema``) is a forced tool: one extra tool named ``schema_name``
  whose input schema is the requested schema, and ``tool_choice`` naming it. Every Claude model
  supports tools, and the API hands the tool input back as parsed JSON, so the text we return is
  JSON rather than prose that might wrap it in a code fence. A non-object schema is wrapped as
  ``{"value": ...}`` (tool inputs must be objects) and unwrapped on the way back. If the request
  also offers tools, the model must call one of them or the output tool (``tool_choice: any``).
- ``temperature`` is not sent: the API version the 2.x client speaks (2026-10-21) removed the
  sampling parameters and answers 400 to any of them, even at their defaults.
- ``stop_reason`` is reported in the chat-completions vocabulary the rest of seamline reads:
  ``end_turn``/``stop_sequence`` -> ``stop``, ``max_tokens`` -> ``length``, ``tool_use`` ->
  ``tool_calls`` (or ``stop`` when the tool was the structured-output one).

Retries are the client's: 408/409/429/5xx, timeouts and connection failures, ``max_retries``
times with exponential backoff and jitter, waiting as long as ``retry-after-ms``/``Retry-After``
ask. Unlike the OpenAI client it puts no ceiling on that wait, so a server asking for an hour
would hold the call for an hour; a response hook here marks such responses not-retryable
(``x-should-retry: false``, which the client obeys) once the wait exceeds two minutes, matching
the OpenAI client, and the call fails at once as ``rate_limited``.

As with :class:`~seamline.models.OpenAIChatModel`, every failure leaves ``complete`` as a
:class:`ModelError` with a machine-readable ``code``, so callers never branch on a vendor type.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pydantic

from seamline.errors import ConfigError
from seamline.models._openai import (
    check_config,
    empty_response_error,
    first_problem,
    sdk_error,
)
from seamline.models._types import Message, ModelError, ModelRequest, ModelResponse, ToolCall, Usage

if TYPE_CHECKING:
    import anthropic
    import httpx2
    from anthropic.types import MessageParam, ToolChoiceParam, ToolParam, ToolResultBlockParam

__all__ = ["ANTHROPIC_BASE_URL", "AnthropicModel"]

ANTHROPIC_BASE_URL = "https://api.anthropic.com"

MAX_RETRY_AFTER_S = 120.0
"""The longest server-requested wait the client may sleep before retrying (OpenAI's ceiling)."""

_PLACEHOLDER_KEY = "unused"
_WRAPPED = "value"  # the property a non-object structured output is wrapped in

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _import_anthropic() -> Any:
    try:
        import anthropic
    except ImportError as exc:
        raise ImportError(
            "AnthropicModel needs the 'anthropic' package, which is not installed; "
            "run: pip install 'seamline[anthropic]'"
        ) from exc
    return anthropic


class AnthropicModel:
    """A Claude model behind Anthropic's messages API (or a server that speaks it).

    ``api_key`` defaults to ``$ANTHROPIC_API_KEY``; only Anthropic's own endpoint requires one.
    ``max_tokens`` is used when a request sets none (the API requires a value). ``timeout_s``
    bounds each HTTP attempt; the client makes up to ``1 + max_retries`` attempts. The key is
    handed to the client and never kept, logged or shown in ``repr``.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str = ANTHROPIC_BASE_URL,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_tokens: int = 4096,
    ) -> None:
        check_config("AnthropicModel", model=model, timeout_s=timeout_s, max_retries=max_retries)
        if max_tokens < 1:
            raise ConfigError(
                f"AnthropicModel(model={model!r}) needs max_tokens >= 1, got {max_tokens}"
            )
        sdk = _import_anthropic()
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            if base_url.rstrip("/") == ANTHROPIC_BASE_URL:
                raise ConfigError(
                    f"AnthropicModel(model={model!r}) talks to {base_url}, which needs an API key, "
                    "but api_key was not given and ANTHROPIC_API_KEY is not set; pass api_key= or "
                    "set ANTHROPIC_API_KEY"
                )
            key = _PLACEHOLDER_KEY
        self._model = model
        self._base_url = base_url
        self._max_tokens = max_tokens
        http_client = sdk.DefaultAsyncHttpxClient(
            event_hooks={"response": [_refuse_long_retry_after]}
        )
        self._client: anthropic.AsyncAnthropic = sdk.AsyncAnthropic(
            api_key=key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )

    @property
    def name(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"AnthropicModel(model={self._model!r}, base_url={self._base_url!r})"

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        await self._client.close()

    async def __aenter__(self) -> AnthropicModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one message request; return the reply or raise :class:`ModelError` (only)."""
        system, messages = self._messages(request.messages)
        tools, tool_choice, wrapped = self._tools(request)
        options: dict[str, Any] = {}
        if system:
            options["system"] = system
        if tools:
            options["tools"] = tools
        if tool_choice is not None:
            options["tool_choice"] = tool_choice
        started = time.perf_counter()
        try:
            raw = await self._client.messages.with_raw_response.create(
                model=self._model,
                max_tokens=request.max_tokens or self._max_tokens,
                messages=messages,
                **options,
            )
            body = raw.http_response.content
        except Exception as exc:
            raise self._error(exc) from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        output_tool = request.schema_name if request.json_schema is not None else None
        return self._response(body, latency_ms, output_tool, wrapped)

    def _messages(self, messages: tuple[Message, ...]) -> tuple[str, list[MessageParam]]:
        system: list[str] = []
        turns: list[MessageParam] = []
        results: list[ToolResultBlockParam] = []
        for message in messages:
            if message.role != "tool" and results:
                turns.append({"role": "user", "content": results})
                results = []
            if message.role == "system":
                system.append(message.content)
                continue
            if message.role == "tool":
                if not message.name:
                    raise ModelError(
                        "a role='tool' message needs name= set to the id of the tool_use it "
                        "answers; got none",
                        code="bad_request",
                        retryable=False,
                        model=self._model,
                    )
                results.append(
                    {"type": "tool_result", "tool_use_id": message.name, "content": message.content}
                )
                continue
            if message.role == "user":
                turns.append({"role": "user", "content": message.content})
            elif message.tool_calls:
                blocks: list[Any] = (
                    [{"type": "text", "text": message.content}] if message.content else []
                )
                blocks += [
                    {
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": _tool_input(c.arguments),
                    }
                    for c in message.tool_calls
                ]
                turns.append({"role": "assistant", "content": blocks})
            else:
                turns.append({"role": "assistant", "content": message.content})
        if results:
            turns.append({"role": "user", "content": results})
        return "\n\n".join(system), turns

    def _tools(self, request: ModelRequest) -> tuple[list[ToolParam], ToolChoiceParam | None, bool]:
        tools: list[ToolParam] = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            for t in request.tools
        ]
        if request.json_schema is None:
            return tools, None, False
        if any(t.name == request.schema_name for t in request.tools):
            raise ModelError(
                f"schema_name {request.schema_name!r} is also the name of an offered tool; the "
                "structured output is sent as a tool of that name, so rename one of them",
                code="bad_request",
                retryable=False,
                model=self._model,
            )
        schema = dict(request.json_schema)
        wrapped = schema.get("type") != "object"
        if wrapped:
            # References like "#/$defs/X" resolve from the document root, so definitions stay there.
            defs: dict[str, Any] = {
                k: schema.pop(k) for k in ("$defs", "definitions") if k in schema
            }
            schema = {
                "type": "object",
                "properties": {_WRAPPED: schema},
                "required": [_WRAPPED],
                **defs,
            }
        tools.append(
            {
                "name": request.schema_name,
                "description": "Give the final answer as this tool's input, matching its schema.",
                "input_schema": schema,
            }
        )
        choice: ToolChoiceParam = (
            {"type": "any"} if request.tools else {"type": "tool", "name": request.schema_name}
        )
        return tools, choice, wrapped

    def _response(
        self, body: bytes, latency_ms: float, output_tool: str | None, wrapped: bool
    ) -> ModelResponse:
        try:
            message = _Message.model_validate_json(body)
        except pydantic.ValidationError as exc:
            raise ModelError(
                f"{self._where()} answered 200 but the body is not a message "
                f"({first_problem(exc)}); body starts {body[:120]!r}. Check that base_url "
                "points at an Anthropic messages endpoint",
                code="malformed_response",
                retryable=True,
                model=self._model,
            ) from exc
        texts: list[str] = []
        calls: list[ToolCall] = []
        # The output tool's JSON is the answer; any prose around it is commentary.
        answer: str | None = None
        for block in message.content:
            if block.type == "text" and block.text:
                texts.append(block.text)
            elif block.type == "tool_use" and block.name == output_tool:
                value = block.input
                if wrapped and isinstance(value, Mapping):
                    value = value.get(_WRAPPED)
                answer = json.dumps(value)
            elif block.type == "tool_use" and block.name:
                calls.append(
                    ToolCall(
                        id=block.id or f"toolu_{len(calls)}",
                        name=block.name,
                        arguments=json.dumps(block.input if block.input is not None else {}),
                    )
                )
        finish = _STOP_REASONS.get(message.stop_reason or "", message.stop_reason)
        if answer is not None and finish == "tool_calls" and not calls:
            finish = "stop"
        text = answer if answer is not None else "".join(texts)
        if not text and not calls:
            raise empty_response_error(self._where(), finish, self._model)
        usage = message.usage or _Usage()
        return ModelResponse(
            text=text,
            model=self._model,
            model_version=message.model or self._model,
            usage=Usage(
                prompt_tokens=usage.input_tokens or 0,
                completion_tokens=usage.output_tokens or 0,
            ),
            latency_ms=latency_ms,
            tool_calls=tuple(calls),
            finish_reason=finish,
        )

    def _where(self) -> str:
        return f"model {self._model!r} at {self._base_url}"

    def _error(self, exc: Exception) -> ModelError:
        return sdk_error(_import_anthropic(), self._where(), exc, self._model)


async def _refuse_long_retry_after(response: httpx2.Response) -> None:
    """Mark a response whose requested wait exceeds :data:`MAX_RETRY_AFTER_S` as final."""
    delay = _retry_after_s(response.headers)
    if delay is not None and delay > MAX_RETRY_AFTER_S:
        response.headers["x-should-retry"] = "false"


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for, read the way the client reads it."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


# -- the parts of a message we read ---------------------------------------------------------------


class _Block(pydantic.BaseModel):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Usage(pydantic.BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None


class _Message(pydantic.BaseModel):
    model: str | None = None
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage | None = None


def _tool_input(arguments: str) -> Any:
    """A recorded tool call's arguments as the object Anthropic expects (raw text if they
    were never valid JSON, wrapped so the turn can still be sent)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}
