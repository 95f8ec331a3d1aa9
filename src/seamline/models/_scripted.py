"""A model that answers from a script: for tests of what a boundary does with given outputs."""

from __future__ import annotations

from collections.abc import Iterable

from seamline.models._types import ModelError, ModelRequest, ModelResponse, Usage

__all__ = ["ScriptedModel"]


class ScriptedModel:
    """Returns the scripted outputs in order (a :class:`ModelError` in the script is raised);
    the last entry repeats. Every request is kept in ``requests`` for assertions."""

    def __init__(
        self,
        script: Iterable[str | ModelError],
        *,
        name: str = "sim:scripted",
        version: str = "v1",
        finish_reason: str = "stop",
    ) -> None:
        self._script = list(script)
        if not self._script:
            raise ValueError("a scripted model needs at least one output")
        self._name, self._version, self._finish = name, version, finish_reason
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        step = self._script[min(len(self.requests), len(self._script)) - 1]
        if isinstance(step, ModelError):
            raise step
        prompt_chars = sum(len(m.content) for m in request.messages)
        return ModelResponse(
            text=step,
            model=self._name,
            model_version=self._version,
            usage=Usage(prompt_chars // 4 + 1, len(step) // 4 + 1),
            latency_ms=0.0,
            finish_reason=self._finish,
            simulated=self._name.startswith("sim:"),
        )
