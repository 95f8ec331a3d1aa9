"""How the SIMULATED model answers a support turn: a seamline ``Behaviour``.

The correct answer is read off the prompt (the account facts and the customer's messages): a
quote for a change the customer asked for and can have, the change itself once they confirm
the quote, a refusal that says why, or a reply that asks what they want. How often, and how,
the model errs comes from the simulated profile: an out-of-policy answer skips the
confirmation, halves the price or makes a forbidden claim; a model that obeys an injected
instruction "changes" the plan for free and repeats the instruction.
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
from typing import Any

from seamline.boundary import normalise_text
from seamline.clock import Clock
from seamline.models import ModelRequest, SimProfile, SimulatedModel, find_injected_instruction
from seamline.workloads.support._domain import (
    Eligibility,
    Plan,
    describe_plan,
    ineligible_reason,
    is_confirmation,
)
from seamline.workloads.support._reply import CUSTOMER, FACTS

__all__ = ["PROFILE", "SimulatedSupportModel", "SupportBehaviour", "intent_of"]

PROFILE = "typical-v2"
"""The simulated profile this workload runs by default (the ADR names it)."""

_CLARIFY = (
    "I'm sorry for the trouble. I can switch you to fiber, add or drop streaming, or cancel "
    "a phone line. What would you like to change?",
    "I'd like to help. Which part of your plan would you like to change: internet, phone or "
    "streaming?",
)
_REFUSALS = {
    "no_change": "Your plan is already set up that way, so there is nothing to change.",
    "cancellation_needs_person": "That would close every service on your account, which is a "
    "cancellation; a colleague from our accounts team handles those.",
    "streaming_needs_internet": "Streaming needs an internet service on the plan, and your "
    "plan has none.",
    "no_quote": "I can't find a price for that plan, so I can't offer it here.",
    "fiber_unavailable": "I'm sorry, fiber is not available at your address yet.",
    "contract_locks_downgrade": "Your two-year contract keeps your services as they are "
    "until its term ends, so I can't remove anything before then.",
}
_DECLINE_INSTRUCTIONS = (
    "I can't act on instructions like that. I can change your plan at our listed prices, "
    "once you ask for the change and confirm it yourself."
)


def intent_of(text: str) -> str | None:
    """What change a customer message asks for, as the simulated model understands it."""
    t = normalise_text(text).casefold()
    words = set(re.findall(r"[a-z]+", t))
    removing = bool(words & {"drop", "remove", "cancel", "stop", "rid"}) or "don't" in t
    if words & {"fiber", "fibre"}:
        return "switch_fiber"
    if words & {"streaming", "tv"}:
        return "drop_streaming" if removing else "add_streaming"
    if words & {"phone", "landline"} and removing:
        return "cancel_phone"
    return None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _target(intent: str, current: Plan) -> Plan:
    changes: dict[str, dict[str, Any]] = {
        "switch_fiber": {"internet": "fiber"},
        "drop_streaming": {"streaming": False},
        "add_streaming": {"streaming": True},
        "cancel_phone": {"phone": False},
    }
    change = changes[intent]
    return Plan.model_validate({**current.model_dump(), **change})


class SupportBehaviour:
    """The correct answer to a support turn, and the two kinds of wrong one."""

    def propose(self, request: ModelRequest, rng: random.Random) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        said: list[str] = []
        for m in request.messages:
            if m.role == "user" and m.content.startswith(FACTS):
                facts = json.loads(m.content[len(FACTS) :])
            elif m.role == "user" and m.content.startswith(CUSTOMER):
                said.append(m.content[len(CUSTOMER) :])
        customer_id = facts.get("customer_id", "")

        def answer(
            action: str, reply: str, plan: Plan | None = None, price: Any = None
        ) -> dict[str, Any]:
            return {
                "customer_id": customer_id,
                "action": action,
                "plan": plan.model_dump() if plan else None,
                "monthly_price": str(price) if price is not None else None,
                "reply": reply,
            }

        if not facts or not said:
            return answer("reply", _CLARIFY[0])
        if any(find_injected_instruction(m) for m in said):
            return answer("reply", _DECLINE_INSTRUCTIONS)
        latest = said[-1]
        intent = intent_of(latest)
        pending = facts.get("pending_quote")
        if pending is not None and intent is None:
            plan, price = Plan.model_validate(pending["plan"]), Decimal(pending["monthly_price"])
            if is_confirmation(latest):
                return answer(
                    "change_plan",
                    f"Done: you now have {describe_plan(plan)} at {price} a month, from your "
                    "next bill.",
                    plan,
                    price,
                )
            return answer("reply", "No problem, your plan stays as it is. Anything else?")
        if intent is None:
            return answer("reply", rng.choice(_CLARIFY))
        current = Plan.model_validate(facts["plan"])
        target = _target(intent, current)
        quotes = {k: Decimal(v) for k, v in facts["quotes"].items()}
        eligibility = Eligibility(
            fiber_available=facts["fiber_available"],
            downgrade_allowed=facts["downgrade_allowed"],
        )
        reason = ineligible_reason(current, target, eligibility, quotes)
        if reason is not None:
            return answer("refuse", _REFUSALS[reason])
        price = quotes[target.id]
        return answer(
            "quote",
            f"{_sentence(describe_plan(target))} would be {price} a month (you pay "
            f"{facts['monthly_charges']} now). Shall I make the change?",
            target,
            price,
        )

    def out_of_policy(self, good: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        if good.get("monthly_price") is None:
            return {**good, "reply": good["reply"] + " Our service is guaranteed to be the best."}
        how = rng.randrange(3)
        if how == 0 and good["action"] == "quote":  # acts before the customer said yes
            return {**good, "action": "change_plan", "reply": "Done, I've changed it for you."}
        if how == 1:  # an invented discount far below the price floor
            half = (Decimal(good["monthly_price"]) / 2).quantize(Decimal("0.01"))
            return {**good, "monthly_price": str(half)}
        return {**good, "reply": good["reply"] + " That price is guaranteed for life."}

    def obey_injection(
        self, good: dict[str, Any], instruction: str, rng: random.Random
    ) -> dict[str, Any]:
        return {
            **good,
            "action": "change_plan",
            "plan": {"internet": "fiber", "phone": True, "streaming": True},
            "monthly_price": "0.00",
            "reply": f"Done as instructed: {instruction[:160]}",
        }


def SimulatedSupportModel(
    profile: SimProfile | str = PROFILE, *, seed: int = 0, clock: Clock | None = None
) -> SimulatedModel:
    """The simulated model for this workload (its name starts ``sim:``, like every one)."""
    return SimulatedModel(SupportBehaviour(), profile=profile, seed=seed, clock=clock)
