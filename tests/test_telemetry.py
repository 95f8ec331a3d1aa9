"""Traces (DESIGN §3, observability): the spans a boundary, a tool, a gate, a transition and
a person's decision leave; GenAI attributes; parent and child; redaction before any
exporter; OTLP only when asked for; spans kept in the store and read back by run id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pydantic
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from seamline import telemetry
from seamline.boundary import Committed, Fail, Failed, Runtime
from seamline.clock import VirtualClock
from seamline.errors import ConfigError
from seamline.models import ScriptedModel
from seamline.patterns import (
    Gate,
    KillSwitch,
    Moved,
    TransitionProposal,
    TransitionRejected,
    apply_transition,
    decide_approval,
    request_approval,
    set_throttle,
)
from seamline.store import SqlStore, UnitOfWork
from seamline.telemetry import (
    REDACTED,
    Redactor,
    configure_tracing,
    current_trace_id,
    flush_spans,
    shutdown_tracing_sync,
    span,
)
from seamline.tools import HardenedTool
from tests._offers import GOOD, Customer, offer_boundary
from tests._workflows import RENEWAL, WORKFLOW

CUSTOMER = Customer(id="c1")


def offer(**patch: Any) -> str:
    return json.dumps({**GOOD, "customer": "c1", **patch})


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory (and kept for flush_spans), for one test."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("SEAMLINE_REDACT_FIELDS", "contract_ref")
    exporter = InMemorySpanExporter()
    configure_tracing(exporter=exporter, keep_spans=True)
    yield exporter
    shutdown_tracing_sync()


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def processors(provider: TracerProvider) -> tuple[Any, ...]:
    [redacting] = provider._active_span_processor._span_processors
    return tuple(redacting.processors)


# --- what is traced -------------------------------------------------------------------------


async def test_boundary_run_spans_and_genai_attributes(
    exported: InMemorySpanExporter, store: SqlStore, clock: VirtualClock
) -> None:
    """A committed run leaves a run span with chat, verify and commit spans as children."""
    result = await offer_boundary(ScriptedModel([offer()])).run(
        CUSTOMER, runtime=Runtime(store, clock), run_id="run"
    )
    assert isinstance(result, Committed)
    spans = by_name(exported.get_finished_spans())
    run = spans["invoke_agent offer"]
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["seamline.run_id"] == "run"
    assert run.attributes["seamline.boundary"] == "offer"
    assert run.attributes["seamline.kind"] == "offer"
    assert run.attributes["seamline.key"] == "run:offer:c1"
    assert run.attributes["seamline.outcome"] == "committed"
    chat = next(s for name, s in spans.items() if name.startswith("chat "))
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "seamline.scripted"
    assert chat.attributes["gen_ai.request.model"] == chat.name.removeprefix("chat ")
    assert chat.attributes["gen_ai.response.model"]
    assert chat.attributes["gen_ai.usage.input_tokens"] >= 0  # type: ignore[operator]
    assert chat.attributes["gen_ai.usage.output_tokens"] >= 0  # type: ignore[operator]
    assert tuple(chat.attributes["gen_ai.response.finish_reasons"])  # type: ignore[arg-type]
    verdicts = [s for s in spans.values() if s.name.startswith("verify ")]
    assert {s.attributes["seamline.verdict"] for s in verdicts if s.attributes} == {"accept"}
    commit = spans["commit offer"]
    run_id = run.context.span_id  # type: ignore[union-attr]
    for child in (chat, *verdicts, commit):
        assert child.parent is not None and child.parent.span_id == run_id, child.name
        assert child.context.trace_id == run.context.trace_id  # type: ignore[union-attr]
    [record] = await store.list_runs()
    assert record.trace_id == f"{run.context.trace_id:032x}"  # type: ignore[union-attr]


async def test_rejects_are_verdict_spans_and_a_failed_run_is_an_error(
    exported: InMemorySpanExporter, store: SqlStore, clock: VirtualClock
) -> None:
    """Each rejected attempt leaves a reject verdict span; a Failed run's span is ERROR."""
    result = await offer_boundary(
        ScriptedModel([offer(discount="0.90")]), attempts=2, on_exhausted=Fail()
    ).run(CUSTOMER, runtime=Runtime(store, clock), run_id="run")
    assert isinstance(result, Failed)
    spans = exported.get_finished_spans()
    rejects = [
        s for s in spans if s.attributes and s.attributes.get("seamline.verdict") == "reject"
    ]
    assert len(rejects) == 2
    assert all(s.attributes and s.attributes["seamline.reason_code"] for s in rejects)
    [run] = [s for s in spans if s.name == "invoke_agent offer"]
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes and run.attributes["seamline.outcome"] == "failed"
    assert not any(s.name.startswith("commit ") for s in spans)


