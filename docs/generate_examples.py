"""Regenerate the example outputs embedded in the method pages, so they stay true.

Each example on ``docs/adr.md``, ``docs/diagnose.md``, ``docs/replay.md``, ``docs/eval.md``
and ``docs/reliability.md`` follows a marker line ``<!-- output: NAME -->``: either a fenced
block (its opening fence, language included, is kept) or, for a Markdown table, the lines up
to the next blank line. This script runs the commands behind every marker through the real
CLI and writes what they print between the fences: the ``$ seamline …`` lines shown are the
commands that ran. Each page runs in a fresh interpreter (Rich fixes a console's width when
it is created) with a fixed terminal width (80 columns; 100 for diagnose), no colour and no
``SEAMLINE_STORE``, in a scratch directory: the output is the same on every machine.

    python docs/generate_examples.py                 # rewrite every page
    python docs/generate_examples.py --check         # rewrite nothing; exit 1 if any differ
    python docs/generate_examples.py --only eval.md  # one page

``tests/test_method_docs.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WIDTH = 80

_MARKER = re.compile(r"^<!-- output: ([\w-]+) -->$")
_PROGRESS = re.compile(r"^\S.* [━╸╺]+ \d+/\d+ \d+:\d\d:\d\d$")
"""The last frame of a progress bar: its elapsed time differs from run to run."""


class DocsError(Exception):
    """A page whose markers and examples do not line up."""


# --- splicing blocks into a page (pure) ---------------------------------------------------


def _block_span(lines: Sequence[str], start: int, page: str, name: str) -> tuple[int, int]:
    """The [first, end) line indices of the content after the marker at ``start - 1``."""
    if start >= len(lines):
        raise DocsError(f"{page}: marker {name!r} is the last line; expected a block after it")
    if lines[start].startswith("```"):
        for end in range(start + 1, len(lines)):
            if lines[end] == "```":
                return start + 1, end
        raise DocsError(f"{page}: the fenced block after marker {name!r} is never closed")
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    if end == start:
        raise DocsError(f"{page}: marker {name!r} is followed by a blank line, not a block")
    return start, end


def splice(text: str, outputs: Mapping[str, str], *, page: str = "page") -> str:
    """``text`` with the block after every marker replaced by ``outputs[name]``.

    Every marker needs an output and every output a marker, so an example cannot silently
    stop being generated.
    """
    lines = text.split("\n")
    out: list[str] = []
    seen: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        match = _MARKER.match(lines[i])
        i += 1
        if match is None:
            continue
        name = match.group(1)
        if name not in outputs:
            raise DocsError(f"{page}: marker {name!r} has no generator; known: {sorted(outputs)}")
        first, end = _block_span(lines, i, page, name)
        out.extend(lines[i:first])  # the opening fence, if any
        out.extend(outputs[name].rstrip("\n").split("\n"))
        seen.append(name)
        i = end
    missing = sorted(set(outputs) - set(seen))
    if missing:
        raise DocsError(f"{page}: no marker for generated example(s) {missing}")
    return "\n".join(out)


def stale(text: str, outputs: Mapping[str, str], *, page: str = "page") -> list[str]:
    """A unified diff of ``text`` against the page with fresh outputs; empty when current."""
    fresh = splice(text, outputs, page=page)
    return list(
        difflib.unified_diff(
            text.split("\n"),
            fresh.split("\n"),
            f"docs/{page} (as written)",
            f"docs/{page} (fresh run)",
            lineterm="",
        )
    )


# --- running the commands -----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command: its ``$`` line is shown, its output unless ``quiet``, and ``$ echo $?``
    with the exit code when ``exit_code``."""

    args: tuple[str, ...]
    quiet: bool = False
    exit_code: bool = False


