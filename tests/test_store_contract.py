"""The store contract: every operation, the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from seamline.clock import VirtualClock, advance_to_next_timer
from seamline.errors import CodecError, ConfigError
from seamline.store import (
    Applied,
    Duplicate,
    Killed,
    NotPending,
    RunRecord,
    SpanRecord,
    SqlStore,
    StaleOffset,
    StaleVersion,
    Throttled,
    UnitOfWork,
)
from tests.conftest import T0


async def _new_row(store: SqlStore, id: str = "r1", state: str = "open") -> None:
    outcome = await store.apply(
        UnitOfWork().create_row(id, kind="renewal", state=state, data={"n": 1})
    )
    assert isinstance(outcome, Applied)


# --- rows and compare-and-swap -------------------------------------------------------------


async def test_create_row_starts_at_version_one(store: SqlStore, clock: VirtualClock) -> None:
    """A new row is at version 1 with the data, kind and state given, stamped by the clock."""
    outcome = await store.apply(
        UnitOfWork().create_row("r1", kind="renewal", state="open", data={"tenure": 12})
    )
    assert outcome == Applied(versions={"r1": 1})
    row = await store.get_row("r1")
    assert row is not None
    assert (row.kind, row.state, row.version, row.data) == ("renewal", "open", 1, {"tenure": 12})
    assert row.created_at == row.updated_at == clock.now()


async def test_create_row_twice_is_a_duplicate(store: SqlStore) -> None:
    """Creating an id that exists returns Duplicate and leaves the first row untouched."""
    await _new_row(store)
    outcome = await store.apply(UnitOfWork().create_row("r1", kind="x", state="y", data={}))
    assert outcome == Duplicate("row", "r1")
    row = await store.get_row("r1")
    assert row is not None
    assert row.kind == "renewal"


async def test_transition_moves_state_and_bumps_version(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A CAS at the current version moves the row, bumps its version and keeps its data."""
    await _new_row(store)
    clock.advance(timedelta(hours=1))
    outcome = await store.apply(UnitOfWork().transition("r1", expect_version=1, to="offered"))
    assert outcome == Applied(versions={"r1": 2})
    row = await store.get_row("r1")
    assert row is not None
    assert (row.state, row.version, row.data) == ("offered", 2, {"n": 1})
    assert row.updated_at - row.created_at == timedelta(hours=1)


async def test_transition_can_replace_data(store: SqlStore) -> None:
    """Data passed with a transition replaces the row's data."""
    await _new_row(store)
    await store.apply(UnitOfWork().transition("r1", expect_version=1, to="b", data={"n": 2}))
    row = await store.get_row("r1")
    assert row is not None
    assert row.data == {"n": 2}


async def test_stale_transition_is_a_value_and_changes_nothing(store: SqlStore) -> None:
    """A CAS at an old version returns StaleVersion with the version found; nothing moves."""
    await _new_row(store)
    await store.apply(UnitOfWork().transition("r1", expect_version=1, to="b"))
    outcome = await store.apply(UnitOfWork().transition("r1", expect_version=1, to="c"))
    assert outcome == StaleVersion("r1", expected=1, actual=2)
    row = await store.get_row("r1")
    assert row is not None
    assert (row.state, row.version) == ("b", 2)


async def test_transition_of_missing_row_reports_no_version(store: SqlStore) -> None:
    """A CAS on a row that does not exist is StaleVersion with actual None."""
    outcome = await store.apply(UnitOfWork().transition("nope", expect_version=1, to="x"))
    assert outcome == StaleVersion("nope", expected=1, actual=None)


