"""People's actions from a shell are traced like a worker's runs: `seamline approvals`,
`seamline kill` and `seamline console serve` keep their `human …` spans in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner, Result

from seamline import telemetry
from seamline.cli import app
from seamline.patterns import request_approval
from seamline.store import SpanRecord, open_store
from tests._console_setup import OPS_TOKEN, console_config
from tests.conftest import T0

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), terminal_width=200)


@pytest.fixture(autouse=True)
def no_otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    yield
    telemetry.shutdown_tracing_sync()


async def _requests(url: str, *ids: str) -> None:
    store = open_store(url)
    try:
        for approval_id in ids:
            await request_approval(
                store,
                id=approval_id,
                reason="discount above the policy",
                request={"discount": "0.40"},
                requested_by="agent",
                now=T0,
                sla=timedelta(days=1),
            )
    finally:
        await store.close()


async def _human_spans(url: str) -> list[SpanRecord]:
    store = open_store(url)
    try:
        return [s for s in await store.spans() if s.name.startswith("human ")]
    finally:
        await store.close()


def test_approval_decisions_from_the_cli_are_kept_as_spans(sqlite_url: str, tmp_path: Path) -> None:
    """approve, reject and edit each leave one `human {decision}` span in the store, naming
    who decided what; tracing is off again when the command is done."""
    asyncio.run(_requests(sqlite_url, "a1", "a2", "a3"))
    control = tmp_path / "control.yaml"
    control.write_text("approvers: [bob]\n")
    common = ["--as", "bob", "--store", sqlite_url, "--config", str(control)]
    assert cli("approvals", "approve", "a1", "--reason", "fine", *common).exit_code == 0
    assert cli("approvals", "reject", "a2", "--reason", "too much", *common).exit_code == 0
    edited = cli("approvals", "edit", "a3", "--reason", "less", "--set", "discount=0.2", *common)
    assert edited.exit_code == 0, edited.output
    assert not telemetry.tracing_enabled()
    spans = asyncio.run(_human_spans(sqlite_url))
    assert sorted(
        (s.name, s.attributes["seamline.subject"], s.attributes["seamline.decision"]) for s in spans
    ) == [
        ("human approve", "a1", "approved"),
        ("human edit", "a3", "edited"),
        ("human reject", "a2", "rejected"),
    ]
    assert {s.attributes["seamline.principal"] for s in spans} == {"bob"}
    assert all(s.parent_id is None and s.status == "unset" for s in spans)


def test_kill_and_revive_from_the_cli_are_kept_as_spans(sqlite_url: str, tmp_path: Path) -> None:
    """stop and revive leave `human kill` and `human revive` spans; a refused stop is kept
    too, as a deny."""
    asyncio.run(open_store(sqlite_url).close())
    control = tmp_path / "control.yaml"
    control.write_text(yaml.safe_dump({"kill_switch": {"alice": ["all"]}}))
    common = ["--reason", "drill", "--store", sqlite_url, "--config", str(control)]
    assert cli("kill", "stop", "kind:renewal", "--as", "alice", *common).exit_code == 0
    assert cli("kill", "revive", "kind:renewal", "--as", "alice", *common).exit_code == 0
    assert cli("kill", "stop", "all", "--as", "mallory", *common).exit_code == 2
    spans = asyncio.run(_human_spans(sqlite_url))
    assert sorted(
        (s.name, s.attributes["seamline.principal"], s.attributes["seamline.decision"])
        for s in spans
    ) == [
        ("human kill", "alice", "allow"),
        ("human kill", "mallory", "deny"),
        ("human revive", "alice", "allow"),
    ]


def test_console_serve_traces_the_actions_made_in_it(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`console serve` runs the app with tracing on; a throttle set through it is kept in
    the store as a `human throttle` span; tracing is off once the server stops."""
    asyncio.run(open_store(sqlite_url).close())
    config = tmp_path / "console.yaml"
    config.write_text(yaml.safe_dump(console_config().model_dump(mode="json")))
    served: list[bool] = []

    async def drive(asgi: Any) -> None:
        async with asgi.router.lifespan_context(asgi):
            transport = httpx.ASGITransport(app=asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as c:
                answer = await c.post(
                    "/api/controls/throttle",
                    headers={"Authorization": f"Bearer {OPS_TOKEN}"},
                    json={"name": "outreach", "per_minute": 3, "reason": "complaints"},
                )
                assert answer.status_code == 200, answer.text

    def fake_run(asgi: Any, **options: Any) -> None:
        served.append(telemetry.tracing_enabled())
        asyncio.run(drive(asgi))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    result = cli("console", "serve", "--config", str(config), "--store", sqlite_url)
    assert result.exit_code == 0, result.output
    assert served == [True] and not telemetry.tracing_enabled()
    [kept] = asyncio.run(_human_spans(sqlite_url))
    assert kept.name == "human throttle"
    assert kept.attributes["seamline.principal"] == "token:ops"
    assert kept.attributes["seamline.throttle.per_minute"] == 3
