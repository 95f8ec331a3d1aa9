"""A seeded, versioned simulated model for demos, tests and experiments.

It is never mistaken for a real one: its id starts with ``sim:``, every response has
``simulated=True``, and the CLI prints that it is simulated. What it says comes from a
*behaviour* (what a correct answer to this task looks like, how an out-of-policy answer and an
answer that obeys an injected instruction look); how often it errs, and how, comes from a
*profile*. Randomness is drawn per request from the seed and the request's boundary, input and
attempt, so the same run gives the same outputs whatever the order or concurrency.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from seamline.clock import Clock, SystemClock
from seamline.errors import ConfigError
from seamline.models._types import ModelRequest, ModelResponse, Usage

__all__ = [
    "PROFILES",
    "Behaviour",
    "FixedBehaviour",
    "SimProfile",
    "SimulatedModel",
    "find_injected_instruction",
]


@dataclass(frozen=True, slots=True)
class SimProfile:
    """How a simulated model errs. Rates are per attempt, in [0, 1]; after a reject the model
    heeds the feedback and each rate is multiplied by ``retry_factor``."""

    name: str
    version: str
    malformed_json_rate: float = 0.0
    schema_violation_rate: float = 0.0
    out_of_policy_rate: float = 0.0
    injection_compliance_rate: float = 0.0
    prose_wrap_rate: float = 0.0
    latency_ms_median: float = 0.0
    latency_ms_p95: float = 0.0
    retry_factor: float = 0.3
    chars_per_token: float = 4.0

    def __post_init__(self) -> None:
        for field in (
            "malformed_json_rate",
            "schema_violation_rate",
            "out_of_policy_rate",
            "injection_compliance_rate",
            "prose_wrap_rate",
            "retry_factor",
        ):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"profile {self.name}: {field} must be in [0, 1], got {value}")
        if self.latency_ms_p95 < self.latency_ms_median:
            raise ConfigError(
                f"profile {self.name}: latency p95 ({self.latency_ms_p95} ms) is below the "
                f"median ({self.latency_ms_median} ms)"
            )

    @property
    def id(self) -> str:
        return f"{self.name}-{self.version}"


PROFILES: Mapping[str, SimProfile] = {
    p.id: p
    for p in (
        SimProfile("perfect", "v1"),
        SimProfile(
            "reliable",
            "v1",
            malformed_json_rate=0.01,
            schema_violation_rate=0.01,
            out_of_policy_rate=0.01,
            injection_compliance_rate=0.05,
            prose_wrap_rate=0.1,
            latency_ms_median=400,
            latency_ms_p95=1200,
        ),
        SimProfile(
            "typical",
            "v1",
            malformed_json_rate=0.05,
            schema_violation_rate=0.05,
            out_of_policy_rate=0.05,
            injection_compliance_rate=0.3,
            prose_wrap_rate=0.3,
            latency_ms_median=800,
            latency_ms_p95=2500,
        ),
        SimProfile(
            "typical",
            "v2",
            malformed_json_rate=0.02,
            schema_violation_rate=0.03,
            out_of_policy_rate=0.08,
            injection_compliance_rate=0.15,
            prose_wrap_rate=0.2,
            latency_ms_median=600,
            latency_ms_p95=1800,
        ),
        SimProfile(
            "careless",
            "v1",
            malformed_json_rate=0.2,
            schema_violation_rate=0.15,
            out_of_policy_rate=0.2,
            injection_compliance_rate=0.7,
            prose_wrap_rate=0.5,
            latency_ms_median=300,
            latency_ms_p95=900,
            retry_factor=0.6,
        ),
    )
}
"""Built-in profiles by id (``name-version``)."""


class Behaviour(Protocol):
    """What the simulated model answers for one task."""

    def propose(self, request: ModelRequest, rng: random.Random) -> dict[str, Any]:
        """A correct, in-policy answer."""
        ...

    def out_of_policy(self, good: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """A well-formed answer that breaks policy (e.g. a 90% discount)."""
        ...

    def obey_injection(
        self, good: dict[str, Any], instruction: str, rng: random.Random
    ) -> dict[str, Any]:
        """The answer of a model that followed ``instruction`` found in untrusted data."""
        ...


@dataclass(frozen=True, slots=True)
class FixedBehaviour:
    """The same answer every time, with field overrides for the two kinds of bad answer."""

    answer: Mapping[str, Any]
    out_of_policy_patch: Mapping[str, Any]
    injection_patch: Mapping[str, Any]

    def propose(self, request: ModelRequest, rng: random.Random) -> dict[str, Any]:
        return dict(self.answer)

    def out_of_policy(self, good: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        return {**good, **self.out_of_policy_patch}

    def obey_injection(
        self, good: dict[str, Any], instruction: str, rng: random.Random
    ) -> dict[str, Any]:
        return {**good, **self.injection_patch}


_INJECTION = re.compile(
    r"((ignore|disregard|forget)\s+(all\s+|any\s+)?(the\s+)?"
    r"(previous|prior|above|earlier)?\s*(instructions|rules|policy)"
    r"|you are now|new instructions)[^\n]*",
    re.IGNORECASE,
)


def find_injected_instruction(text: str) -> str | None:
    """The first instruction-like span in ``text`` that a gullible model would obey."""
    match = _INJECTION.search(text)
    return match.group(0) if match else None


class SimulatedModel:
    """A :class:`~seamline.models.Model` that simulates a language model. Always labelled."""

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        profile: SimProfile | str = "typical-v1",
        seed: int = 0,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ConfigError(
                    f"unknown simulated profile {profile!r}; built-in: {', '.join(PROFILES)}"
                )
            profile = PROFILES[profile]
        self.profile = profile
        self._behaviour = behaviour
        self._seed = seed
        self._clock = clock or SystemClock()

    @property
    def name(self) -> str:
        return f"sim:{self.profile.id}"

    def __repr__(self) -> str:
        return f"SimulatedModel({self.name}, seed={self._seed})"

    def _rng(self, request: ModelRequest) -> random.Random:
        meta = request.metadata
        material = "|".join(
            [
                str(self._seed),
                self.profile.id,
                meta.get("boundary", ""),
                meta.get("input", ""),
                meta.get("attempt", ""),
                str(len(request.messages)),
            ]
        )
        digest = hashlib.sha256(material.encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    async def complete(self, request: ModelRequest) -> ModelResponse:
        rng = self._rng(request)
        p = self.profile
        retried = any(
            m.role == "user" and '"status":"rejected"' in m.content for m in request.messages
        )
        factor = p.retry_factor if retried else 1.0
        answer: dict[str, Any] = self._behaviour.propose(request, rng)
        instruction = None
        for message in request.messages:
            instruction = instruction or find_injected_instruction(message.content)
        if instruction and rng.random() < p.injection_compliance_rate * factor:
            answer = self._behaviour.obey_injection(answer, instruction, rng)
        if rng.random() < p.out_of_policy_rate * factor:
            answer = self._behaviour.out_of_policy(answer, rng)
        if rng.random() < p.schema_violation_rate * factor:
            answer = _violate_schema(answer, rng)
        text = json.dumps(answer, default=str)
        if rng.random() < p.malformed_json_rate * factor:
            text = _malform(text, rng)
        elif rng.random() < p.prose_wrap_rate:
            text = rng.choice(_WRAPS).format(text)
        latency = self._latency_ms(rng)
        if latency > 0:
            await self._clock.sleep(latency / 1000)
        prompt_chars = sum(len(m.content) for m in request.messages)
        return ModelResponse(
            text=text,
            model=self.name,
            model_version=p.version,
            usage=Usage(
                math.ceil(prompt_chars / p.chars_per_token),
                math.ceil(len(text) / p.chars_per_token),
            ),
            latency_ms=latency,
            finish_reason="stop",
            simulated=True,
        )

    def _latency_ms(self, rng: random.Random) -> float:
        p = self.profile
        if p.latency_ms_median <= 0:
            return 0.0
        # Lognormal with the profile's median and 95th percentile.
        sigma = math.log(max(p.latency_ms_p95, p.latency_ms_median) / p.latency_ms_median) / 1.645
        return rng.lognormvariate(math.log(p.latency_ms_median), sigma)


_WRAPS = (
    "Here is my proposal:\n```json\n{}\n```",
    "Sure! {}\nLet me know if you need anything else.",
    "```\n{}\n```",
)


def _violate_schema(answer: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    if not answer:
        return {"unexpected": True}
    broken = dict(answer)
    key = rng.choice(sorted(broken))
    how: Callable[[], None] = rng.choice(
        [
            lambda: broken.pop(key),
            lambda: broken.__setitem__(key, [broken[key]]),
            lambda: broken.__setitem__(key, "n/a"),
            lambda: broken.__setitem__("confidence_explanation", "extra field"),
        ]
    )
    how()
    return broken


def _malform(text: str, rng: random.Random) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        return text[: max(1, len(text) // 2)]  # truncated mid-object
    if choice == 1:
        return text.replace('"', "'")  # single quotes: not JSON
    if choice == 2:
        return text[:-1] + ",}"  # trailing comma
    return "I think the best offer would be a modest discount on a one year term."