async def test_list_rows_filters_by_kind_and_state_and_pages(store: SqlStore) -> None:
    """list_rows filters by kind and state, orders by id and pages with after_id."""
    unit = UnitOfWork()
    for i in range(5):
        unit.create_row(f"a{i}", kind="renewal", state="open" if i % 2 == 0 else "closed")
    unit.create_row("b0", kind="porting", state="open")
    await store.apply(unit)
    opened = await store.list_rows(kind="renewal", state="open")
    assert [r.id for r in opened] == ["a0", "a2", "a4"]
    page = await store.list_rows(kind="renewal", after_id="a1", limit=2)
    assert [r.id for r in page] == ["a2", "a3"]
    assert [r.id for r in await store.list_rows(state="open")] == ["a0", "a2", "a4", "b0"]


# --- atomicity -----------------------------------------------------------------------------


async def test_unit_is_all_or_nothing(store: SqlStore) -> None:
    """When one write of a unit conflicts, none of the unit's other writes persist."""
    await _new_row(store)
    unit = (
        UnitOfWork()
        .create_row("r2", kind="renewal", state="open")
        .append_event("r1", "moved", {"to": "b"})
        .record_commit("k1", {"sent": True})
        .transition("r1", expect_version=7, to="b")
    )
    outcome = await store.apply(unit)
    assert isinstance(outcome, StaleVersion)
    assert await store.get_row("r2") is None
    assert await store.read_stream("r1") == []
    assert await store.get_commit("k1") is None


async def test_transition_event_and_commit_land_together(store: SqlStore) -> None:
    """A CAS transition, its event and its commit-ledger row are written in one unit."""
    await _new_row(store)
    outcome = await store.apply(
        UnitOfWork()
        .transition("r1", expect_version=1, to="sent")
        .append_event("r1", "transitioned", {"to": "sent", "version": 2})
        .record_commit("r1:send", {"message_id": "m-1"}, run_id="run-1", boundary="outreach")
    )
    assert isinstance(outcome, Applied)
    assert outcome.versions == {"r1": 2}
    assert len(outcome.event_seqs) == 1
    commit = await store.get_commit("r1:send")
    assert commit is not None
    assert (commit.status, commit.result, commit.run_id, commit.boundary) == (
        "done",
        {"message_id": "m-1"},
        "run-1",
        "outreach",
    )


# --- the event log -------------------------------------------------------------------------


async def test_events_get_global_and_per_stream_sequences(store: SqlStore) -> None:
    """Global sequence is gapless across streams; each stream counts from 1 on its own."""
    await store.apply(UnitOfWork().append_event("a", "t", 1).append_event("b", "t", 2))
    await store.apply(UnitOfWork().append_event("a", "t", 3))
    events = await store.read_events()
    assert [(e.seq, e.stream, e.stream_seq, e.payload) for e in events] == [
        (1, "a", 1, 1),
        (2, "b", 1, 2),
        (3, "a", 2, 3),
    ]


async def test_event_carries_model_identity_and_causation(
    store: SqlStore, clock: VirtualClock
) -> None:
    """model_version, prompt_hash, causation id, idempotency key and time are stored."""
    await store.apply(
        UnitOfWork().append_event(
            "s",
            "proposal",
            {"discount": "0.1"},
            model_version="sim-v1",
            prompt_hash="abc",
            causation_id="cause-1",
            idempotency_key="k-1",
        )
    )
    [event] = await store.read_stream("s")
    assert (
        event.type,
        event.model_version,
        event.prompt_hash,
        event.causation_id,
        event.idempotency_key,
        event.recorded_at,
    ) == ("proposal", "sim-v1", "abc", "cause-1", "k-1", clock.now())


async def test_event_idempotency_key_is_unique(store: SqlStore) -> None:
    """Appending under a used idempotency key returns the first event and appends nothing."""
    await store.apply(UnitOfWork().append_event("s", "t", {"v": 1}, idempotency_key="k"))
    outcome = await store.apply(UnitOfWork().append_event("s", "t", {"v": 2}, idempotency_key="k"))
    assert isinstance(outcome, Duplicate)
    assert outcome.what == "event"
    assert outcome.existing is not None
    assert outcome.existing.payload == {"v": 1}
    assert len(await store.read_events()) == 1
    found = await store.event_by_key("k")
    assert found is not None
    assert found.seq == 1