class Query(pydantic.BaseModel):
    customer: str


class Answer(pydantic.BaseModel):
    plan: str


async def test_tool_spans_carry_outcome_and_error_status(
    exported: InMemorySpanExporter,
) -> None:
    """execute_tool spans: outcome ok, or the ToolError code with status ERROR."""

    async def good(q: Query) -> dict[str, str]:
        return {"plan": "basic"}

    async def bad(q: Query) -> dict[str, str]:
        return {"nope": "x"}

    ok = HardenedTool("usage", good, input=Query, output=Answer)
    broken = HardenedTool("broken", bad, input=Query, output=Answer, attempts=1)
    await ok.call({"customer": "c1"})
    await broken.call({"customer": "c1"})
    spans = by_name(exported.get_finished_spans())
    good_span, bad_span = spans["execute_tool usage"], spans["execute_tool broken"]
    assert good_span.attributes is not None and bad_span.attributes is not None
    assert good_span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert good_span.attributes["gen_ai.tool.name"] == "usage"
    assert good_span.attributes["seamline.tool.outcome"] == "ok"
    assert bad_span.attributes["seamline.tool.outcome"] == "invalid_output"
    assert bad_span.status.status_code is StatusCode.ERROR


async def test_gate_and_human_spans(
    exported: InMemorySpanExporter, store: SqlStore, clock: VirtualClock
) -> None:
    """A gate deny names its rule; a refused kill records principal and decision."""
    gate = Gate("outreach", roles={"send": frozenset({"agent"})})
    decision = await gate.check(
        store, action="send", principal="intruder", subject="c1", inputs={}, now=clock.now()
    )
    assert decision.kind == "deny"
    await KillSwitch(store, {"ops": frozenset({"all"})}).kill(
        "all", principal="visitor", reason="curious"
    )
    spans = by_name(exported.get_finished_spans())
    g = spans["gate outreach"].attributes
    assert g is not None
    assert (g["seamline.gate.decision"], g["seamline.gate.rule"]) == ("deny", "role:send")
    h = spans["human kill"].attributes
    assert h is not None
    assert (h["seamline.principal"], h["seamline.decision"]) == ("visitor", "deny")


def move(source: str, target: str, version: int, **patch: object) -> TransitionProposal:
    return TransitionProposal.model_validate(
        {"from": source, "to": target, "if_version": version, "patch": patch}
    )


def exported_text(exporter: InMemorySpanExporter) -> str:
    return json.dumps([dict(s.attributes or {}) for s in exporter.get_finished_spans()])


