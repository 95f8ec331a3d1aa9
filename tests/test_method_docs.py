"""The example outputs on the method pages are what the commands print today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seamline.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _rows(block: str) -> list[str]:
    """Table rows of a Rich table, whitespace folded."""
    return [" ".join(line.split()) for line in block.splitlines() if line.startswith("│")]


def _example(page: str, command: str) -> str:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    for block in re.findall(r"```text\n(.*?)```", text, flags=re.DOTALL):
        if block.startswith(f"$ {command}"):
            return block
    raise AssertionError(f"no example of {command!r} in docs/{page}")


@pytest.mark.parametrize(
    ("page", "command", "args"),
    [
        ("eval.md", "seamline eval", ["eval"]),
        ("reliability.md", "seamline reliability --simulate", ["reliability", "--simulate"]),
    ],
)
def test_page_example_matches_a_fresh_run(
    page: str, command: str, args: list[str], tmp_path: Path
) -> None:
    """Every table row in the page's example appears in the command's output now."""
    result = CliRunner().invoke(app, [*args, "--plot", str(tmp_path / "p.png")], terminal_width=80)
    assert result.exit_code == 0, result.output
    fresh = set(_rows(result.output))
    expected = _rows(_example(page, command))
    assert expected, "the example shows a table"
    missing = [row for row in expected if row not in fresh]
    assert not missing, missing
    assert (tmp_path / "p.png").stat().st_size > 0