async def test_duplicate_event_rolls_back_sequence(store: SqlStore) -> None:
    """A refused append leaves no gap: the next event takes the next sequence number."""
    await store.apply(UnitOfWork().append_event("s", "t", idempotency_key="k"))
    await store.apply(UnitOfWork().append_event("s", "t", idempotency_key="k"))
    outcome = await store.apply(UnitOfWork().append_event("s", "t"))
    assert isinstance(outcome, Applied)
    assert outcome.event_seqs == (2,)


async def test_read_stream_pages_and_time_travels(store: SqlStore) -> None:
    """read_stream(after=n) returns what came after position n: reading as of an offset."""
    unit = UnitOfWork()
    for i in range(1, 6):
        unit.append_event("s", "t", i)
    await store.apply(unit)
    assert [e.payload for e in await store.read_stream("s", after=2)] == [3, 4, 5]
    assert [e.payload for e in await store.read_stream("s", after=1, limit=2)] == [2, 3]
    assert [e.seq for e in await store.read_events(after_seq=3, limit=1)] == [4]


async def test_consumer_offsets_compare_and_swap(store: SqlStore) -> None:
    """Offsets start at 0, move only from where they are, and a stale move is refused."""
    assert await store.get_offset("mailer", "s") == 0
    assert isinstance(
        await store.apply(UnitOfWork().advance_offset("mailer", "s", expect=0, to=3)), Applied
    )
    assert await store.get_offset("mailer", "s") == 3
    stale = await store.apply(UnitOfWork().advance_offset("mailer", "s", expect=0, to=5))
    assert stale == StaleOffset("mailer", "s", expected=0, actual=3)
    assert isinstance(
        await store.apply(UnitOfWork().advance_offset("mailer", "s", expect=3, to=5)), Applied
    )
    assert await store.get_offset("mailer", "s") == 5
    assert await store.get_offset("other", "s") == 0


def test_offsets_never_move_backwards() -> None:
    """Building a unit that moves an offset backwards is a configuration error."""
    with pytest.raises(ConfigError, match="only move forward"):
        UnitOfWork().advance_offset("c", "s", expect=5, to=4)


# --- the commit ledger ---------------------------------------------------------------------


async def test_second_commit_with_same_key_returns_first_result(store: SqlStore) -> None:
    """Exactly once: a second commit under a key is refused and carries the first result."""
    first = await store.apply(UnitOfWork().record_commit("k", {"n": 1}))
    second = await store.apply(UnitOfWork().record_commit("k", {"n": 2}))
    assert isinstance(first, Applied)
    assert isinstance(second, Duplicate)
    assert second.what == "commit"
    assert second.existing is not None
    assert second.existing.result == {"n": 1}
    commit = await store.get_commit("k")
    assert commit is not None
    assert commit.result == {"n": 1}


async def test_outbox_commit_intent_then_result(store: SqlStore, clock: VirtualClock) -> None:
    """An intent is pending with no result; completing it records the result once."""
    await store.apply(UnitOfWork().commit_intent("k", run_id="run", boundary="send"))
    pending = await store.get_commit("k")
    assert pending is not None
    assert (pending.status, pending.result, pending.completed_at) == ("pending", None, None)
    again = await store.apply(UnitOfWork().commit_intent("k"))
    assert isinstance(again, Duplicate)
    assert again.existing == pending
    clock.advance(timedelta(seconds=5))
    assert isinstance(await store.apply(UnitOfWork().complete_commit("k", {"id": 9})), Applied)
    done = await store.get_commit("k")
    assert done is not None
    assert (done.status, done.result, done.completed_at) == ("done", {"id": 9}, clock.now())
    twice = await store.apply(UnitOfWork().complete_commit("k", {"id": 10}))
    assert twice == NotPending("commit", "k", "done")
    missing = await store.apply(UnitOfWork().complete_commit("nope", {}))
    assert missing == NotPending("commit", "nope", None)