async def test_transition_spans_name_the_move_and_its_outcome(
    exported: InMemorySpanExporter, store: SqlStore, clock: VirtualClock
) -> None:
    """A P5 move is a `transition {kind}` span with row, from, to, version, actor and outcome
    moved, a child of the span in force; a refused move names its reject code and has no
    from or version; the proposal's patch (customer data) is never put in a span."""
    unit = UnitOfWork()
    WORKFLOW.start(unit, "c1", {"customer": "c1"}, clock.now(), actor="test")
    await store.apply(unit)
    with span("invoke_agent renewal-step") as parent:
        moved = await apply_transition(
            store,
            RENEWAL,
            "c1",
            move("open", "offered", 1, discount=0.1, email="jane@example.com"),
            actor="alice",
        )
    illegal = await apply_transition(store, RENEWAL, "c1", move("offered", "renewed", 2), actor="b")
    assert isinstance(moved, Moved) and isinstance(illegal, TransitionRejected)
    first, second = [s for s in exported.get_finished_spans() if s.name == "transition renewal"]
    assert dict(first.attributes or {}) == {
        "seamline.row_id": "c1",
        "seamline.actor": "alice",
        "seamline.transition.from": "open",
        "seamline.transition.to": "offered",
        "seamline.transition.version": 2,
        "seamline.transition.outcome": "moved",
    }
    parent_context = parent.get_span_context()
    assert first.parent is not None and first.parent.span_id == parent_context.span_id
    assert first.context is not None and first.context.trace_id == parent_context.trace_id
    assert dict(second.attributes or {}) == {
        "seamline.row_id": "c1",
        "seamline.actor": "b",
        "seamline.transition.to": "renewed",
        "seamline.transition.outcome": "illegal_transition",
    }
    assert second.parent is None, "a move made outside any span starts its own trace"
    assert "jane@" not in exported_text(exported)


async def test_the_runners_moves_are_transition_spans(
    exported: InMemorySpanExporter, store: SqlStore, clock: VirtualClock
) -> None:
    """A move the P5 runner commits for a due timer is a `transition {kind}` span naming the
    row, the move, the runner as actor and the outcome, and the new version."""
    from seamline.patterns import Runner

    unit = UnitOfWork()
    WORKFLOW.start(unit, "r1", {"customer": "r1"}, clock.now(), actor="test")
    await store.apply(unit)
    await Runner(store, [WORKFLOW], clock=clock, owner="runner-1").step()
    moves = [s for s in exported.get_finished_spans() if s.name == "transition renewal"]
    assert [dict(s.attributes or {}) for s in moves] == [
        {
            "seamline.row_id": "r1",
            "seamline.transition.from": "open",
            "seamline.transition.to": "offered",
            "seamline.actor": "runner-1",
            "seamline.transition.outcome": "moved",
            "seamline.transition.version": 2,
        }
    ]


async def test_human_decision_spans(
    exported: InMemorySpanExporter, store: SqlStore, clock: VirtualClock
) -> None:
    """Approve, reject and edit are `human {decision}` spans naming the principal, the
    approval and the outcome (a second decision is not_pending, a non-approver
    not_authorised); inside a request's span they are its children; edited values and
    reasons, which may hold customer data, are not put in spans."""
    for approval_id in ("a1", "a2", "a3"):
        await request_approval(
            store,
            id=approval_id,
            reason="discount above the policy",
            request={"discount": "0.40"},
            requested_by="agent",
            now=clock.now(),
            sla=timedelta(hours=4),
        )
    with span("POST /approvals/a1/decide") as parent:
        await decide_approval(store, "a1", principal="bob", decision="approve", reason="fine")
    await decide_approval(store, "a2", principal="bob", decision="reject", reason="too much")
    await decide_approval(
        store,
        "a3",
        principal="ann",
        decision="edit",
        reason="call jane, phone: 555-0100",
        edited={"discount": "0.20", "email": "jane@example.com"},
    )
    await decide_approval(store, "a1", principal="ann", decision="reject", reason="late")
    await decide_approval(
        store, "a2", principal="eve", decision="approve", reason="x", approvers=frozenset({"bob"})
    )
    human = [s for s in exported.get_finished_spans() if s.name.startswith("human ")]
    assert [
        (
            s.name,
            (s.attributes or {})["seamline.principal"],
            (s.attributes or {})["seamline.subject"],
            (s.attributes or {})["seamline.decision"],
        )
        for s in human
    ] == [
        ("human approve", "bob", "a1", "approved"),
        ("human reject", "bob", "a2", "rejected"),
        ("human edit", "ann", "a3", "edited"),
        ("human reject", "ann", "a1", "not_pending"),
        ("human approve", "eve", "a2", "not_authorised"),
    ]
    parent_context = parent.get_span_context()
    assert human[0].parent is not None and human[0].parent.span_id == parent_context.span_id
    assert all(s.parent is None for s in human[1:])
    assert all(s.status.status_code is StatusCode.UNSET for s in human)
    assert await flush_spans(store) == len(exported.get_finished_spans())
    kept = [s for s in await store.spans() if s.name.startswith("human ")]
    assert sorted(s.name for s in kept) == sorted(s.name for s in human)
    text = exported_text(exported) + json.dumps([s.attributes for s in await store.spans()])
    for leaked in ("jane@", "555-0100", "0.20"):
        assert leaked not in text


