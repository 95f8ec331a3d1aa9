"""Models behind one small protocol: OpenAI-compatible endpoints, Anthropic, a seeded
simulated model and a recorded model for replay."""

import importlib
from typing import Any

from seamline.models._recorded import RecordedModel, RecordingKey
from seamline.models._scripted import ScriptedModel
from seamline.models._simulated import (
    PROFILES,
    Behaviour,
    FixedBehaviour,
    SimProfile,
    SimulatedModel,
    find_injected_instruction,
)
from seamline.models._types import (
    Message,
    Model,
    ModelError,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
    prompt_hash,
)

_PROVIDERS = {
    "ANTHROPIC_BASE_URL": "seamline.models._anthropic",
    "AnthropicModel": "seamline.models._anthropic",
    "OPENAI_BASE_URL": "seamline.models._openai",
    "OpenAIChatModel": "seamline.models._openai",
}


def __getattr__(name: str) -> Any:
    # The providers import their SDKs (about half a second); load them when first used.
    module = _PROVIDERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ANTHROPIC_BASE_URL",
    "AnthropicModel",
    "Behaviour",
    "FixedBehaviour",
    "Message",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "OPENAI_BASE_URL",
    "OpenAIChatModel",
    "PROFILES",
    "RecordedModel",
    "RecordingKey",
    "ScriptedModel",
    "SimProfile",
    "SimulatedModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "find_injected_instruction",
    "prompt_hash",
]