# --- timers --------------------------------------------------------------------------------


async def test_due_timers_are_found_by_query_in_due_order(
    store: SqlStore, clock: VirtualClock
) -> None:
    """due_timers returns pending timers due by now, earliest first, with their row version."""
    await _new_row(store)
    t0 = clock.now()
    await store.apply(
        UnitOfWork()
        .schedule_timer("r1", row_version=1, name="late", due_at=t0 + timedelta(days=60), id="t2")
        .schedule_timer("r1", row_version=1, name="soon", due_at=t0 + timedelta(days=1), id="t1")
        .schedule_timer(
            "r1",
            row_version=1,
            name="far",
            due_at=t0 + timedelta(days=90),
            id="t3",
            payload={"close": True},
        )
    )
    assert await store.due_timers(clock.now()) == []
    assert await store.next_timer_due() == t0 + timedelta(days=1)
    clock.advance(timedelta(days=61))
    due = await store.due_timers(clock.now())
    assert [(t.id, t.name, t.row_version) for t in due] == [("t1", "soon", 1), ("t2", "late", 1)]
    timer = await store.get_timer("t3")
    assert timer is not None
    assert timer.payload == {"close": True}
    assert timer.status == "pending"


async def test_settled_timers_are_no_longer_due(store: SqlStore, clock: VirtualClock) -> None:
    """A fired, no-op or cancelled timer is not due again; settling twice is NotPending."""
    await _new_row(store)
    due_at = clock.now()
    unit = UnitOfWork()
    for i, _ in enumerate(("fired", "noop", "cancelled")):
        unit.schedule_timer("r1", row_version=1, name="x", due_at=due_at, id=f"t{i}")
    await store.apply(unit)
    for i, status in enumerate(("fired", "noop", "cancelled")):
        outcome = await store.apply(UnitOfWork().settle_timer(f"t{i}", status))  # type: ignore[arg-type]
        assert isinstance(outcome, Applied)
        timer = await store.get_timer(f"t{i}")
        assert timer is not None
        assert timer.status == status
        assert timer.settled_at == clock.now()
    assert await store.due_timers(clock.now()) == []
    assert await store.next_timer_due() is None
    assert await store.apply(UnitOfWork().settle_timer("t0", "fired")) == NotPending(
        "timer", "t0", "fired"
    )
    assert await store.apply(
        UnitOfWork().schedule_timer("r1", row_version=1, name="x", due_at=due_at, id="t0")
    ) == Duplicate("timer", "t0")


async def test_virtual_clock_jumps_to_next_timer(store: SqlStore, clock: VirtualClock) -> None:
    """advance_to_next_timer moves virtual time to the earliest pending timer, or returns None."""
    await _new_row(store)
    start = clock.now()
    assert await advance_to_next_timer(clock, store) is None
    await store.apply(
        UnitOfWork().schedule_timer(
            "r1", row_version=1, name="day-47", due_at=start + timedelta(days=43), id="t"
        )
    )
    assert await advance_to_next_timer(clock, store) == start + timedelta(days=43)
    assert [t.id for t in await store.due_timers(clock.now())] == ["t"]


# --- approvals, audit, usage ---------------------------------------------------------------


