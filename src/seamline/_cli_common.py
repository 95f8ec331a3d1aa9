"""What every ``seamline`` command shares: the store and seed options, the progress bar, and
how errors and interruptions end a command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from seamline.clock import Clock
from seamline.errors import ConfigError, SeamlineError
from seamline.store import SqlStore, open_store, parse_store_url

__all__ = [
    "SeedOption",
    "openai_model",
    "StoreOption",
    "command_errors",
    "fail",
    "open_existing_store",
    "progress",
]

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="SEAMLINE_STORE",
        help="Store URL: sqlite:///PATH (embedded, the default) or postgresql://USER@HOST/DB.",
        show_default=True,
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for every simulated part.")]

_err = Console(stderr=True)


def fail(exc: SeamlineError) -> typer.Exit:
    """Print a typed error the way every command does; the caller raises the returned exit."""
    _err.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
    return typer.Exit(2)


@contextmanager
def command_errors(*, resumable: bool = False) -> Iterator[None]:
    """End a command cleanly: a SeamlineError exits 2 with its message; Ctrl-C exits 130,
    saying how to resume when the command can."""
    try:
        yield
    except KeyboardInterrupt:
        hint = (
            " Everything done so far is in the store; run the same command again to "
            "resume where it stopped."
            if resumable
            else ""
        )
        _err.print(f"[yellow]interrupted.[/]{hint}")
        raise typer.Exit(130) from None
    except SeamlineError as exc:
        raise fail(exc) from exc


def progress(console: Console) -> Progress:
    """The progress bar long commands show."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def open_existing_store(url: str, *, clock: Clock | None = None) -> SqlStore:
    """Open a store that must already exist: commands that read recorded runs refuse to
    create an empty SQLite file and then report that it holds nothing."""
    parsed = parse_store_url(url)
    if parsed.backend == "sqlite" and parsed.target != ":memory:":
        from pathlib import Path

        if not Path(parsed.target).exists():
            raise ConfigError(
                f"no store at {parsed.display}; point --store (or SEAMLINE_STORE) at the store "
                "a job wrote, e.g. after 'seamline renewals run'"
            )
    return open_store(url, clock=clock)


def openai_model(name: str, base_url: str | None) -> Any:
    """The OpenAI-compatible model a ``--model openai:NAME --base-url URL`` pair names (the key
    from ``OPENAI_API_KEY``; local servers need none)."""
    import os

    from seamline.models import OpenAIChatModel

    if not base_url:
        raise ConfigError(
            "--model openai:NAME needs --base-url (the OpenAI-compatible endpoint, e.g. "
            "http://127.0.0.1:8000/v1)"
        )
    key = os.environ.get("OPENAI_API_KEY", "not-needed-for-local-servers")
    return OpenAIChatModel(model=name, base_url=base_url, api_key=key)
