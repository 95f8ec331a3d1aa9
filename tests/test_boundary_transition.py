"""TransitionVerifier: a proposed state move is checked against a literal transition table,
and each way it can fail is a typed reject with the fields the proposer is shown."""

from __future__ import annotations

import pydantic
import pytest

from seamline.boundary import (
    Accept,
    Boundary,
    Committed,
    Failed,
    Reject,
    Runtime,
    StoreCommit,
    TransitionVerifier,
    VerifyContext,
)
from seamline.clock import VirtualClock
from seamline.models import Message, ScriptedModel
from seamline.store import SqlStore, UnitOfWork
from tests.conftest import T0

TABLE = {
    "window_open": frozenset({"offer_sent", "escalated"}),
    "offer_sent": frozenset({"renewed", "churned"}),
    "renewed": frozenset[str](),
}


class Move(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    to: str
    reason: str = ""


class Contract(pydantic.BaseModel):
    id: str
    state: str


def verifier() -> TransitionVerifier[Move]:
    return TransitionVerifier(
        TABLE, current=lambda ctx: ctx.input.state, proposed=lambda move: move.to
    )


def ctx(state: str) -> VerifyContext[Contract]:
    return VerifyContext(
        boundary="renewal-step",
        run_id="run",
        input=Contract(id="k1", state=state),
        attempt=1,
        now=T0,
    )


@pytest.mark.parametrize(
    ("state", "to"), [("window_open", "offer_sent"), ("window_open", "escalated")]
)
def test_a_move_the_table_allows_is_accepted(state: str, to: str) -> None:
    """A target listed for the current state gives an Accept named after the verifier."""
    verdict = verifier().verify(Move(to=to), ctx(state))
    assert verdict == Accept("transition")


def test_an_illegal_move_is_a_retryable_reject_that_lists_the_allowed_targets() -> None:
    """A target the current state does not allow is rejected as illegal_transition on the
    ``to`` field, with a hint naming the legal targets, and a retry can help."""
    verdict = verifier().verify(Move(to="renewed"), ctx("window_open"))
    assert isinstance(verdict, Reject)
    assert (
        verdict.verifier,
        verdict.rule_id,
        verdict.reason_code,
        verdict.field,
        verdict.retryable,
    ) == ("transition", "transition.illegal", "illegal_transition", "to", True)
    assert verdict.message == "'window_open' -> 'renewed' is not allowed"
    assert verdict.hint == "from 'window_open' choose one of ['escalated', 'offer_sent']"


def test_a_terminal_state_allows_no_move_at_all() -> None:
    """A state with an empty target set rejects every move, and the hint says so."""
    verdict = verifier().verify(Move(to="offer_sent"), ctx("renewed"))
    assert isinstance(verdict, Reject) and verdict.reason_code == "illegal_transition"
    assert verdict.hint == "from 'renewed' choose one of []"


def test_an_unknown_current_state_is_a_reject_no_retry_can_fix() -> None:
    """When the instance sits in a state missing from the table, the reject is
    unknown_state and not retryable: no other proposal can make the move legal."""
    verdict = verifier().verify(Move(to="offer_sent"), ctx("limbo"))
    assert isinstance(verdict, Reject)
    assert (
        verdict.verifier,
        verdict.rule_id,
        verdict.reason_code,
        verdict.field,
        verdict.retryable,
    ) == ("transition", "transition.unknown_state", "unknown_state", "to", False)
    assert verdict.message == "current state 'limbo' is not in the transition table"
    assert verdict.hint == "the instance is in a state this workflow does not know"


def test_name_and_field_are_configurable() -> None:
    """A verifier declared with its own name and field reports them in its verdicts."""
    named = TransitionVerifier[Move](
        TABLE,
        current=lambda c: c.input.state,
        proposed=lambda m: m.to,
        field="next_state",
        name="renewal-states",
    )
    verdict = named.verify(Move(to="churned"), ctx("window_open"))
    assert isinstance(verdict, Reject)
    assert (verdict.verifier, verdict.field) == ("renewal-states", "next_state")
    assert named.verify(Move(to="churned"), ctx("offer_sent")) == Accept("renewal-states")


# --- inside a boundary ---------------------------------------------------------------------


@pytest.fixture
def rt(store: SqlStore, clock: VirtualClock) -> Runtime:
    return Runtime(store, clock)


@pytest.fixture
async def contract_row(store: SqlStore) -> str:
    await store.apply(UnitOfWork().create_row("k1", kind="contract", state="window_open"))
    return "k1"


def move_boundary(model: ScriptedModel) -> Boundary[Contract, Move]:
    def prompt(c: Contract) -> list[Message]:
        return [Message("system", "Propose the next state."), Message("user", c.state)]

    def write(move: Move, c: Contract, unit: UnitOfWork) -> dict[str, str]:
        unit.transition(c.id, expect_version=1, to=move.to)
        return {"to": move.to}

    return Boundary(
        "renewal-step",
        model=model,
        prompt=prompt,
        output=Move,
        verifiers=[verifier()],
        commit=StoreCommit(write),
        input_key=lambda c: c.id,
    )


async def test_an_illegal_move_goes_back_to_the_model_and_a_legal_one_commits(
    rt: Runtime, store: SqlStore, contract_row: str
) -> None:
    """Through a boundary: the illegal proposal is rejected with the allowed targets in the
    signal the model sees next, and only the legal move reaches the row."""
    model = ScriptedModel(['{"to": "renewed"}', '{"to": "offer_sent"}'])
    result = await move_boundary(model).run(
        Contract(id=contract_row, state="window_open"), runtime=rt, run_id="run"
    )
    assert isinstance(result, Committed) and result.result == {"to": "offer_sent"}
    assert [a.status for a in result.attempts] == ["rejected", "accepted"]
    told = model.requests[1].messages[-1].content
    assert '"reason_code":"illegal_transition"' in told and "offer_sent" in told
    row = await store.get_row(contract_row)
    assert row is not None and (row.state, row.version) == ("offer_sent", 2)


async def test_an_unknown_state_stops_the_attempts_at_once(
    rt: Runtime, store: SqlStore, contract_row: str
) -> None:
    """An unknown_state reject is not retryable, so the boundary ends after one proposal and
    leaves the row untouched."""
    model = ScriptedModel(['{"to": "offer_sent"}'])
    result = await move_boundary(model).run(
        Contract(id=contract_row, state="limbo"), runtime=rt, run_id="run"
    )
    assert isinstance(result, Failed) and len(model.requests) == 1
    assert [r.reason_code for a in result.attempts for r in a.rejects] == ["unknown_state"]
    row = await store.get_row(contract_row)
    assert row is not None and (row.state, row.version) == ("window_open", 1)