async def test_approval_lifecycle(store: SqlStore, clock: VirtualClock) -> None:
    """An approval opens pending, is decided once with who and what, and then is settled."""
    sla = clock.now() + timedelta(hours=24)
    await store.apply(
        UnitOfWork().open_approval(
            id="a1",
            kind="approval",
            reason="discount 25% above auto-approve line",
            request={"discount": "0.25", "options": ["approve", "reject"]},
            requested_by="renewal-agent",
            run_id="run-1",
            row_id="r1",
            due_at=sla,
        )
    )
    await store.apply(
        UnitOfWork().open_approval(
            id="e1", kind="escalation", reason="merger", request={}, requested_by="agent"
        )
    )
    pending = await store.list_approvals(status="pending")
    assert [a.id for a in pending] == ["a1", "e1"]
    assert pending[0].due_at == sla
    assert pending[0].request["discount"] == "0.25"
    outcome = await store.apply(
        UnitOfWork().decide_approval(
            "a1", status="edited", decided_by="alice", decision={"discount": "0.20"}
        )
    )
    assert isinstance(outcome, Applied)
    decided = await store.get_approval("a1")
    assert decided is not None
    assert (decided.status, decided.decided_by, decided.decision, decided.decided_at) == (
        "edited",
        "alice",
        {"discount": "0.20"},
        clock.now(),
    )
    again = await store.apply(
        UnitOfWork().decide_approval("a1", status="approved", decided_by="bob")
    )
    assert again == NotPending("approval", "a1", "edited")
    assert [a.id for a in await store.list_approvals(status="pending")] == ["e1"]
    assert len(await store.list_approvals()) == 2
    assert await store.apply(
        UnitOfWork().open_approval(
            id="e1", kind="escalation", reason="x", request={}, requested_by="y"
        )
    ) == Duplicate("approval", "e1")


async def test_audit_entries_record_who_what_and_why(store: SqlStore) -> None:
    """Audit entries keep actor, action, subject, decision, policy version, reason, details."""
    await store.apply(
        UnitOfWork()
        .audit(
            actor="gate:policy",
            action="send_offer",
            subject="r1",
            decision="deny",
            reason="discount 0.90 over hard cap 0.30",
            policy_version="2026.1",
            details={"rule": "discount.hard_cap"},
        )
        .audit(actor="alice", action="approve", subject="r2", decision="allow", reason="ok")
    )
    entries = await store.audit_entries()
    assert [(e.actor, e.decision, e.policy_version) for e in entries] == [
        ("gate:policy", "deny", "2026.1"),
        ("alice", "allow", None),
    ]
    assert entries[0].details == {"rule": "discount.hard_cap"}
    assert [e.subject for e in await store.audit_entries(subject="r2")] == ["r2"]
    assert await store.audit_entries(after_seq=entries[-1].seq) == []


async def test_usage_ledger_totals_are_exact(store: SqlStore) -> None:
    """Token and money totals per run are summed exactly (money to the micro-unit)."""
    unit = UnitOfWork()
    for _ in range(3):
        unit.record_usage(
            run_id="run-1",
            model="sim",
            prompt_tokens=100,
            completion_tokens=20,
            cost=Decimal("0.000123"),
            latency_ms=12.5,
        )
    unit.record_usage(
        run_id="run-2",
        model="sim",
        prompt_tokens=1,
        completion_tokens=1,
        cost=Decimal("1"),
        latency_ms=1,
    )
    await store.apply(unit)
    totals = await store.usage_totals("run-1")
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens, totals.cost) == (
        3,
        300,
        60,
        Decimal("0.000369"),
    )
    assert totals.total_tokens == 360
    empty = await store.usage_totals("none")
    assert (empty.calls, empty.cost) == (0, Decimal(0))


def test_negative_tokens_are_refused() -> None:
    """A usage entry with negative tokens is a configuration error, not a stored row."""
    with pytest.raises(ConfigError, match="negative"):
        UnitOfWork().record_usage(
            run_id="r",
            model="m",
            prompt_tokens=-1,
            completion_tokens=0,
            cost=Decimal(0),
            latency_ms=0,
        )


# --- payloads ------------------------------------------------------------------------------


def test_unencodable_payload_fails_before_the_store() -> None:
    """A payload JSON cannot hold (NaN, arbitrary objects) raises CodecError while building."""
    with pytest.raises(CodecError, match="NaN"):
        UnitOfWork().append_event("s", "t", {"x": float("nan")})
    with pytest.raises(CodecError, match="cannot encode"):
        UnitOfWork().create_row("r", kind="k", state="s", data={"x": object()})


