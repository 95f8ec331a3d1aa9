"""Policy as code: versioned rules in a YAML or TOML file, checked deterministically.

A policy file names itself, carries a version, and lists rules over the candidate's fields::

    policy: renewal-offers
    version: "2026.11.1"
    rules:
      - id: discount.hard_cap
        field: discount
        max: 0.30
        hint: offer at most 30% off
      - id: discount.review
        field: discount
        warn_above: 0.20          # accept, but flag for sampled human review
      - id: term.allowed
        field: term_months
        allow: [12, 24]
      - id: message.claims
        field: message
        deny_contains: ["guaranteed", "free forever"]
    tenants:
      enterprise:
        discount.hard_cap: {max: 0.35}

Each verdict carries the policy's version, so an audit can say which rules were in force.
A malformed file is a :class:`~seamline.errors.ConfigError` naming the rule and the problem.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pydantic
import yaml

from seamline.boundary._injection import normalise_text
from seamline.boundary._verdicts import Accept, Reject, Verdict, VerifyContext
from seamline.errors import ConfigError

__all__ = ["Policy", "PolicyRule", "PolicyVerifier", "load_policy"]


class PolicyRule(pydantic.BaseModel):
    """One rule over one field. Set any combination of the checks."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    id: str = pydantic.Field(min_length=1)
    field: str = pydantic.Field(min_length=1)
    max: Decimal | None = None
    min: Decimal | None = None
    warn_above: Decimal | None = None
    warn_below: Decimal | None = None
    allow: tuple[Any, ...] | None = None
    deny: tuple[Any, ...] | None = None
    deny_contains: tuple[str, ...] | None = None
    required: bool = False
    hint: str | None = None
    reason: str | None = None

    @pydantic.model_validator(mode="after")
    def _has_a_check(self) -> PolicyRule:
        checks = (
            self.max,
            self.min,
            self.warn_above,
            self.warn_below,
            self.allow,
            self.deny,
            self.deny_contains,
        )
        if all(c is None for c in checks) and not self.required:
            raise ValueError(
                f"rule {self.id!r} checks nothing: set max, min, warn_above, "
                "warn_below, allow, deny, deny_contains or required"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule {self.id!r}: min {self.min} is above max {self.max}")
        return self


class Policy(pydantic.BaseModel):
    """A named, versioned set of rules with per-tenant overrides."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    policy: str = pydantic.Field(min_length=1)
    version: str = pydantic.Field(min_length=1)
    rules: tuple[PolicyRule, ...]
    tenants: Mapping[str, Mapping[str, Mapping[str, Any]]] = {}

    @pydantic.model_validator(mode="after")
    def _overrides_name_rules(self) -> Policy:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError(f"rule ids must be unique, got {ids}")
        for tenant, overrides in self.tenants.items():
            for rule_id in overrides:
                if rule_id not in ids:
                    raise ValueError(
                        f"tenant {tenant!r} overrides unknown rule {rule_id!r}; known: {ids}"
                    )
        return self

    def rules_for(self, tenant: str | None) -> tuple[PolicyRule, ...]:
        """The rules in force for ``tenant``: the base rules with its overrides applied."""
        overrides = self.tenants.get(tenant or "", {})
        if not overrides:
            return self.rules
        return tuple(
            PolicyRule.model_validate({**r.model_dump(), **overrides[r.id]})
            if r.id in overrides
            else r
            for r in self.rules
        )


def load_policy(path: str | Path) -> Policy:
    """Load and validate a policy from a ``.yaml``/``.yml`` or ``.toml`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"policy file {path} is not valid {path.suffix[1:].upper()}: {exc}"
        ) from exc
    return parse_policy(raw, source=str(path))


def parse_policy(raw: Any, *, source: str = "policy") -> Policy:
    try:
        return Policy.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{source} is not a valid policy: {problems}") from exc


def _lookup(candidate: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = candidate
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


class PolicyVerifier:
    """Checks a candidate (a pydantic model or a mapping) against a :class:`Policy`."""

    def __init__(self, policy: Policy, *, name: str | None = None) -> None:
        self.policy = policy
        self._name = name or f"policy:{policy.policy}"

    @property
    def name(self) -> str:
        return self._name

    def verify(self, candidate: Any, ctx: VerifyContext[Any]) -> Verdict:
        data = (
            candidate.model_dump(mode="python")
            if isinstance(candidate, pydantic.BaseModel)
            else candidate
        )
        flags: list[str] = []
        for rule in self.policy.rules_for(ctx.tenant):
            problem = self._check(rule, data, flags)
            if problem is not None:
                return problem
        return Accept(self._name, tuple(flags), self.policy.version)

    def _reject(self, rule: PolicyRule, code: str, message: str, hint: str) -> Reject:
        return Reject(
            verifier=self._name,
            rule_id=rule.id,
            reason_code=rule.reason or code,
            message=message,
            hint=rule.hint or hint,
            retryable=True,
            field=rule.field,
            policy_version=self.policy.version,
        )

    def _check(self, rule: PolicyRule, data: Mapping[str, Any], flags: list[str]) -> Reject | None:
        present, value = _lookup(data, rule.field)
        if not present or value is None:
            if rule.required:
                return self._reject(
                    rule, "required_missing", f"{rule.field} is missing", f"set {rule.field}"
                )
            return None
        if rule.allow is not None and value not in rule.allow:
            return self._reject(
                rule,
                "not_allowed",
                f"{rule.field}={value!r} is not allowed",
                f"{rule.field} must be one of {list(rule.allow)}",
            )
        if rule.deny is not None and value in rule.deny:
            return self._reject(
                rule,
                "denied_value",
                f"{rule.field}={value!r} is denied",
                f"{rule.field} must not be {value!r}",
            )
        if rule.deny_contains is not None:
            # Normalised so zero-width characters and look-alike forms cannot hide a word.
            text = normalise_text(str(value)).casefold()
            hit = next(
                (w for w in rule.deny_contains if normalise_text(w).casefold() in text), None
            )
            if hit is not None:
                return self._reject(
                    rule,
                    "forbidden_text",
                    f"{rule.field} contains {hit!r}",
                    f"remove {hit!r} from {rule.field}",
                )
        limits = (rule.max, rule.min, rule.warn_above, rule.warn_below)
        if any(limit is not None for limit in limits):
            number = _number(value)
            if number is None or not number.is_finite():
                return self._reject(
                    rule,
                    "not_a_number",
                    f"{rule.field}={value!r} is not a finite number",
                    f"{rule.field} must be a number",
                )
            if rule.max is not None and number > rule.max:
                return self._reject(
                    rule,
                    "above_max",
                    f"{rule.field}={number} is above the maximum {rule.max}",
                    f"{rule.field} must be <= {rule.max}",
                )
            if rule.min is not None and number < rule.min:
                return self._reject(
                    rule,
                    "below_min",
                    f"{rule.field}={number} is below the minimum {rule.min}",
                    f"{rule.field} must be >= {rule.min}",
                )
            if rule.warn_above is not None and number > rule.warn_above:
                flags.append(f"{rule.id}:above:{rule.warn_above}")
            if rule.warn_below is not None and number < rule.warn_below:
                flags.append(f"{rule.id}:below:{rule.warn_below}")
        return None
