"""The operations console: runs and their traces, workflow rows, the event log, the
approvals queue, kill switch and throttles, metric charts, ADR and diagnostics, over one
store. Needs the ``console`` extra (``pip install 'seamline[console]'``)."""

from seamline.console._app import create_app
from seamline.console._config import (
    ROLES,
    ApiToken,
    ConsoleConfig,
    User,
    hash_password,
    hash_token,
    load_console_config,
    verify_password,
)

__all__ = [
    "ROLES",
    "ApiToken",
    "ConsoleConfig",
    "User",
    "create_app",
    "hash_password",
    "hash_token",
    "load_console_config",
    "verify_password",
]
