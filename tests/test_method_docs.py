"""The example outputs on the method pages (adr, diagnose, replay, eval, reliability) are what
the commands print today: ``docs/generate_examples.py`` regenerates them, and ``--check``
fails, naming the page, when one has drifted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "generate_examples.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    """The generator script, imported from its file (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("generate_examples", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_every_method_page_example_is_current(
    generator: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python docs/generate_examples.py --check` passes: every marked block on the five
    method pages (the diagnose findings and the reliability fit included) equals a fresh
    run of its commands."""
    assert set(generator.PAGES) == {
        "adr.md",
        "diagnose.md",
        "replay.md",
        "eval.md",
        "reliability.md",
    }
    code = generator.main(["--check"])
    assert code == 0, capsys.readouterr().err


def test_check_names_a_drifted_page_and_a_rewrite_restores_it(
    generator: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hand-edited example makes --check exit 1 with the page and the changed line, and
    leaves the file alone; a plain run rewrites it to the fresh output."""
    page = (ROOT / "docs" / "adr.md").read_text(encoding="utf-8")
    edited = page.replace("1. Runtime class: long-horizon", "1. Runtime class: autonomous", 1)
    assert edited != page
    (tmp_path / "adr.md").write_text(edited, encoding="utf-8")
    monkeypatch.setattr(generator, "DOCS", tmp_path)
    assert generator.main(["--check", "--only", "adr.md"]) == 1
    err = capsys.readouterr().err
    assert "stale examples in adr.md" in err and "-1. Runtime class: autonomous" in err
    assert (tmp_path / "adr.md").read_text(encoding="utf-8") == edited
    assert generator.main(["--only", "adr.md"]) == 0
    assert (tmp_path / "adr.md").read_text(encoding="utf-8") == page


def test_splice_rewrites_fenced_blocks_and_bare_tables(generator: ModuleType) -> None:
    """The block after each marker is replaced (a fence keeps its language line; a bare block
    ends at the first blank line); the rest of the page is untouched."""
    text = "\n".join(
        [
            "intro",
            "<!-- output: a -->",
            "```text",
            "old a",
            "```",
            "<!-- output: table -->",
            "| x |",
            "| - |",
            "",
            "outro",
        ]
    )
    fresh = generator.splice(text, {"a": "new a\nline 2\n", "table": "| y |"})
    assert fresh.split("\n") == [
        "intro",
        "<!-- output: a -->",
        "```text",
        "new a",
        "line 2",
        "```",
        "<!-- output: table -->",
        "| y |",
        "",
        "outro",
    ]
    assert generator.stale(fresh, {"a": "new a\nline 2", "table": "| y |"}) == []


@pytest.mark.parametrize(
    ("text", "outputs", "message"),
    [
        ("<!-- output: b -->\n```\nx\n```", {"a": "x"}, "marker 'b' has no generator"),
        ("no markers here", {"a": "x"}, r"no marker for generated example\(s\) \['a'\]"),
        ("<!-- output: a -->\n```text\nx", {"a": "x"}, "never closed"),
        ("<!-- output: a -->\n\ntext", {"a": "x"}, "blank line"),
    ],
)
def test_splice_refuses_pages_whose_markers_do_not_line_up(
    generator: ModuleType, text: str, outputs: dict[str, str], message: str
) -> None:
    """A marker with no generator, a generated example with no marker, an unclosed fence and
    a marker with nothing under it are errors, so no example silently stops being checked."""
    with pytest.raises(generator.DocsError, match=message):
        generator.splice(text, outputs, page="p.md")
