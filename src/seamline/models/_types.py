"""The model protocol: messages in, one response (text or tool calls, with usage) out."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from seamline import codec
from seamline.errors import SeamlineError

__all__ = [
    "Message",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "prompt_hash",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: a name, what it does, and a JSON schema for its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model proposed. ``arguments`` is the raw text the model produced."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. An assistant message may carry the ``tool_calls`` it made; a
    ``role="tool"`` message answers one of them, with ``name`` set to that call's id."""

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What a proposer sends. ``json_schema`` asks for structured output of that shape;
    ``metadata`` names the boundary, input and attempt (simulated and recorded models key on
    it; real providers ignore it)."""

    messages: tuple[Message, ...]
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "output"
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """One completion, as recorded at the boundary."""

    text: str
    model: str
    model_version: str
    usage: Usage
    latency_ms: float
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    simulated: bool = False


class ModelError(SeamlineError):
    """A model call failed after the provider's own retries (not a reject: nothing was
    proposed). ``code`` is machine-readable; ``retryable`` says whether a later call may work."""

    def __init__(self, message: str, *, code: str, retryable: bool, model: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.model = model


@runtime_checkable
class Model(Protocol):
    """A proposer backed by a language model (real, simulated or recorded)."""

    @property
    def name(self) -> str:
        """The model id as providers and price tables know it."""
        ...

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Return one completion or raise :class:`ModelError`."""
        ...


def prompt_hash(request: ModelRequest) -> str:
    """A stable hash of what the model was asked (messages, schema, tools), for event
    identity: the same prompt gives the same hash on every machine."""
    material = {
        "messages": [[m.role, m.content, m.name] for m in request.messages],
        "schema": _schema_digest(request.json_schema),
        "tools": [[t.name, t.description, t.parameters] for t in request.tools],
    }
    return hashlib.sha256(codec.encode(material).encode("utf-8")).hexdigest()[:32]


_SCHEMA_DIGESTS: dict[int, tuple[object, str]] = {}


def _schema_digest(schema: Mapping[str, Any] | None) -> str | None:
    # A boundary sends the same schema object with every request: hash its text once.
    if schema is None:
        return None
    cached = _SCHEMA_DIGESTS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    digest = hashlib.sha256(codec.encode(schema).encode("utf-8")).hexdigest()
    if len(_SCHEMA_DIGESTS) > 256:
        _SCHEMA_DIGESTS.clear()
    _SCHEMA_DIGESTS[id(schema)] = (schema, digest)
    return digest