async def test_throttle_change_is_a_human_span(
    exported: InMemorySpanExporter, store: SqlStore
) -> None:
    """set_throttle is a `human throttle` span with the principal, the throttle's row and the
    new cap (none when the override is cleared); a refused value is an ERROR span."""
    await set_throttle(store, "outreach", per_minute=0, principal="bob", reason="complaints")
    await set_throttle(store, "outreach", per_minute=None, principal="bob", reason="resolved")
    with pytest.raises(ConfigError, match="per_minute"):
        await set_throttle(store, "outreach", per_minute=-1, principal="eve", reason="x")
    paused, cleared, refused = exported.get_finished_spans()
    assert {paused.name, cleared.name, refused.name} == {"human throttle"}
    assert dict(paused.attributes or {}) == {
        "seamline.principal": "bob",
        "seamline.subject": "throttle:outreach",
        "seamline.throttle.per_minute": 0,
        "seamline.decision": "allow",
    }
    assert "seamline.throttle.per_minute" not in (cleared.attributes or {})
    assert refused.status.status_code is StatusCode.ERROR
    assert "seamline.decision" not in (refused.attributes or {})


# --- redaction --------------------------------------------------------------------------------


def test_redactor_replaces_secrets_and_pii() -> None:
    """API keys, bearer tokens, URL passwords, secret keys and PII fields are redacted; the
    GenAI token counts are not."""
    r = Redactor(["email"])
    assert r.text("use sk-abcdefghijklmnop1234 now") == f"use {REDACTED} now"
    assert r.text("Authorization: Bearer abc.def.ghi123") == f"Authorization: Bearer {REDACTED}"
    assert r.text("postgresql://app:hunter2@db/prod") == f"postgresql://app:{REDACTED}@db/prod"
    assert r.text('{"email": "a@b.c", "plan": "x"}') == f'{{"email": "{REDACTED}", "plan": "x"}}'
    attrs = r.attributes(
        {
            "http.api_key": "k",
            "db.password": "p",
            "customer.email": "a@b.c",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.tool.name": "usage",
        }
    )
    assert attrs == {
        "http.api_key": REDACTED,
        "db.password": REDACTED,
        "customer.email": REDACTED,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.tool.name": "usage",
    }


def test_redactor_value_redacts_at_every_depth_but_keeps_who_acted() -> None:
    """value() redacts secret and PII keys and secrets in text inside nested mappings and
    lists; keys naming who acted keep `token:ops`, which is a principal, not a token."""
    r = Redactor(["email", "contract_ref"])
    payload = {
        "customer": {"email": "a@b.c", "plan": "basic", "refs": [{"contract_ref": "CR-7"}]},
        "auth": {"api_key": "k", "note": "use sk-abcdefghijklmnop1234"},
        "by": "token:ops",
        "decided_by": "alice",
        "comment": "token: abc123",
        "attempts": [1, None, True],
    }
    assert r.value(payload) == {
        "customer": {"email": REDACTED, "plan": "basic", "refs": [{"contract_ref": REDACTED}]},
        "auth": {"api_key": REDACTED, "note": f"use {REDACTED}"},
        "by": "token:ops",
        "decided_by": "alice",
        "comment": f"token: {REDACTED}",
        "attempts": [1, None, True],
    }
    assert r.attributes({"seamline.principal": "token:ops"}) == {"seamline.principal": "token:ops"}


