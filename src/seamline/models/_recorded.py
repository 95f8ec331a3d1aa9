"""A model that replays recorded outputs, keyed by (boundary, input, attempt).

Recovery replay uses it to reproduce a run exactly: nothing is asked of a live model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from seamline.models._types import ModelError, ModelRequest, ModelResponse

__all__ = ["RecordedModel", "RecordingKey"]

RecordingKey = tuple[str, str, int]
"""(boundary name, input key, attempt number)."""


class RecordedModel:
    """Answers each request with the response recorded for its boundary, input and attempt."""

    def __init__(
        self, recordings: Mapping[RecordingKey, ModelResponse], *, name: str = "recorded"
    ) -> None:
        self._recordings = dict(recordings)
        self._name = name

    @classmethod
    def from_items(cls, items: Iterable[tuple[RecordingKey, ModelResponse]]) -> RecordedModel:
        return cls(dict(items))

    @property
    def name(self) -> str:
        return self._name

    def __len__(self) -> int:
        return len(self._recordings)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        meta = request.metadata
        try:
            key = (meta["boundary"], meta["input"], int(meta["attempt"]))
        except (KeyError, ValueError) as exc:
            raise ModelError(
                "a recorded model needs request metadata boundary, input and attempt; "
                f"got {dict(meta)}",
                code="not_recorded",
                retryable=False,
                model=self._name,
            ) from exc
        response = self._recordings.get(key)
        if response is None:
            raise ModelError(
                f"no recorded output for boundary {key[0]!r}, input {key[1]!r}, attempt "
                f"{key[2]}; the run being replayed never made this call",
                code="not_recorded",
                retryable=False,
                model=self._name,
            )
        return response
