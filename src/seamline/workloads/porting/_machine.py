"""The porting workflow as data: its transition table, the inbox of outside messages, and the
gates in front of its side effects.

The runner, the summary, the tests and the README read these same literals. Guards keep the
table honest about data: no move to ``rejected`` or ``cancelled`` without a reason code, no
``scheduled`` without the donor's reference and a slot, no ``completed`` without its instant.
Each state declares what happens when its step fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from seamline.boundary import PolicyVerifier, load_policy
from seamline.patterns import EscalateOnFailure, Gate, Retry, StateMachine

__all__ = [
    "AGENT",
    "CANCELLABLE",
    "CUTOVER_GATE",
    "DONOR_TIMEOUT",
    "ESCALATION_SLA",
    "INBOX",
    "KIND",
    "MACHINE",
    "MAX_CUTOVERS",
    "MAX_SUBMISSIONS",
    "OUTBOX",
    "POLICY",
    "SUBMIT_GATE",
    "TERMINAL",
]

KIND = "porting"
TERMINAL = ("completed", "rejected", "cancelled")
AGENT = "porting-agent"
OUTBOX = "porting-outbox"
DONOR_TIMEOUT = timedelta(days=5)
ESCALATION_SLA = timedelta(hours=48)
MAX_SUBMISSIONS = 2
MAX_CUTOVERS = 2
CANCELLABLE = frozenset(
    {
        "requested",
        "intake_review",
        "validated",
        "submitted_to_donor",
        "donor_escalated",
        "scheduled",
    }
)


def _needs(*keys: str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], bool]:
    """A guard: the move's patch must carry these keys (e.g. no rejection without a reason)."""
    return lambda data, patch: all(patch.get(k) for k in keys)


MACHINE = StateMachine(
    kind=KIND,
    initial="requested",
    transitions={
        "requested": frozenset({"validated", "intake_review", "cancelled"}),
        "intake_review": frozenset({"validated", "rejected", "cancelled"}),
        "validated": frozenset({"submitted_to_donor", "cancelled"}),
        "submitted_to_donor": frozenset({"scheduled", "rejected", "donor_escalated", "cancelled"}),
        "donor_escalated": frozenset({"validated", "scheduled", "rejected", "cancelled"}),
        "scheduled": frozenset({"cutting_over", "scheduled", "cancelled"}),
        "cutting_over": frozenset({"completed", "scheduled", "rejected", "cutover_stuck"}),
        "cutover_stuck": frozenset({"completed", "rejected"}),
    },
    terminal=frozenset(TERMINAL),
    guards={
        **{(s, "cancelled"): _needs("reason") for s in CANCELLABLE},
        **{
            (s, "rejected"): _needs("reason")
            for s in ("intake_review", "submitted_to_donor", "donor_escalated", "cutting_over")
        },
        ("cutover_stuck", "rejected"): _needs("reason"),
        ("requested", "validated"): _needs("request"),
        ("intake_review", "validated"): _needs("request"),
        ("validated", "submitted_to_donor"): _needs("submission"),
        ("submitted_to_donor", "scheduled"): _needs("donor_ref", "cutover_at"),
        ("donor_escalated", "scheduled"): _needs("donor_ref", "cutover_at"),
        ("scheduled", "scheduled"): _needs("cutover_at"),
        ("cutting_over", "scheduled"): _needs("cutover_at"),
        ("cutting_over", "completed"): _needs("completed_at"),
    },
    on_failure={
        "requested": Retry(3, timedelta(minutes=5)),  # model or store trouble, then a person
        "validated": Retry(5, timedelta(minutes=15)),  # the donor's API may be down a while
        "cutting_over": Retry(3, timedelta(minutes=10)),
        "submitted_to_donor": EscalateOnFailure(),
        "donor_escalated": EscalateOnFailure(),
        "intake_review": EscalateOnFailure(),
    },
)

INBOX = StateMachine(
    kind="porting-inbox",
    initial="queued",
    transitions={"queued": frozenset({"delivered", "ignored"})},
    terminal=frozenset({"delivered", "ignored"}),
)
"""Messages from outside parties: delivered (they moved the port row) or ignored (with why)."""

POLICY = load_policy(Path(__file__).parent / "policies" / "porting-cutover-2026.11.yaml")
CUTOVER_GATE = Gate(
    "cutover",
    roles={"cutover": frozenset({AGENT})},
    policy=PolicyVerifier(POLICY, name="policy:porting-cutover"),
)
SUBMIT_GATE = Gate("donor-submission", roles={"submit_port": frozenset({AGENT})})
