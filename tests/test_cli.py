"""The command line: version, doctor and the demo, as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from seamline import __version__
from seamline.cli import app
from seamline.store._migrations import latest_version

runner = CliRunner()


def test_version_prints_the_package_version() -> None:
    """--version prints the installed version and exits 0."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"seamline {__version__}"


def test_help_explains_the_store_option() -> None:
    """Top-level help names the commands and how to choose a store."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("doctor", "demo", "SEAMLINE_STORE", "postgresql://"):
        assert word in result.stdout


def test_doctor_on_fresh_path_reports_store_not_created(tmp_path: Path) -> None:
    """doctor on a path with no database yet says it will be created, and exits 0."""
    result = runner.invoke(
        app, ["doctor", "--store", f"sqlite:///{tmp_path}/new.db"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "no database file yet" in result.stdout
    assert not (tmp_path / "new.db").exists()


def test_doctor_reports_migrated_store(store_url: str) -> None:
    """doctor reaches a migrated store on either backend and reports its schema version."""
    import asyncio

    from seamline.store import open_store

    asyncio.run(open_store(store_url).close())
    result = runner.invoke(app, ["doctor"], env={"SEAMLINE_STORE": store_url}, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"schema version {latest_version()} (up to date)" in result.stdout


def test_doctor_fails_on_unreachable_store() -> None:
    """doctor exits 1 and names the error when the store cannot be reached."""
    result = runner.invoke(
        app, ["doctor", "--store", "postgresql://u:pw@127.0.0.1:1/db"], terminal_width=200
    )
    assert result.exit_code == 1
    assert "StoreUnavailableError" in result.stdout
    assert "pw@" not in result.stdout


def test_demo_runs_end_to_end_and_labels_simulation(tmp_path: Path) -> None:
    """The demo drives every contract to a terminal state and says outcomes are simulated."""
    db = tmp_path / "demo.db"
    result = runner.invoke(
        app, ["demo", "--store", f"sqlite:///{db}", "--contracts", "40"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.stdout
    assert "40/40" in result.stdout
    assert re.search(r"outreach commits \(exactly once\)\s*│\s*40 │", result.stdout)
    assert re.search(r"contracts (renewed|churned)", result.stdout)


def test_demo_bad_store_is_a_clear_error(tmp_path: Path) -> None:
    """A store URL with an unknown scheme ends with a typed error and exit code 2."""
    result = runner.invoke(
        app, ["demo", "--store", "mysql://x/y", "--contracts", "1"], terminal_width=200
    )
    assert result.exit_code == 2
    assert "ConfigError" in result.stderr


def test_installed_entry_point_runs() -> None:
    """The installed `seamline` console script answers --version."""
    script = Path(sys.executable).parent / "seamline"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"seamline {__version__}"


def test_read_only_commands_refuse_a_missing_store(tmp_path: Path) -> None:
    """diagnose, reliability and approvals do not create an empty store at a wrong path."""
    missing = f"sqlite:///{tmp_path}/nope.db"
    for args in (["diagnose"], ["reliability"], ["approvals", "list"]):
        result = runner.invoke(app, [*args, "--store", missing], terminal_width=200)
        assert result.exit_code == 2, (args, result.output)
        assert "no store at" in " ".join(result.output.split())
    assert not (tmp_path / "nope.db").exists()
