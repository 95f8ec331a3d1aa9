"""The renewal job against a real OpenAI-compatible endpoint (the local test server), its
price, and the budget's 80% fallback: a simulated run falls back to the reliable simulated
profile, a real one to a person or a configured cheaper real model, never to a simulated one.
And a job whose steps keep failing exits 1, and carries on once the cause is fixed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seamline.budget import Price, PriceTable
from seamline.cli import app
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.models import Message, Model, ModelRequest, ModelResponse, OpenAIChatModel, Usage
from seamline.store import open_store
from seamline.workloads.renewal import (
    CAMPAIGN_START,
    TERMINAL,
    RenewalSummary,
    SimulatedRenewalModel,
    run_renewals,
    synthetic_cohort,
)
from seamline.workloads.renewal._agent import RenewalAgent
from seamline.workloads.renewal._offer import RenewalBehaviour
from tests._chat_server import ChatServer, Recorded, ok

COHORT = synthetic_cohort(8, seed=11)


class OfferServer(ChatServer):
    """Answers every chat completion with a correct renewal offer for the customer in the
    prompt (what the simulated model's behaviour would propose); ``garbage_first`` makes each
    contract's first attempt unparseable, so every contract needs a second one."""

    def __init__(self, *, garbage_first: bool = False, tokens: tuple[int, int] = (300, 60)):
        super().__init__()
        self.garbage_first, self.tokens = garbage_first, tokens

    def take(self, recorded: Recorded) -> Any:
        super().take(recorded)
        messages = recorded.body["messages"]
        if self.garbage_first and len(messages) == 3:
            return ok(
                "I'm not sure what you mean.",
                prompt_tokens=self.tokens[0],
                completion_tokens=self.tokens[1],
            )
        request = ModelRequest(
            messages=tuple(Message(m["role"], m["content"]) for m in messages[:3])
        )
        answer = RenewalBehaviour().propose(request, random.Random(0))
        return ok(
            json.dumps(answer),
            prompt_tokens=self.tokens[0],
            completion_tokens=self.tokens[1],
            model=recorded.body["model"],
        )

    def models(self) -> Counter[str]:
        return Counter(r.body["model"] for r in self.requests)


def serving(server: ChatServer) -> Iterator[ChatServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def server() -> Iterator[OfferServer]:
    yield from serving(OfferServer())  # type: ignore[misc]


@pytest.fixture
def picky_server() -> Iterator[OfferServer]:
    yield from serving(OfferServer(garbage_first=True))  # type: ignore[misc]


def real(server: ChatServer, name: str = "gpt-test") -> OpenAIChatModel:
    return OpenAIChatModel(
        model=name, base_url=f"{server.base_url}/v1", api_key="sk-test", max_retries=0
    )


def job(url: str, **options: Any) -> RenewalSummary:
    async def go() -> RenewalSummary:
        clock = VirtualClock(CAMPAIGN_START)
        store = open_store(url, clock=clock)
        try:
            model = options.pop("model", None)
            fallback = options.pop("fallback", None)
            return await run_renewals(
                store,
                COHORT,
                clock=clock,
                seed=7,
                model=model(clock) if callable(model) else model,
                fallback=fallback,
                **options,
            )
        finally:
            await store.close()

    return asyncio.run(go())


def proposing_models(url: str) -> Counter[str]:
    async def go() -> Counter[str]:
        store = open_store(url)
        try:
            seen: Counter[str] = Counter()
            after = 0
            while page := await store.read_events(after_seq=after, limit=5000):
                seen.update(e.payload["model"] for e in page if e.type == "proposed")
                after = page[-1].seq
            return seen
        finally:
            await store.close()

    return asyncio.run(go())


# --- a real endpoint ----------------------------------------------------------------------------


def test_cli_runs_every_contract_to_a_final_state_against_a_real_endpoint(
    server: OfferServer, tmp_path: Path
) -> None:
    """`renewals run --model openai:NAME --base-url URL --price IN/OUT` assesses every
    contract through the HTTP endpoint, ends each in a final state, prices the calls and
    exits 0."""
    url = f"sqlite:///{tmp_path}/real.db"
    result = CliRunner().invoke(
        app,
        [
            "renewals",
            "run",
            "--limit",
            str(len(COHORT)),
            "--seed",
            "11",
            "--model",
            "openai:gpt-test",
            "--base-url",
            f"{server.base_url}/v1",
            "--price",
            "2.50/10.00",
            "--store",
            url,
            "--report",
            str(tmp_path / "r.html"),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "real model gpt-test" in text and "warning: no --price" not in text
    assert "at 80% of it, hand the contract to a person" in text
    assert set(server.models()) == {"gpt-test"}
    used = proposing_models(url)
    assert set(used) == {"gpt-test"}
    calls = sum(used.values())
    expected = calls * (300 * Decimal("2.50") + 60 * Decimal("10.00")) / 1_000_000
    assert f"model cost │ {expected:.4f}" in text


def test_cli_without_a_price_counts_a_real_model_at_zero_and_says_so(
    server: OfferServer, tmp_path: Path
) -> None:
    """Without --price a real model's cost is counted as 0, with a warning; the run still
    completes (before, every assessment failed on the missing price and nothing moved)."""
    result = CliRunner().invoke(
        app,
        [
            "renewals",
            "run",
            "--limit",
            "3",
            "--model",
            "openai:gpt-test",
            "--base-url",
            f"{server.base_url}/v1",
            "--store",
            f"sqlite:///{tmp_path}/zero.db",
            "--report",
            str(tmp_path / "r.html"),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: no --price for openai:gpt-test: its cost is counted as 0" in text
    assert "model cost │ 0.0000" in text
    assert "renewed" in text


def test_cli_refuses_a_malformed_price(tmp_path: Path) -> None:
    """--price must be IN/OUT in money per million tokens: anything else exits 2, saying so."""
    result = CliRunner().invoke(
        app,
        [
            "renewals",
            "run",
            "--limit",
            "2",
            "--model",
            "openai:x",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--price",
            "cheap",
            "--store",
            f"sqlite:///{tmp_path}/p.db",
        ],
    )
    assert result.exit_code == 2
    assert "use IN/OUT" in " ".join(result.output.split())


# --- the budget's fallback ----------------------------------------------------------------------


@dataclasses.dataclass
class FixedUsage:
    """A simulated model whose every answer reports the same usage: budgets become exact."""

    inner: Model
    usage: Usage = dataclasses.field(default_factory=lambda: Usage(300, 60))

    @property
    def name(self) -> str:
        return self.inner.name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self.inner.complete(request)
        return dataclasses.replace(response, usage=self.usage)


def test_a_small_budget_falls_back_to_the_cheaper_simulated_model(tmp_path: Path) -> None:
    """With a per-contract budget of 400 tokens and 360 a call, a contract's second model call
    comes after the 80% line: the simulated run switches to the declared cheaper simulated
    model, the summary counts each fallback, and every contract still ends in a final state."""
    url = f"sqlite:///{tmp_path}/f.db"
    careless = lambda clock: FixedUsage(  # noqa: E731
        SimulatedRenewalModel("careless-v1", seed=7, clock=clock)
    )
    s = job(url, model=careless, budget_tokens=400)
    assert s.fallbacks["cheaper_model"] >= 2 and set(s.fallbacks) == {"cheaper_model"}
    used = proposing_models(url)
    assert used["sim:reliable-v1"] >= 1
    assert s.finished == len(COHORT)


def test_a_real_model_over_budget_goes_to_a_person_never_to_a_simulated_model(
    picky_server: OfferServer, tmp_path: Path
) -> None:
    """A real model whose first answers are unusable needs a second call per contract, past
    the 80% line of a 400-token budget: each contract goes to a person (the declared route for
    a real model), no simulated model is ever asked, and every contract still ends."""
    url = f"sqlite:///{tmp_path}/h.db"
    prices = PriceTable().with_price("gpt-test", Price(Decimal(0), Decimal(0)))
    s = job(url, model=real(picky_server), prices=prices, budget_tokens=400)
    assert s.fallbacks == {"human": len(COHORT)}
    assert set(proposing_models(url)) == {"gpt-test"}
    assert s.escalations >= len(COHORT)
    assert s.finished == len(COHORT)


def test_a_real_model_falls_back_to_a_configured_cheaper_real_model(
    picky_server: OfferServer, tmp_path: Path
) -> None:
    """With a cheaper real model configured, the contracts past the 80% line are answered by
    it, over the same endpoint."""
    url = f"sqlite:///{tmp_path}/c.db"
    free = Price(Decimal(0), Decimal(0))
    prices = PriceTable().with_price("gpt-test", free).with_price("gpt-mini", free)
    s = job(
        url,
        model=real(picky_server),
        fallback=real(picky_server, "gpt-mini"),
        prices=prices,
        budget_tokens=400,
    )
    assert s.fallbacks == {"cheaper_model": len(COHORT)}
    assert set(proposing_models(url)) == {"gpt-test", "gpt-mini"}
    assert picky_server.models()["gpt-mini"] >= len(COHORT)
    assert s.finished == len(COHORT)


def test_a_real_model_may_not_fall_back_to_a_simulated_one(tmp_path: Path) -> None:
    """Naming a simulated model as a real model's fallback is a ConfigError, before any row."""
    prices = PriceTable().with_price("gpt-test", Price(Decimal(0), Decimal(0)))
    model = OpenAIChatModel(model="gpt-test", base_url="http://127.0.0.1:9/v1", api_key="k")
    with pytest.raises(ConfigError, match="is simulated model 'sim:reliable-v1'"):
        job(
            f"sqlite:///{tmp_path}/x.db",
            model=model,
            fallback=SimulatedRenewalModel("reliable-v1"),
            prices=prices,
        )


# --- contracts that cannot finish -----------------------------------------------------------------


def _cli(tmp_path: Path) -> Any:
    return CliRunner().invoke(
        app,
        [
            "renewals",
            "run",
            "--limit",
            "4",
            "--store",
            f"sqlite:///{tmp_path}/stuck.db",
            "--report",
            str(tmp_path / "r.html"),
        ],
        terminal_width=200,
    )


def test_cli_exits_1_when_contracts_end_outside_a_final_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that keeps failing (here every assessment) is retried, then parked for a person:
    the command shows the summary and report, then exits 1 saying how many contracts stopped
    where, and why."""

    async def broken(self: RenewalAgent, ctx: Any) -> Any:
        raise RuntimeError("the model endpoint rejected the credentials")

    monkeypatch.setattr(RenewalAgent, "assess", broken)
    result = _cli(tmp_path)
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "4 of 4 contracts ended outside a final state (assessing 4)" in said
    assert "RuntimeError: the model endpoint rejected the credentials" in said
    assert "run the same command again" in said
    page = (tmp_path / "r.html").read_text()
    assert "4 contracts ended outside a final state" in page


def test_running_again_after_the_fix_carries_parked_contracts_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the cause is gone, the same command re-enters the parked contracts where they
    stopped: every one reaches a final state and the command exits 0."""

    async def broken(self: RenewalAgent, ctx: Any) -> Any:
        raise RuntimeError("the model endpoint is down")

    with monkeypatch.context() as patched:
        patched.setattr(RenewalAgent, "assess", broken)
        assert _cli(tmp_path).exit_code == 1
    result = _cli(tmp_path)
    assert result.exit_code == 0, result.output
    assert "ended outside a final state" not in " ".join(result.output.split())

    async def states() -> Counter[str]:
        store = open_store(f"sqlite:///{tmp_path}/stuck.db")
        try:
            return Counter(r.state for r in await store.list_rows(kind="renewal", limit=10))
        finally:
            await store.close()

    reached = asyncio.run(states())
    assert sum(reached.values()) == 4 and set(reached) <= set(TERMINAL)
