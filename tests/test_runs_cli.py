"""``seamline runs``: the runs table, one run's trace as a tree from the kept spans, the
recorded events when the run was not traced, and clear errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner, Result

from seamline.boundary import Fail, Runtime
from seamline.cli import app
from seamline.clock import VirtualClock
from seamline.models import ScriptedModel
from seamline.store import SqlStore
from seamline.telemetry import configure_tracing, flush_spans, shutdown_tracing_sync
from tests._offers import GOOD, Customer, offer_boundary

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), terminal_width=200)


async def acli(*args: str) -> Result:
    """The command runs its own event loop: call it from a thread, as a shell would."""
    return await asyncio.to_thread(cli, *args)


def offer(customer: str, **patch: str) -> str:
    return json.dumps({**GOOD, "customer": customer, **patch})


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    configure_tracing(exporter=InMemorySpanExporter(), keep_spans=True)
    yield
    shutdown_tracing_sync()


async def test_list_and_show_a_traced_run(
    traced: None, store: SqlStore, store_url: str, clock: VirtualClock
) -> None:
    """A traced run is listed, and shown as a tree: run span, chat, verdicts, commit."""
    rt = Runtime(store, clock)
    model = ScriptedModel([offer("c1", discount="0.90"), offer("c1")])
    await offer_boundary(model).run(Customer(id="c1"), runtime=rt, run_id="run")
    await flush_spans(store)  # runs write spans in batches; a command flushes before it ends
    listed = await acli("runs", "list", "--store", store_url)
    assert listed.exit_code == 0, listed.output
    assert "run:offer:c1" in listed.output and "committed" in listed.output
    shown = await acli("runs", "show", "run:offer:c1", "--store", store_url)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert any(line.startswith("└── invoke_agent offer") for line in lines), shown.output
    assert sum("chat " in line for line in lines) == 2
    assert any("verdict=reject" in line and "above_max" in line for line in lines)
    assert any("commit offer" in line for line in lines)


async def test_show_falls_back_to_recorded_events(
    store: SqlStore, store_url: str, clock: VirtualClock
) -> None:
    """Not traced: the attempt history comes from the boundary's events."""
    shutdown_tracing_sync()
    rt = Runtime(store, clock)
    model = ScriptedModel([offer("c2", discount="0.90")])
    await offer_boundary(model, attempts=2, on_exhausted=Fail()).run(
        Customer(id="c2"), runtime=rt, run_id="run"
    )
    shown = await acli("runs", "show", "run:offer:c2", "--store", store_url)
    assert shown.exit_code == 0, shown.output
    assert "no spans kept" in shown.output
    out = shown.output.split("no spans kept", 1)[1]
    assert "attempt 1" in out and "attempt 2" in out
    assert out.index("proposed") < out.index("rejected") < out.index("failed")
    failed = await acli("runs", "list", "--store", store_url, "--status", "failed")
    assert "run:offer:c2" in failed.output
    assert "no runs" in (await acli("runs", "list", "--store", store_url, "--kind", "other")).output


def test_unknown_run_and_missing_store_are_clear_errors(tmp_path: Path) -> None:
    """An unknown id or a store that does not exist exit 2 with a message saying what to do."""
    missing = cli("runs", "show", "nope", "--store", f"sqlite:///{tmp_path}/none.db")
    assert missing.exit_code == 2 and "no store at" in missing.output
    bad = cli("runs", "list", "--store", f"sqlite:///{tmp_path}/none.db", "--status", "odd")
    assert bad.exit_code == 2 and "--status must be one of" in bad.output


async def test_unknown_run_id(store: SqlStore, store_url: str) -> None:
    """A run id the store does not hold exits 2 and points at 'seamline runs list'."""
    result = await acli("runs", "show", "no-such-run", "--store", store_url)
    assert result.exit_code == 2
    assert "no run 'no-such-run'" in result.output and "seamline runs list" in result.output