async def test_payloads_round_trip_byte_for_byte(store: SqlStore) -> None:
    """Stored JSON reads back exactly as the codec wrote it, unicode and escapes included."""
    payload = {"text": 'naïve \u202e ✓ \x00 "quoted"', "n": 12345678901234567890, "f": 0.1}
    await store.apply(UnitOfWork().append_event("s", "t", payload))
    [event] = await store.read_stream("s")
    assert event.payload == payload


async def test_usage_totals_can_include_sub_runs(store: SqlStore) -> None:
    """A parent's totals with include_children add its run_id/... sub-runs and nothing else."""
    unit = UnitOfWork()
    for run in ("p", "p/a", "p/a/b", "p2", "p_x"):
        unit.record_usage(
            run_id=run,
            model="m",
            prompt_tokens=10,
            completion_tokens=0,
            cost=Decimal("0.5"),
            latency_ms=1,
        )
    await store.apply(unit)
    assert (await store.usage_totals("p")).prompt_tokens == 10
    family = await store.usage_totals("p", include_children=True)
    assert (family.calls, family.prompt_tokens, family.cost) == (3, 30, Decimal("1.5"))


async def test_read_events_filters_by_stream_prefix(store: SqlStore) -> None:
    """read_events(stream_prefix=...) returns only streams starting with it, even with % or _."""
    unit = UnitOfWork()
    for stream in ("sdb:a:1", "sdb:a:2", "sdb:ab:1", "sdb:a_%:1", "other"):
        unit.append_event(stream, "t")
    await store.apply(unit)
    assert [e.stream for e in await store.read_events(stream_prefix="sdb:a:")] == [
        "sdb:a:1",
        "sdb:a:2",
    ]
    assert [e.stream for e in await store.read_events(stream_prefix="sdb:a_%")] == ["sdb:a_%:1"]


# --- token buckets -------------------------------------------------------------------------


async def test_token_bucket_refills_at_its_rate(store: SqlStore, clock: VirtualClock) -> None:
    """A bucket starts full, refuses when empty with the wait until refill, then refills."""

    def take() -> UnitOfWork:
        return UnitOfWork().take_tokens("mail", amount=1, rate_per_s=0.5, burst=2)

    assert isinstance(await store.apply(take()), Applied)
    assert isinstance(await store.apply(take()), Applied)
    refused = await store.apply(take())
    assert refused == Throttled(
        "mail", available=0.0, retry_after_s=2.0, available_at=clock.now() + timedelta(seconds=2)
    )
    clock.advance(timedelta(seconds=2))
    assert isinstance(await store.apply(take()), Applied)
    clock.advance(timedelta(hours=1))  # refill stops at the burst size
    assert isinstance(await store.apply(take()), Applied)
    assert isinstance(await store.apply(take()), Applied)
    assert isinstance(await store.apply(take()), Throttled)


async def test_throttled_unit_writes_nothing(store: SqlStore) -> None:
    """A unit whose token take is refused is rolled back whole, like any conflict."""
    await store.apply(UnitOfWork().take_tokens("b", rate_per_s=0.001, burst=1))
    outcome = await store.apply(
        UnitOfWork().take_tokens("b", rate_per_s=0.001, burst=1).record_commit("k", {})
    )
    assert isinstance(outcome, Throttled)
    assert await store.get_commit("k") is None


def test_token_bucket_arguments_are_checked() -> None:
    """Taking more than the burst, or a non-positive rate, is a configuration error."""
    with pytest.raises(ConfigError, match="amount <= burst"):
        UnitOfWork().take_tokens("b", amount=3, rate_per_s=1, burst=2)
    with pytest.raises(ConfigError, match="rate_per_s > 0"):
        UnitOfWork().take_tokens("b", rate_per_s=0, burst=2)


# --- quotas, the kill switch, timer leases -------------------------------------------------


