"""`seamline approvals` and `seamline kill` as an operator uses them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seamline.cli import app
from seamline.patterns import request_approval
from seamline.store import open_store

runner = CliRunner()


@pytest.fixture
def control(tmp_path: Path) -> Path:
    path = tmp_path / "control.yaml"
    path.write_text("kill_switch:\n  alice: [all]\n  bob: ['kind:*']\napprovers: [alice]\n")
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/ops.db"

    async def seed() -> None:
        store = open_store(url)
        now = datetime.now(UTC)
        await request_approval(
            store,
            id="a1",
            reason="discount 25% above the auto line",
            request={"discount": "0.25", "customer": "7590-VHVEG"},
            requested_by="renewal-agent",
            now=now,
            sla=timedelta(days=1),
        )
        await request_approval(
            store,
            id="a2",
            reason="contract merger",
            request={},
            requested_by="renewal-agent",
            now=now - timedelta(days=2),
            sla=timedelta(days=1),
        )
        await store.close()

    asyncio.run(seed())
    return url


def invoke(*args: str) -> tuple[int, str]:
    """Run the CLI; the output comes back with Rich's line wrapping undone."""
    result = runner.invoke(app, list(args), terminal_width=200)
    return result.exit_code, " ".join(result.output.split())


def test_list_show_and_approve(db: str, control: Path) -> None:
    """An approver lists pending requests, reads one, approves it; it leaves the queue."""
    code, out = invoke("approvals", "list", "--store", db)
    assert code == 0 and "a1" in out and "a2" in out
    code, out = invoke("approvals", "show", "a1", "--store", db)
    assert code == 0 and "7590-VHVEG" in out and "discount 25%" in out
    code, out = invoke(
        "approvals",
        "approve",
        "a1",
        "--as",
        "alice",
        "--reason",
        "loyal",
        "--store",
        db,
        "--config",
        str(control),
    )
    assert code == 0 and "approved by alice" in out
    code, out = invoke("approvals", "list", "--store", db)
    assert "a1" not in out


def test_non_approver_and_double_decision_are_refused(db: str, control: Path) -> None:
    """A principal not named as approver is refused; a second decision is refused."""
    code, out = invoke(
        "approvals",
        "reject",
        "a1",
        "--as",
        "eve",
        "--reason",
        "no",
        "--store",
        db,
        "--config",
        str(control),
    )
    assert code == 2 and "not an approver" in out
    invoke(
        "approvals",
        "edit",
        "a1",
        "--as",
        "alice",
        "--reason",
        "lower",
        "--set",
        "discount=0.15",
        "--store",
        db,
        "--config",
        str(control),
    )
    code, out = invoke(
        "approvals",
        "approve",
        "a1",
        "--as",
        "alice",
        "--reason",
        "again",
        "--store",
        db,
        "--config",
        str(control),
    )
    assert code == 2 and "not pending (status: edited)" in out


def test_deciding_without_named_approvers_is_refused(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default deny: with no control file, or one that names no approvers, nobody may decide,
    and the request stays pending."""
    monkeypatch.delenv("SEAMLINE_CONTROL", raising=False)
    args = ["approvals", "approve", "a1", "--as", "mallory", "--reason", "x", "--store", db]
    code, out = invoke(*args)
    assert code == 2 and "no control file" in out
    empty = tmp_path / "empty.yaml"
    empty.write_text("kill_switch:\n  alice: [all]\n")
    code, out = invoke(*args, "--config", str(empty))
    assert code == 2 and "names no approvers" in out
    code, out = invoke("approvals", "list", "--store", db)
    assert code == 0 and "a1" in out


def test_expire_applies_the_fallback(db: str) -> None:
    """Expiring overdue requests applies default deny to the one past its SLA only."""
    code, out = invoke("approvals", "expire", "--store", db)
    assert code == 0 and "expired 1 request(s)" in out
    code, out = invoke("approvals", "list", "--status", "expired", "--store", db)
    assert "a2" in out and "a1" not in out


def test_kill_needs_an_authorised_principal(db: str, control: Path) -> None:
    """bob may stop a kind but not everything; alice may; list and revive show the state."""
    code, out = invoke(
        "kill",
        "stop",
        "all",
        "--as",
        "bob",
        "--reason",
        "x",
        "--store",
        db,
        "--config",
        str(control),
    )
    assert code == 2 and "not authorised" in out
    code, _ = invoke(
        "kill",
        "stop",
        "kind:renewal",
        "--as",
        "bob",
        "--reason",
        "runaway discounts",
        "--store",
        db,
        "--config",
        str(control),
    )
    assert code == 0
    code, out = invoke("kill", "list", "--store", db)
    assert "kind:renewal: stopped by bob" in out and "runaway discounts" in out
    invoke(
        "kill",
        "revive",
        "kind:renewal",
        "--as",
        "alice",
        "--reason",
        "fixed",
        "--store",
        db,
        "--config",
        str(control),
    )
    assert "nothing is stopped" in invoke("kill", "list", "--store", db)[1]


def test_kill_without_a_control_file_explains_itself(db: str) -> None:
    """Without --config the command says what the control file is and how to write one."""
    code, out = invoke("kill", "stop", "all", "--as", "alice", "--reason", "x", "--store", db)
    assert code == 2 and "kill_switch: {alice: [all]}" in out