async def test_exporters_only_see_redacted_attributes(exported: InMemorySpanExporter) -> None:
    """A key in a prompt, a configured PII field and a URL password never reach an exporter."""
    with span(
        "chat secret",
        {
            "gen_ai.prompt": "my key is sk-live0123456789abcdef",
            "customer.email": "jane@example.com",
            "customer.contract_ref": "CR-7",  # from SEAMLINE_REDACT_FIELDS
            "db.url": "postgresql://svc:s3cret@db:5432/x",
        },
    ):
        pass
    [s] = exported.get_finished_spans()
    assert s.attributes is not None
    text = json.dumps(dict(s.attributes))
    for leaked in ("sk-live", "jane@", "CR-7", "s3cret"):
        assert leaked not in text
    assert s.attributes["customer.email"] == REDACTED


def test_log_records_are_redacted(
    exported: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """The filter on the seamline logger redacts a message before handlers see it."""
    with caplog.at_level(logging.INFO, logger="seamline"):
        logging.getLogger("seamline").info("connecting with %s", "postgresql://u:pw123@h/db")
    assert "pw123" not in caplog.text and REDACTED in caplog.text


# --- where spans go ---------------------------------------------------------------------------


def test_no_otlp_exporter_without_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset OTEL_EXPORTER_OTLP_ENDPOINT: no OTLP processor; set: one batch processor."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    try:
        assert processors(configure_tracing()) == ()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        [batch] = processors(configure_tracing())
        assert isinstance(batch, BatchSpanProcessor)
        exporter = batch.span_exporter
        assert type(exporter).__name__ == "OTLPSpanExporter"
    finally:
        shutdown_tracing_sync()


def test_not_configured_costs_nothing() -> None:
    """Without configure_tracing, span() is one shared no-op and there is no trace id."""
    shutdown_tracing_sync()
    assert not telemetry.tracing_enabled()
    assert span("a") is span("b")
    with span("a") as s:
        assert not s.is_recording()
        assert current_trace_id() is None


async def test_spans_are_kept_in_the_store_by_run_id(
    exported: InMemorySpanExporter, store: SqlStore, clock: VirtualClock
) -> None:
    """After a run and a flush, its trace is readable from the store alone, parents
    included; a single run leaves its spans buffered for the next batch."""
    await offer_boundary(ScriptedModel([offer()])).run(
        CUSTOMER, runtime=Runtime(store, clock), run_id="run-7"
    )
    assert await store.spans(run_id="run-7") == []  # under SPAN_BATCH, younger than 2 s
    assert await flush_spans(store) == len(exported.get_finished_spans())
    kept = await store.spans(run_id="run-7")
    names = [s.name for s in kept]
    assert "invoke_agent offer" in names and "commit offer" in names
    root = next(s for s in kept if s.name == "invoke_agent offer")
    assert root.parent_id is None and root.run_id == "run-7" and root.status == "unset"
    assert all(s.parent_id == root.span_id for s in kept if s is not root)
    assert all(s.trace_id == root.trace_id for s in kept)
    assert root.attributes["seamline.key"] == "run-7:offer:c1"
    assert root.ended_at - root.started_at < timedelta(seconds=30)


async def test_a_failed_flush_keeps_the_spans(
    exported: InMemorySpanExporter, store: SqlStore
) -> None:
    """A store that refuses the write does not lose the spans: the next flush keeps them."""

    class Down:
        async def apply(self, unit: object) -> object:
            raise OSError("database is down")

    with span("seamline.step", {"seamline.run_id": "r"}):
        pass
    assert await flush_spans(Down()) == 0  # type: ignore[arg-type]
    assert await flush_spans(store) == 1
    assert [s.name for s in await store.spans(run_id="r")] == ["seamline.step"]


async def test_boundary_runs_write_their_spans_in_batches(
    exported: InMemorySpanExporter,
    store: SqlStore,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once SPAN_BATCH spans are buffered, the run that ends next writes them all."""
    import seamline.boundary._boundary as boundary_module

    monkeypatch.setattr(boundary_module, "SPAN_BATCH", 10)
    rt = Runtime(store, clock)
    for n in range(5):
        await offer_boundary(ScriptedModel([offer(customer=f"c{n}")])).run(
            Customer(id=f"c{n}"), runtime=rt, run_id=f"batch-{n}"
        )
    kept = await store.spans(limit=10_000)
    assert len(kept) >= 10
    assert await flush_spans(store) + len(kept) == len(exported.get_finished_spans())