async def test_quota_window_is_never_exceeded(store: SqlStore, clock: VirtualClock) -> None:
    """A fixed-window quota admits exactly its limit, then refuses until the window ends."""
    end = clock.now() + timedelta(minutes=1)

    def take(amount: float = 1) -> UnitOfWork:
        return UnitOfWork().take_quota("mail:w0", amount=amount, limit=3, window_end=end)

    assert [type(await store.apply(take())).__name__ for _ in range(4)] == [
        "Applied",
        "Applied",
        "Applied",
        "Throttled",
    ]
    refused = await store.apply(take())
    assert isinstance(refused, Throttled) and refused.retry_after_s == 60.0
    money_end = clock.now() + timedelta(days=1)
    assert isinstance(
        await store.apply(
            UnitOfWork().take_quota(
                "money:d0", amount=Decimal("99.5"), limit=100, window_end=money_end
            )
        ),
        Applied,
    )
    assert isinstance(
        await store.apply(
            UnitOfWork().take_quota("money:d0", amount=1, limit=100, window_end=money_end)
        ),
        Throttled,
    )


async def test_kill_switch_stops_units_that_require_the_scope(store: SqlStore) -> None:
    """A killed scope refuses units that require it, whole; reviving lifts it."""
    await store.apply(UnitOfWork().kill("kind:renewal", by="alice", reason="bad prompt"))
    await store.apply(UnitOfWork().kill("kind:renewal", by="bob", reason="again"))  # no-op
    guarded = UnitOfWork().require_alive("all", "kind:renewal", "run:r1").record_commit("k", 1)
    outcome = await store.apply(guarded)
    assert outcome == Killed("kind:renewal", "alice", "bad prompt")
    assert await store.get_commit("k") is None
    other = UnitOfWork().require_alive("all", "kind:porting").record_commit("k2", 1)
    assert isinstance(await store.apply(other), Applied)
    assert [k[:3] for k in await store.kills()] == [("kind:renewal", "alice", "bad prompt")]
    await store.apply(UnitOfWork().revive("kind:renewal"))
    assert isinstance(await store.apply(guarded), Applied)
    assert await store.kills() == []


async def test_due_timers_are_leased_to_one_runner(store: SqlStore, clock: VirtualClock) -> None:
    """A claimed timer is not handed to another runner until its lease runs out."""
    await _new_row(store)
    unit = UnitOfWork()
    for i in range(3):
        unit.schedule_timer("r1", row_version=1, name="t", due_at=clock.now(), id=f"t{i}")
    await store.apply(unit)
    first = await store.claim_due_timers(clock.now(), owner="a", lease_s=30, limit=2)
    second = await store.claim_due_timers(clock.now(), owner="b", lease_s=30)
    assert [t.id for t in first] == ["t0", "t1"]
    assert [t.id for t in second] == ["t2"]
    assert await store.claim_due_timers(clock.now(), owner="c") == []
    clock.advance(timedelta(seconds=31))  # runner a died: its leases expire
    assert {t.id for t in await store.claim_due_timers(clock.now(), owner="c")} == {
        "t0",
        "t1",
        "t2",
    }
    await store.apply(UnitOfWork().settle_timer("t0", "fired"))
    clock.advance(timedelta(seconds=61))
    assert {t.id for t in await store.claim_due_timers(clock.now(), owner="d")} == {"t1", "t2"}


async def test_restarted_owner_takes_its_own_leases_back(
    store: SqlStore, clock: VirtualClock
) -> None:
    """A runner restarted under the same owner id reclaims its leases without waiting."""
    await _new_row(store)
    await store.apply(
        UnitOfWork().schedule_timer("r1", row_version=1, name="t", due_at=clock.now(), id="t0")
    )
    assert [t.id for t in await store.claim_due_timers(clock.now(), owner="job-1")] == ["t0"]
    assert await store.claim_due_timers(clock.now(), owner="other") == []
    assert [t.id for t in await store.claim_due_timers(clock.now(), owner="job-1")] == ["t0"]


