"""``seamline console``: serve the operations console, and make the secrets its config needs."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from seamline._cli_common import StoreOption, command_errors
from seamline.errors import ConfigError
from seamline.store import DEFAULT_STORE_URL

console_app = typer.Typer(
    help=(
        "The web console for operators: runs and traces, rows, events, the approvals queue, "
        "kill switch and throttles, charts, ADR and diagnostics. Start with 'hash-password' "
        "to make a user, put it in a config file (see docs/console.md), then 'serve'."
    ),
    no_args_is_help=True,
)
_out = Console()


@console_app.command()
def serve(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            envvar="SEAMLINE_CONSOLE_CONFIG",
            help="Console config (YAML): users with roles, API tokens, kill-switch principals, "
            "approvers, throttles, secret_key.",
        ),
    ],
    store: StoreOption = DEFAULT_STORE_URL,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8700,
) -> None:
    """Serve the console at http://HOST:PORT over the store (Prometheus at /metrics).

    People's actions (approve, reject, edit, kill, revive, throttle) are traced: their
    ``human …`` spans are kept in the store, and exported when OTEL_EXPORTER_OTLP_ENDPOINT
    is set."""
    with command_errors():
        try:
            import uvicorn

            from seamline.console import create_app, load_console_config
        except ImportError as exc:
            raise ConfigError(
                f"the console needs its extra: pip install 'seamline[console]' ({exc.name} "
                "is missing)"
            ) from exc
        from seamline.telemetry import configure_tracing, shutdown_tracing_sync

        app = create_app(load_console_config(config), store_url=store)
        _out.print(f"seamline console on http://{host}:{port} over {store}", soft_wrap=True)
        # people's actions are traced: the app keeps each action's spans in its store
        configure_tracing(keep_spans=True)
        try:
            uvicorn.run(app, host=host, port=port, log_level="warning")
        finally:
            shutdown_tracing_sync()


@console_app.command("hash-password")
def hash_password_command(
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters."
        ),
    ],
) -> None:
    """Print the scrypt hash to put under users.NAME.password_hash in the console config."""
    with command_errors():
        from seamline.console import hash_password

        _out.print(hash_password(password), highlight=False)


@console_app.command("new-token")
def new_token(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. prometheus.")],
) -> None:
    """Make an API token: show it once, and the config entry that keeps only its digest."""
    with command_errors():
        from seamline.console import hash_token

        token = secrets.token_urlsafe(32)
        _out.print(f"token (shown once, give it to the client): {token}", highlight=False)
        _out.print(
            f"config entry:\ntokens:\n  - name: {name}\n    sha256: {hash_token(token)}\n"
            "    roles: [viewer]",
            highlight=False,
        )
