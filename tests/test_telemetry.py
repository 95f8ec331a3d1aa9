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
from seamline.models import ScriptedModel
from seamline.patterns import Gate, KillSwitch
from seamline.store import SqlStore
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
    """After a run, its trace is readable from the store alone, parents included."""
    await offer_boundary(ScriptedModel([offer()])).run(
        CUSTOMER, runtime=Runtime(store, clock), run_id="run-7"
    )
    assert await flush_spans(store) == 0  # the run flushed its own spans
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
