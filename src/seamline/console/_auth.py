"""Who is asking, and may they: session users (pages) and bearer tokens (API), roles, CSRF.

Pages authenticate with a signed session cookie set at log-in; every form POST carries the
session's CSRF token, checked before anything is done. API calls authenticate with
``Authorization: Bearer <token>``; they carry no cookie, so they need no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request

from seamline.console._config import ROLES, ConsoleConfig, Role

__all__ = ["Principal", "authenticate", "check_csrf", "csrf_token", "require"]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: tuple[Role, ...]
    via: Literal["session", "token"]

    def has(self, role: Role) -> bool:
        """Roles nest: admin includes operator, operator includes viewer."""
        floor = ROLES.index(role)
        return any(ROLES.index(r) >= floor for r in self.roles)


class LoginRequired(Exception):
    """A page was asked for without a session: the handler sends the browser to log in."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def authenticate(request: Request, config: ConsoleConfig) -> Principal | None:
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "Authorization must be 'Bearer <token>'")
        found = config.token_principal(token.strip())
        if found is None:
            raise HTTPException(401, "unknown or revoked API token")
        return Principal(f"token:{found.name}", found.roles, "token")
    name = request.session.get("user")
    user = config.users.get(name) if isinstance(name, str) else None
    if user is None:
        return None
    return Principal(name, user.roles, "session")  # type: ignore[arg-type]


def require(request: Request, config: ConsoleConfig, role: Role, *, page: bool) -> Principal:
    """The principal, if it holds ``role``; otherwise 401 (API), a log-in redirect (page),
    or 403 when logged in without the role."""
    principal = authenticate(request, config)
    if principal is None:
        if page:
            raise LoginRequired(request.url.path)
        raise HTTPException(401, "log in or send 'Authorization: Bearer <token>'")
    if not principal.has(role):
        raise HTTPException(403, f"{principal.name} lacks the {role} role needed here")
    return principal


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made at log-in)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, principal: Principal, submitted: str | None) -> None:
    """Refuse a cookie-authenticated POST whose form does not carry the session's token."""
    if principal.via == "token":
        return
    expected = request.session.get("csrf")
    if (
        not isinstance(expected, str)
        or not submitted
        or not hmac.compare_digest(expected, submitted)
    ):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
