"""The stochastic-deterministic boundary and its verifiers."""

from seamline.boundary._audit import BoundaryCounts, boundary_audit
from seamline.boundary._boundary import Boundary, Runtime, default_input_key
from seamline.boundary._injection import InjectionClassifier, InjectionFinding, normalise_text
from seamline.boundary._parse import SchemaParser, extract_json
from seamline.boundary._policy import Policy, PolicyRule, PolicyVerifier, load_policy, parse_policy
from seamline.boundary._results import (
    Attempt,
    BoundaryResult,
    Committed,
    EffectCommit,
    Escalate,
    Escalated,
    Fail,
    Failed,
    Fallback,
    ModelFailure,
    StoreCommit,
)
from seamline.boundary._rules import Rule, TransitionVerifier
from seamline.boundary._verdicts import (
    Accept,
    Reject,
    RejectSignal,
    Verdict,
    Verifier,
    VerifyContext,
)

__all__ = [
    "Accept",
    "Attempt",
    "Boundary",
    "BoundaryCounts",
    "BoundaryResult",
    "Committed",
    "EffectCommit",
    "Escalate",
    "Escalated",
    "Fail",
    "Failed",
    "Fallback",
    "InjectionClassifier",
    "InjectionFinding",
    "ModelFailure",
    "Policy",
    "PolicyRule",
    "PolicyVerifier",
    "Reject",
    "RejectSignal",
    "Rule",
    "Runtime",
    "SchemaParser",
    "StoreCommit",
    "TransitionVerifier",
    "Verdict",
    "Verifier",
    "VerifyContext",
    "boundary_audit",
    "default_input_key",
    "extract_json",
    "load_policy",
    "normalise_text",
    "parse_policy",
]
