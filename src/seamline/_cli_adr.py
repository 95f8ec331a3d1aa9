"""``seamline adr``: the five-step pattern selection, ending in a six-line ADR."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from seamline.errors import SeamlineError
from seamline.method import AdrAnswers, decide, load_answers, render_reasoning, scaffold

__all__ = ["adr"]

_out = Console()
_err = Console(stderr=True)

_QUESTIONS: tuple[tuple[str, str], ...] = (
    (
        "world_changes_mid_run",
        "Step 1. Can the outside world change while one unit of work "
        "runs (prices, policy, the customer)?",
    ),
    (
        "long_pauses_or_external_waits",
        "Step 2. Does the workflow pause for long, or wait on "
        "the outside world (a person, another company)?",
    ),
    (
        "state_reconstructible_from_input",
        "Step 2. Could its state be rebuilt from the original input alone, after a crash?",
    ),
    ("world_changes_during_pause", "Step 2. Can the world change during such a pause?"),
    (
        "log_is_the_truth",
        "Step 2. Must the event log be the source of truth (replay, "
        "branching, 'what did we know when')?",
    ),
    ("subtasks", "Step 3. Does the work split into independent sub-tasks for workers?"),
    (
        "external_side_effects_with_partial_failure",
        "Step 3. Are there side effects on external systems that can partly fail?",
    ),
    ("side_effects", "Step 4. Does it change anything in the world (any side effect)?"),
    (
        "legal_or_financial_consequences",
        "Step 4. Can its actions have legal or financial consequences?",
    ),
    ("out_of_policy_cases", "Step 4. Will some cases fall outside policy and need a person?"),
    ("audit_needs", "Step 4. Must decisions be auditable by people?"),
)


def _ask() -> AdrAnswers:
    _out.print("[bold]Pattern selection[/]: five steps to a six-line ADR. Answer y or n.\n")
    raw: dict[str, Any] = {
        "name": typer.prompt("Workload name"),
        "work_unit": typer.prompt(
            "Step 1. How long does one unit of work take? (seconds, minutes, hours, days)",
            default="minutes",
        ),
    }
    for key, question in _QUESTIONS:
        default = AdrAnswers.model_fields[key].default
        raw[key] = typer.confirm(question, default=bool(default))
    raw["model"] = typer.prompt("Model (id and version)", default="sim:typical-v1")
    raw["date"] = dt.date.today()
    return AdrAnswers.model_validate(raw)


def adr(
    answers: Annotated[
        Path | None,
        typer.Option(
            help="A YAML file of answers (see examples/workloads/*/adr.yaml); without it the "
            "questions are asked one by one."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the ADR and its reasoning (Markdown) to this file."),
    ] = None,
    scaffold_dir: Annotated[
        Path | None,
        typer.Option(
            "--scaffold",
            help="Generate a runnable project skeleton (app.py, README.md) wired with exactly "
            "the chosen patterns into this new folder.",
        ),
    ] = None,
) -> None:
    """Choose the patterns for a workload: runtime class, state spine, coordination,
    control and build sequence, as a six-line architecture decision record.

    Step 2 chooses P5 when the workflow pauses or waits on the outside world, its state cannot
    be rebuilt from its input, and the world can change during a pause; P3 when the log must
    be the truth; otherwise no spine.
    """
    try:
        record = decide(load_answers(answers) if answers else _ask())
    except SeamlineError as exc:
        _err.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    except ValueError as exc:  # interactive answers that do not validate
        _err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    # Unwrapped: the record is Markdown to paste, and the docs show exactly these lines.
    _out.print(escape(render_reasoning(record)), soft_wrap=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_reasoning(record), encoding="utf-8")
        _out.print(f"written to {out}")
    if scaffold_dir is not None:
        try:
            files = scaffold(record, scaffold_dir)
        except SeamlineError as exc:
            _err.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
            raise typer.Exit(2) from exc
        _out.print(
            f"skeleton: {', '.join(str(f) for f in files)}; run: python {scaffold_dir / 'app.py'}"
        )