async def test_next_lease_expiry_names_when_leased_work_returns(
    store: SqlStore, clock: VirtualClock
) -> None:
    """The earliest lease on a due timer is reported, so a runner can wait exactly that long."""
    await _new_row(store)
    await store.apply(
        UnitOfWork().schedule_timer("r1", row_version=1, name="t", due_at=clock.now(), id="t0")
    )
    assert await store.next_lease_expiry(clock.now()) is None
    await store.claim_due_timers(clock.now(), owner="a", lease_s=45)
    assert await store.next_lease_expiry(clock.now()) == clock.now() + timedelta(seconds=45)
    assert await store.next_lease_expiry(clock.now(), kinds=["other"]) is None


def _run_record(id: str, run_id: str, status: str, ended_min: int, **kw: object) -> RunRecord:
    ended = T0 + timedelta(minutes=ended_min)
    fields: dict[str, object] = {
        "id": id,
        "run_id": run_id,
        "boundary": "offer",
        "kind": "renewal",
        "status": status,
        "reason": None,
        "attempts": 1,
        "rejects": 0,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cost": Decimal("0.001234"),
        "context_utilisation": 0.25,
        "started_at": ended - timedelta(seconds=2),
        "ended_at": ended,
        "latency_ms": 2000.0,
        "trace_id": None,
    }
    fields.update(kw)
    return RunRecord(**fields)  # type: ignore[arg-type]


async def test_runs_are_upserted_and_filtered(store: SqlStore) -> None:
    """A later ending of the same instance replaces the earlier one; filters by kind, status,
    window and run id (with sub-runs) select exactly the matching rows, newest first."""
    await store.apply(UnitOfWork().record_run(_run_record("k1", "job/a", "failed", 1)))
    await store.apply(
        UnitOfWork()
        .record_run(_run_record("k1", "job/a", "committed", 5, attempts=2, rejects=1))
        .record_run(_run_record("k2", "job/b", "escalated", 3, kind="support"))
        .record_run(_run_record("k3", "job_x", "committed", 7, context_utilisation=None))
    )
    k1 = await store.get_run("k1")
    assert k1 is not None and (k1.status, k1.attempts, k1.rejects) == ("committed", 2, 1)
    assert k1.cost == Decimal("0.001234") and k1.ended_at == T0 + timedelta(minutes=5)
    assert [r.id for r in await store.list_runs()] == ["k3", "k1", "k2"]
    assert [r.id for r in await store.list_runs(kind="renewal")] == ["k3", "k1"]
    assert [r.id for r in await store.list_runs(status="escalated")] == ["k2"]
    window = await store.list_runs(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=7))
    assert [r.id for r in window] == ["k1", "k2"]
    assert [r.id for r in await store.list_runs(run_id="job")] == ["k1", "k2"]
    assert (await store.get_run("k3")) is not None and (await store.get_run("nope")) is None
    assert await store.run_kinds() == ["renewal", "support"]
    with pytest.raises(ConfigError):
        UnitOfWork().record_run(_run_record("k4", "r", "failed", 1, attempts=-1))


async def test_spans_are_kept_once_and_read_by_trace_or_run(store: SqlStore) -> None:
    """A span written twice is kept once; a run's spans are every span of its traces."""

    def span(sid: str, trace: str, parent: str | None, run: str | None, sec: int) -> SpanRecord:
        at = T0 + timedelta(seconds=sec)
        return SpanRecord(sid, trace, parent, f"s{sid}", run, at, at, "OK", '{"a":1}')

    spans = [span("01", "t1", None, "job/a", 0), span("02", "t1", "01", None, 1)]
    await store.apply(UnitOfWork().record_spans(spans))
    await store.apply(UnitOfWork().record_spans([spans[0], span("03", "t2", None, "other", 2)]))
    assert [s.span_id for s in await store.spans(trace_id="t1")] == ["01", "02"]
    assert [s.span_id for s in await store.spans(run_id="job")] == ["01", "02"]
    assert [s.span_id for s in await store.spans(run_id="other")] == ["03"]
    assert (await store.spans(trace_id="t1"))[1].attributes == {"a": 1}
