"""Context management: when a proposer's history grows past a threshold, summarise it.

Summarising is an explicit step with a record: the boundary writes a ``context_summarised``
event with how many messages and tokens were replaced and the hash of what was dropped, so a
replay can see exactly what the model was shown.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from seamline import codec
from seamline.errors import ConfigError
from seamline.models import Message

__all__ = ["ContextPolicy", "RejectDigest", "Summariser", "estimate_tokens"]


def estimate_tokens(messages: Sequence[Message], *, chars_per_token: float = 4.0) -> int:
    """A provider-independent estimate: characters / 4, plus a little per message."""
    return sum(math.ceil(len(m.content) / chars_per_token) + 4 for m in messages)


class Summariser(Protocol):
    async def summarise(self, messages: Sequence[Message]) -> str: ...


class RejectDigest:
    """A deterministic summariser: keeps every reject's code, field and hint, drops the rest.

    What a proposer most needs from its history is what was refused and why.
    """

    async def summarise(self, messages: Sequence[Message]) -> str:
        lines = []
        for m in messages:
            if m.role != "user" or '"status":"rejected"' not in m.content:
                continue
            try:
                signal = codec.decode(m.content)
            except Exception:  # not a signal after all; nothing to keep
                continue
            for r in signal.get("rejects", []):
                lines.append(
                    f"- attempt {signal.get('attempt')}: {r.get('reason_code')} "
                    f"on {r.get('field')}: {r.get('hint')}"
                )
        body = "\n".join(lines) if lines else "- (no rejects in the summarised part)"
        return f"Summary of earlier attempts (all rejected, none done):\n{body}"


@dataclass(frozen=True)
class ContextPolicy:
    """Summarise when the estimated prompt passes ``max_tokens``, keeping the leading
    ``keep_head`` messages (system prompt and task) and the last ``keep_tail``."""

    max_tokens: int
    keep_head: int = 2
    keep_tail: int = 2
    summariser: Summariser = field(default_factory=RejectDigest)

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.keep_head < 0 or self.keep_tail < 0:
            raise ConfigError("context policy limits must be positive")

    def needs_summary(self, messages: Sequence[Message]) -> bool:
        middle = len(messages) - self.keep_head - self.keep_tail
        return middle > 0 and estimate_tokens(messages) > self.max_tokens

    async def compact(self, messages: Sequence[Message]) -> tuple[list[Message], dict[str, object]]:
        """The compacted history and the record of what was replaced."""
        head = list(messages[: self.keep_head])
        tail = list(messages[len(messages) - self.keep_tail :]) if self.keep_tail else []
        middle = list(messages[self.keep_head : len(messages) - self.keep_tail])
        summary = await self.summariser.summarise(middle)
        compacted = [*head, Message("user", summary), *tail]
        record: dict[str, object] = {
            "replaced_messages": len(middle),
            "tokens_before": estimate_tokens(messages),
            "tokens_after": estimate_tokens(compacted),
            "replaced_hash": _hash(middle),
        }
        return compacted, record


def _hash(messages: Sequence[Message]) -> str:
    text = codec.encode([[m.role, m.content] for m in messages])
    return hashlib.sha256(text.encode()).hexdigest()[:32]