def _cli(args: Sequence[str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from seamline.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise DocsError(f"seamline {shlex.join(args)} raised {result.exception!r}")
    return result.exit_code, result.output


def run(*steps: Step) -> str:
    """The block for ``steps``: each command line, then what it printed (lines rstripped)."""
    out: list[str] = []
    for step in steps:
        code, text = _cli(step.args)
        if code not in (0, 1) or (code == 1 and not step.exit_code):
            raise DocsError(f"seamline {shlex.join(step.args)} exited {code}:\n{text}")
        out.append("$ " + shlex.join(("seamline", *step.args)))
        if not step.quiet:
            lines = (line.rstrip() for line in text.rstrip("\n").split("\n"))
            out.extend(line for line in lines if not _PROGRESS.match(line))
        if step.exit_code:
            out += ["$ echo $?", str(code)]
    return "\n".join(out)


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A temporary working directory: relative store URLs and plot paths land in it."""
    with tempfile.TemporaryDirectory(prefix="seamline-docs-") as tmp, contextlib.chdir(tmp):
        yield Path(tmp)


_UNSET = ("SEAMLINE_STORE", "FORCE_COLOR", "TTY_COMPATIBLE", "JUPYTER_COLUMNS")


def generate(page: str) -> dict[str, str]:
    """Every example of ``page``, run in a fresh interpreter at the page's width."""
    _, width = PAGES[page]
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(COLUMNS=str(width), LINES="50", NO_COLOR="1")
    with tempfile.TemporaryDirectory(prefix="seamline-docs-") as tmp:
        result = Path(tmp) / "examples.json"
        done = subprocess.run(
            [sys.executable, __file__, "--emit", page, "--to", str(result)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise DocsError(f"generating the examples of {page} failed:\n{done.stderr}")
        outputs: dict[str, str] = json.loads(result.read_text("utf-8"))
    return outputs


# --- the pages ----------------------------------------------------------------------------


def adr_examples() -> dict[str, str]:
    answers = "examples/workloads/{}/adr.yaml"
    with contextlib.chdir(ROOT):  # the answers files are named relative to the repository
        return {
            "porting-answers": (ROOT / answers.format("porting")).read_text("utf-8").strip(),
            "porting": run(Step(("adr", "--answers", answers.format("porting")))),
            "support": run(Step(("adr", "--answers", answers.format("support")))),
        }


async def _seed_faults(url: str) -> None:
    """An outbox send no gate allowed, and three timer no-ops on a row whose versions moved
    with no recorded transition: two faults for the diagnose example."""
    from seamline.clock import VirtualClock
    from seamline.method._diagnose import load_recorded
    from seamline.store import Applied, UnitOfWork, open_store

    store = open_store(url)
    try:
        horizon = (await load_recorded(store)).horizon
    finally:
        await store.close()
    assert horizon is not None, "the renewal run recorded nothing"
    store = open_store(url, clock=VirtualClock(horizon + timedelta(minutes=1)))
    try:
        unit = UnitOfWork().append_event(
            "outbox",
            "offer_sent",
            {"customer": "c7", "discount": "0.10"},
            idempotency_key="diag:c7:outreach",
        )
        for version in range(3):
            unit.append_event(
                "wf:renewal:diag:c10",
                "timer_noop",
                {"timer": "step:assessing", "scheduled_at_version": version, "row_version": 9},
            )
        outcome = await store.apply(unit)
        assert isinstance(outcome, Applied), outcome
    finally:
        await store.close()


def _first_finding(markdown: str) -> str:
    """The findings file up to its second finding."""
    head, *findings = markdown.split("\n## ")
    return "\n## ".join([head, *findings[:1]]).rstrip("\n")


def diagnose_examples() -> dict[str, str]:
    from seamline.method._diagnose import render_catalog_markdown

    store = "sqlite:///renewals.db"
    out = {"catalog": render_catalog_markdown()}
    with _scratch() as tmp:
        out["clean"] = run(
            Step(("renewals", "run", "--limit", "40", "--store", store), quiet=True),
            Step(("diagnose", "--store", store)),
        )
        asyncio.run(_seed_faults(store))
        out["findings"] = run(
            Step(
                ("diagnose", "--store", store, "--markdown", "findings.md", "--fail-on-findings"),
                exit_code=True,
            )
        )
        out["findings-md"] = _first_finding((tmp / "findings.md").read_text("utf-8"))
    with _scratch() as tmp:
        out["rederived"] = run(
            Step(("renewals", "run", "--limit", "30"), quiet=True),
            Step(("replay", "rederive", "--profile", "typical-v2", "--limit", "30"), quiet=True),
            Step(("diagnose", "--markdown", "after-rederive.md"), quiet=True),
        )
        out["rederived-md"] = _first_finding((tmp / "after-rederive.md").read_text("utf-8"))
    return out


def replay_examples() -> dict[str, str]:
    common = ("--limit", "30", "--seed", "7")
    with _scratch():
        run(Step(("renewals", "run", *common), quiet=True))
        return {
            "recover": run(Step(("replay", "recover", *common))),
            "rederive": run(
                Step(("replay", "rederive", "--profile", "typical-v2", *common, "--spine", "P3"))
            ),
        }


def eval_examples() -> dict[str, str]:
    with _scratch():
        return {"eval": run(Step(("eval", "--plot", "eval.png")))}


def reliability_examples() -> dict[str, str]:
    store = "sqlite:///r.db"
    with _scratch():
        return {
            "fit": run(
                Step(
                    ("renewals", "run", "--limit", "200", "--store", store, "--report", "r.html"),
                    quiet=True,
                ),
                Step(("reliability", "--store", store, "--plot", "reliability.png")),
            ),
            "simulate": run(Step(("reliability", "--simulate", "--plot", "sim.png"))),
        }


PAGES: dict[str, tuple[Callable[[], dict[str, str]], int]] = {
    "adr.md": (adr_examples, WIDTH),
    "diagnose.md": (diagnose_examples, 100),  # its findings table needs the room
    "replay.md": (replay_examples, WIDTH),
    "eval.md": (eval_examples, WIDTH),
    "reliability.md": (reliability_examples, WIDTH),
}
"""Each page, the function that runs its examples, and the terminal width they run at."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 on drift")
    parser.add_argument("--only", action="append", choices=sorted(PAGES), help="page(s) to do")
    parser.add_argument("--emit", choices=sorted(PAGES), help=argparse.SUPPRESS)
    parser.add_argument("--to", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.emit:  # the child of generate(): run one page's examples, write them as JSON
        examples, _ = PAGES[options.emit]
        options.to.write_text(json.dumps(examples()), encoding="utf-8")
        return 0
    drifted: list[str] = []
    for page in options.only or PAGES:
        path = DOCS / page
        text = path.read_text("utf-8")
        try:
            outputs = generate(page)
        except DocsError as exc:  # report it, and still do the other pages
            drifted.append(page)
            print(exc, file=sys.stderr)
            continue
        if options.check:
            diff = stale(text, outputs, page=page)
            if diff:
                drifted.append(page)
                print("\n".join(diff[:80]), file=sys.stderr)
        else:
            fresh = splice(text, outputs, page=page)
            if fresh != text:
                path.write_text(fresh, encoding="utf-8")
                print(f"rewrote docs/{page}")
    if drifted:
        print(
            f"stale examples in {', '.join(drifted)}: run python docs/generate_examples.py "
            "(and fix any command that failed above)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
