"""Verdicts, the reject signal, and the verifier protocol.

A verifier is deterministic: the same candidate and context always give the same verdict,
and it never calls a model. A reject names who rejected, under which rule and policy version,
why (a machine-readable code), where (the offending field), what would fix it, and whether a
new proposal can help at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from seamline import codec
from seamline.models import Message

__all__ = [
    "Accept",
    "Reject",
    "RejectSignal",
    "Verdict",
    "VerifyContext",
    "Verifier",
]

C_contra = TypeVar("C_contra", contravariant=True)
I = TypeVar("I")  # noqa: E741 - the input type


@dataclass(frozen=True, slots=True)
class Accept:
    """The candidate passed this verifier. ``flags`` mark it for review without blocking it
    (e.g. a discount above a warning threshold, sampled for human review)."""

    verifier: str
    flags: tuple[str, ...] = ()
    policy_version: str | None = None
    kind: Literal["accept"] = "accept"


@dataclass(frozen=True, slots=True)
class Reject:
    """The candidate failed this verifier."""

    verifier: str
    rule_id: str
    reason_code: str
    message: str
    hint: str
    retryable: bool
    field: str | None = None
    policy_version: str | None = None
    kind: Literal["reject"] = "reject"


Verdict = Accept | Reject


@dataclass(frozen=True, slots=True)
class RejectSignal:
    """What the proposer is told after a rejected attempt. Its status is always
    ``rejected``: a rejected action is never reported as done."""

    boundary: str
    attempt: int
    rejects: tuple[Reject, ...]
    status: Literal["rejected"] = "rejected"

    @property
    def retry_can_help(self) -> bool:
        return all(r.retryable for r in self.rejects)

    def as_payload(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "boundary": self.boundary,
            "attempt": self.attempt,
            "retry_can_help": self.retry_can_help,
            "rejects": [
                {
                    "verifier": r.verifier,
                    "rule_id": r.rule_id,
                    "reason_code": r.reason_code,
                    "field": r.field,
                    "message": r.message,
                    "hint": r.hint,
                    "retryable": r.retryable,
                    "policy_version": r.policy_version,
                }
                for r in self.rejects
            ],
        }

    def as_message(self) -> Message:
        """The signal as the next user message: canonical JSON the model can reason about."""
        return Message("user", codec.encode(self.as_payload()))


@dataclass(frozen=True, slots=True)
class VerifyContext(Generic[I]):
    """What a verifier may look at besides the candidate."""

    boundary: str
    run_id: str
    input: I
    attempt: int
    now: datetime
    tenant: str | None = None
    untrusted: Mapping[str, str] = field(default_factory=dict)
    """Free text from untrusted data (customer notes, tickets) that reached the prompt."""


class Verifier(Protocol[C_contra]):
    """A deterministic check of a candidate. Never a model call."""

    @property
    def name(self) -> str: ...

    def verify(self, candidate: C_contra, ctx: VerifyContext[Any]) -> Verdict: ...


def first_reject(verdicts: Sequence[Verdict]) -> Reject | None:
    return next((v for v in verdicts if isinstance(v, Reject)), None)
