"""A whole Boundary whose proposer is the OpenAI-compatible provider, over real HTTP to the
local chat server (tests/_chat_server.py): the malformed first proposal is rejected and sent
back, the second commits, and the ``proposed`` events record exactly what was served."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from seamline.boundary import Committed, Runtime
from seamline.budget import Price, PriceTable
from seamline.clock import VirtualClock
from seamline.models import Message, ModelRequest, prompt_hash
from seamline.models._openai import OpenAIChatModel
from seamline.store import SqlStore, open_store
from tests._chat_server import ChatServer, ok, serve, slow
from tests._offers import GOOD, Customer, Offer, offer_boundary

KEY = "sk-test-not-a-real-key-0123456789"
MODEL = "gpt-test"
SERVED = "gpt-test-2026-01-01"
MALFORMED = 'Here is the offer: {"customer": "c1", "discount": 0.1, "term_months": 12,'
VALID = json.dumps({**GOOD, "customer": "c1"})
PRICES = PriceTable().with_price(MODEL, Price(Decimal("0.5"), Decimal("1.5")))
SLOW_S = 0.3


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with serve() as running:
        yield running


@pytest.fixture
async def sqlite_store(sqlite_url: str, clock: VirtualClock) -> AsyncIterator[SqlStore]:
    # The provider is the point here, not the backend: the store tests cover both.
    async with open_store(sqlite_url, clock=clock) as store:
        yield store


@pytest.fixture
async def model(server: ChatServer) -> AsyncIterator[OpenAIChatModel]:
    async with OpenAIChatModel(
        model=MODEL, base_url=f"{server.base_url}/v1", api_key=KEY, timeout_s=5.0, max_retries=0
    ) as running:
        yield running


def script(server: ChatServer) -> None:
    """A malformed first answer (served slowly, so its latency is known to be at least
    SLOW_S), then a valid one; each with its own usage."""
    server.script(
        slow(SLOW_S, ok(MALFORMED, prompt_tokens=123, completion_tokens=45, model=SERVED)),
        ok(VALID, prompt_tokens=190, completion_tokens=60, model=SERVED),
    )


def sent_messages(body: Any) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in body["messages"])


async def test_a_malformed_proposal_is_rejected_and_the_next_one_commits(
    server: ChatServer, model: OpenAIChatModel, sqlite_store: SqlStore, clock: VirtualClock
) -> None:
    """The first answer is not JSON: a typed malformed_json reject, sent back over HTTP with
    the model's own text; the second answer commits exactly once."""
    script(server)
    result = await offer_boundary(model).run(
        Customer(id="c1"), runtime=Runtime(sqlite_store, clock, PRICES), run_id="run"
    )
    assert isinstance(result, Committed)
    assert result.result == {"offer_row": "offer:c1", "discount": "0.10"}
    assert [a.status for a in result.attempts] == ["rejected", "accepted"]
    [reject] = result.attempts[0].rejects
    assert (reject.verifier, reject.rule_id, reject.reason_code, reject.retryable) == (
        "schema",
        "schema.malformed_json",
        "malformed_json",
        True,
    )

    first, second = server.requests
    assert first.path == second.path == "/v1/chat/completions"
    assert first.body["model"] == MODEL
    assert first.body["response_format"]["json_schema"]["name"] == "Offer"
    assert first.body["response_format"]["json_schema"]["schema"] == Offer.model_json_schema()
    assert second.body["messages"][: len(first.body["messages"])] == first.body["messages"]
    said, told = second.body["messages"][len(first.body["messages"]) :]
    assert said == {"role": "assistant", "content": MALFORMED}
    signal = json.loads(told["content"])
    assert told["role"] == "user" and signal["status"] == "rejected"
    assert [r["reason_code"] for r in signal["rejects"]] == ["malformed_json"]

    commit = await sqlite_store.get_commit(result.key)
    assert commit is not None and commit.status == "done"
    assert len(await sqlite_store.list_rows(kind="sent_offer")) == 1


async def test_proposed_events_record_what_the_server_answered(
    server: ChatServer, model: OpenAIChatModel, sqlite_store: SqlStore, clock: VirtualClock
) -> None:
    """Each attempt's ``proposed`` event holds the raw text as served, the model id, the
    served model as model_version, the hash of the prompt actually sent, the usage the
    server reported and a measured latency; the usage rows are priced from the table."""
    script(server)
    started = time.perf_counter()
    result = await offer_boundary(model).run(
        Customer(id="c1"), runtime=Runtime(sqlite_store, clock, PRICES), run_id="run"
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert isinstance(result, Committed)

    events = await sqlite_store.read_stream(f"sdb:offer:{result.key}")
    proposed = [e for e in events if e.type == "proposed"]
    assert [e.payload["attempt"] for e in proposed] == [1, 2]
    schema = Offer.model_json_schema()
    hashes = [
        prompt_hash(ModelRequest(messages=sent_messages(r.body), json_schema=schema))
        for r in server.requests
    ]
    assert hashes[0] != hashes[1]
    served = [(MALFORMED, [123, 45]), (VALID, [190, 60])]
    for event, phash, (raw, usage) in zip(proposed, hashes, served, strict=True):
        p = event.payload
        assert (p["raw"], p["model"], p["usage"]) == (raw, MODEL, usage)
        assert (event.model_version, event.prompt_hash) == (SERVED, phash)
        assert (p["simulated"], p["finish_reason"], p["tool_calls"]) == (False, "stop", [])
        assert 0 < p["latency_ms"] < elapsed_ms
    assert proposed[0].payload["latency_ms"] >= SLOW_S * 1000

    [accepted] = [e for e in events if e.type == "accepted"]
    assert (accepted.model_version, accepted.prompt_hash) == (SERVED, hashes[1])
    totals = await sqlite_store.usage_totals("run")
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens) == (2, 313, 105)
    assert totals.cost == (Decimal(313) * Decimal("0.5") + Decimal(105) * Decimal("1.5")) / (
        1_000_000
    )
