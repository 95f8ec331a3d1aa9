"""The conversational plan-change support assistant: a customer asks in chat to change their
plan, and the assistant answers within a latency budget per turn.

``seamline support run`` drives it; the pieces are importable for tests and experiments.
Customers, their messages, the account systems and the default model are SIMULATED.
"""

from seamline.workloads.support._assistant import (
    ASSISTANT,
    CHANGES_STREAM,
    FALLBACK_REPLIES,
    Answered,
    FallbackReason,
    SupportAssistant,
    TurnFallback,
    TurnOutcome,
    change_gate,
)
from seamline.workloads.support._chat import (
    MAX_TURNS,
    SCENARIOS,
    Conversation,
    next_message,
    plan_conversations,
)
from seamline.workloads.support._domain import (
    AccountFacts,
    Eligibility,
    Plan,
    Quote,
    SupportAction,
    TurnInput,
    ineligible_reason,
    is_confirmation,
    terms_of,
)
from seamline.workloads.support._job import SupportSummary, job_id, run_support, summarise
from seamline.workloads.support._lookups import Lookups, SimulatedSystems, lookup_gate
from seamline.workloads.support._reply import (
    BOUNDARY,
    LatencyBudget,
    TurnLatency,
    load_support_policy,
    reply_boundary,
)
from seamline.workloads.support._simulated import PROFILE, SimulatedSupportModel, SupportBehaviour

ADR = "\n".join(
    (
        "1. Runtime class: conversational",
        "2. Spine: none (no long pauses or waits on the outside world; state reconstructible "
        "from the original input; the world cannot change during a pause; the log need not be "
        "the truth)",
        "3. Coordination: P1 hierarchical delegation (single owner, deterministic merge)",
        "4. Control: P4 supervisor + gate before every side effect",
        "5. Build sequence: state schema and console -> gate and audit -> orchestrator and one "
        "worker -> the other workers",
        "6. Date and model: 2026-11-21; sim:typical-v2",
    )
)

__all__ = [
    "ADR",
    "ASSISTANT",
    "AccountFacts",
    "Answered",
    "BOUNDARY",
    "CHANGES_STREAM",
    "Conversation",
    "Eligibility",
    "FALLBACK_REPLIES",
    "FallbackReason",
    "LatencyBudget",
    "Lookups",
    "MAX_TURNS",
    "PROFILE",
    "Plan",
    "Quote",
    "SCENARIOS",
    "SimulatedSupportModel",
    "SimulatedSystems",
    "SupportAction",
    "SupportAssistant",
    "SupportBehaviour",
    "SupportSummary",
    "TurnFallback",
    "TurnInput",
    "TurnLatency",
    "TurnOutcome",
    "change_gate",
    "ineligible_reason",
    "is_confirmation",
    "job_id",
    "load_support_policy",
    "lookup_gate",
    "next_message",
    "plan_conversations",
    "reply_boundary",
    "run_support",
    "summarise",
    "terms_of",
]
