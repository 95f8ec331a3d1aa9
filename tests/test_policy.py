"""Policy as code: loading YAML and TOML, clear errors for bad files, and rule semantics."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from seamline.boundary import Accept, PolicyVerifier, Reject, VerifyContext, load_policy
from seamline.errors import ConfigError

YAML = """
policy: renewal-offers
version: "2026.11.1"
rules:
  - {id: discount.hard_cap, field: discount, max: 0.30, hint: offer at most 30% off}
  - {id: discount.review, field: discount, warn_above: 0.20}
  - {id: term.allowed, field: term_months, allow: [12, 24]}
  - {id: message.claims, field: message, deny_contains: [guaranteed, free forever]}
  - {id: plan.required, field: offer.plan, required: true}
tenants:
  enterprise:
    discount.hard_cap: {max: 0.35}
"""

TOML = """
policy = "renewal-offers"
version = "2026.11.1"

[[rules]]
id = "discount.hard_cap"
field = "discount"
max = 0.30
"""


def ctx(tenant: str | None = None) -> VerifyContext[None]:
    return VerifyContext("b", "run", None, 1, datetime(2026, 1, 1, tzinfo=UTC), tenant)


def candidate(**patch: object) -> dict[str, object]:
    return {
        "discount": Decimal("0.10"),
        "term_months": 12,
        "message": "Renew with us.",
        "offer": {"plan": "fiber"},
        **patch,
    }


@pytest.fixture
def verifier(tmp_path: Path) -> PolicyVerifier:
    path = tmp_path / "policy.yaml"
    path.write_text(YAML)
    return PolicyVerifier(load_policy(path))


def test_yaml_and_toml_load_to_the_same_rule(tmp_path: Path) -> None:
    """The same rule written in YAML or TOML loads identically."""
    (tmp_path / "p.yaml").write_text(YAML)
    (tmp_path / "p.toml").write_text(TOML)
    yaml_rule = load_policy(tmp_path / "p.yaml").rules[0]
    toml_rule = load_policy(tmp_path / "p.toml").rules[0]
    assert (
        (yaml_rule.id, yaml_rule.max)
        == (toml_rule.id, toml_rule.max)
        == ("discount.hard_cap", Decimal("0.3"))
    )


def test_in_policy_candidate_is_accepted_with_the_version(verifier: PolicyVerifier) -> None:
    """A candidate within every rule is accepted and the verdict names the policy version."""
    verdict = verifier.verify(candidate(), ctx())
    assert verdict == Accept("policy:renewal-offers", (), "2026.11.1")


@pytest.mark.parametrize(
    ("patch", "rule", "code"),
    [
        ({"discount": Decimal("0.9")}, "discount.hard_cap", "above_max"),
        ({"term_months": 36}, "term.allowed", "not_allowed"),
        ({"message": "Savings GUARANTEED"}, "message.claims", "forbidden_text"),
        ({"offer": {}}, "plan.required", "required_missing"),
        ({"discount": "lots"}, "discount.hard_cap", "not_a_number"),
        ({"discount": True}, "discount.hard_cap", "not_a_number"),
    ],
)
def test_each_rule_kind_rejects_with_its_code(
    verifier: PolicyVerifier, patch: dict[str, object], rule: str, code: str
) -> None:
    """Caps, allow lists, forbidden text and required fields each reject with a reason code,
    the offending field and the policy version."""
    verdict = verifier.verify(candidate(**patch), ctx())
    assert isinstance(verdict, Reject)
    assert (verdict.rule_id, verdict.reason_code, verdict.policy_version) == (
        rule,
        code,
        "2026.11.1",
    )


def test_warn_threshold_accepts_and_flags(verifier: PolicyVerifier) -> None:
    """Above the warn line the candidate is accepted with a review flag."""
    verdict = verifier.verify(candidate(discount=Decimal("0.25")), ctx())
    assert isinstance(verdict, Accept)
    assert verdict.flags == ("discount.review:above:0.2",)  # YAML reads 0.20 as 0.2


def test_tenant_override_applies_only_to_that_tenant(verifier: PolicyVerifier) -> None:
    """The enterprise cap of 35% admits 33% for that tenant only."""
    assert isinstance(
        verifier.verify(candidate(discount=Decimal("0.33")), ctx("enterprise")), Accept
    )
    assert isinstance(verifier.verify(candidate(discount=Decimal("0.33")), ctx("smb")), Reject)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policy: x\nversion: '1'\nrules: [{id: r, field: f}]", "checks nothing"),
        ("policy: x\nversion: '1'\nrules: [{id: r, field: f, max: 1, min: 2}]", "above max"),
        ("policy: x\nversion: '1'\nrules: [{id: r, field: f, max: 1, colour: red}]", "colour"),
        ("policy: x\nrules: []", "version"),
        (
            "policy: x\nversion: '1'\nrules: [{id: r, field: f, max: 1}]\n"
            "tenants: {t: {nope: {max: 2}}}",
            "unknown rule 'nope'",
        ),
        ("policy: [unclosed", "not valid YAML"),
    ],
)
def test_bad_policy_files_are_explained(tmp_path: Path, text: str, message: str) -> None:
    """A malformed policy is a ConfigError that names what is wrong."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)


def test_missing_policy_file_is_explained(tmp_path: Path) -> None:
    """A policy path that does not exist says so."""
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "none.yaml")
