"""Deterministic Python rules and state-transition predicates as verifiers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from seamline.boundary._verdicts import Accept, Reject, Verdict, VerifyContext

__all__ = ["Rule", "TransitionVerifier"]

C = TypeVar("C")


@dataclass(frozen=True)
class Rule(Generic[C]):
    """A named predicate: ``check(candidate, ctx)`` True means the candidate passes.

    Keep ``check`` pure and deterministic; it must not call a model or the network.
    """

    id: str
    check: Callable[[C, VerifyContext[Any]], bool]
    reason_code: str
    hint: str
    field: str | None = None
    retryable: bool = True
    message: str | None = None

    @property
    def name(self) -> str:
        return f"rule:{self.id}"

    def verify(self, candidate: C, ctx: VerifyContext[Any]) -> Verdict:
        try:
            passed = self.check(candidate, ctx)
        except Exception as exc:  # a rule that cannot decide must not let the candidate through
            return Reject(
                self.name,
                self.id,
                "rule_error",
                f"rule {self.id} raised {type(exc).__name__}: {exc}",
                "fix the rule; the candidate was not accepted",
                retryable=False,
                field=self.field,
            )
        if passed:
            return Accept(self.name)
        return Reject(
            self.name,
            self.id,
            self.reason_code,
            self.message or f"rule {self.id} failed",
            self.hint,
            self.retryable,
            self.field,
        )


@dataclass(frozen=True)
class TransitionVerifier(Generic[C]):
    """Checks a proposed state move against a transition table ``{from: {to, ...}}``.

    ``current`` reads the state the instance is in (from the verify context's input);
    ``proposed`` reads the state the candidate asks for.
    """

    table: Mapping[str, frozenset[str]]
    current: Callable[[VerifyContext[Any]], str]
    proposed: Callable[[C], str]
    field: str = "to"
    name: str = "transition"

    def verify(self, candidate: C, ctx: VerifyContext[Any]) -> Verdict:
        source, target = self.current(ctx), self.proposed(candidate)
        allowed = self.table.get(source)
        if allowed is None:
            return Reject(
                self.name,
                "transition.unknown_state",
                "unknown_state",
                f"current state {source!r} is not in the transition table",
                "the instance is in a state this workflow does not know",
                retryable=False,
                field=self.field,
            )
        if target not in allowed:
            return Reject(
                self.name,
                "transition.illegal",
                "illegal_transition",
                f"{source!r} -> {target!r} is not allowed",
                f"from {source!r} choose one of {sorted(allowed)}",
                retryable=True,
                field=self.field,
            )
        return Accept(self.name)
