"""``seamline diagnose``: the failure-signature catalog run over a store's recorded runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from seamline._cli_common import StoreOption, command_errors, open_existing_store
from seamline.errors import ConfigError
from seamline.method._diagnose import DiagnosisReport, render_markdown, render_table
from seamline.method._diagnose import diagnose as run_diagnosis
from seamline.store import DEFAULT_STORE_URL

__all__ = ["diagnose"]

_out = Console()


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected an ISO-8601 instant such as 2026-01-31T00:00:00Z"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def _run(url: str, since: datetime | None) -> DiagnosisReport:
    store = open_existing_store(url)
    try:
        return await run_diagnosis(store, since=since)
    finally:
        await store.close()


def diagnose(
    store: StoreOption = DEFAULT_STORE_URL,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the findings as Markdown here.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only what was recorded at or after this ISO-8601 instant."),
    ] = None,
    fail_on_findings: Annotated[
        bool, typer.Option("--fail-on-findings", help="Exit 1 when any signature is found.")
    ] = False,
) -> None:
    """Find known failure signatures (boundary, P1-P6) in the runs recorded in a store."""
    with command_errors():
        report = asyncio.run(_run(store, _since(since)))
    if report.clean:
        _out.print(
            f"no failure signatures found ({report.signatures_checked} signatures over "
            f"{report.events_read} events)"
        )
    else:
        _out.print(render_table(report))
    if markdown is not None:
        markdown.write_text(render_markdown(report), encoding="utf-8")
    if fail_on_findings and not report.clean:
        raise typer.Exit(1)
