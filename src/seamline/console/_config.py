"""Who may use the console and what they may do: users, API tokens and roles, from YAML.

A console config is a control config (kill-switch principals, approvers, throttles) plus:

- ``users``: name -> ``password_hash`` (made by ``seamline console hash-password``) and roles;
- ``tokens``: API tokens for scripts and Prometheus, kept only as SHA-256 digests;
- ``secret_key``: signs session cookies (or set ``SEAMLINE_CONSOLE_SECRET``);
- ``adr``: workflow kind -> the ADR answers file shown on the method page;
- ``redact_fields``: PII field names redacted from every page and API answer (default:
  tracing's, plus ``SEAMLINE_REDACT_FIELDS``).

Roles nest: a ``viewer`` reads every page; an ``operator`` also decides approvals and sets
throttles; an ``admin`` may do all of that. The kill switch is not a role: only the
principals listed under ``kill_switch`` may use it, for the scopes listed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Literal

import pydantic
import yaml

from seamline.errors import ConfigError
from seamline.patterns import ControlConfig
from seamline.telemetry import DEFAULT_REDACT_FIELDS

__all__ = [
    "ROLES",
    "ApiToken",
    "ConsoleConfig",
    "Role",
    "User",
    "hash_password",
    "hash_token",
    "load_console_config",
    "verify_password",
]

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")

# scrypt at n=2**14, r=8, p=1 takes ~50 ms and 16 MiB: slow for a guesser, quick for a login
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """An scrypt hash in the form ``scrypt$n$r$p$salt$hash`` (base64), for the config file."""
    if len(password) < 8:
        raise ConfigError("a console password needs at least 8 characters")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, in time that does not depend on where they
    differ. A malformed stored hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class User(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    password_hash: str
    roles: tuple[Role, ...] = ("viewer",)

    @pydantic.field_validator("password_hash")
    @classmethod
    def _scrypt(cls, value: str) -> str:
        if not value.startswith("scrypt$") or value.count("$") != 5:
            raise ValueError("expected an scrypt hash from 'seamline console hash-password'")
        return value


class ApiToken(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str
    sha256: str = pydantic.Field(pattern=r"^[0-9a-f]{64}$")
    roles: tuple[Role, ...] = ("viewer",)


class ConsoleConfig(ControlConfig):
    """The console's users, tokens, session key and ADR files, with the control settings."""

    users: dict[str, User] = pydantic.Field(default_factory=dict)
    tokens: list[ApiToken] = pydantic.Field(default_factory=list)
    secret_key: str | None = pydantic.Field(default=None, min_length=32)
    session_max_age_s: int = pydantic.Field(default=8 * 3600, ge=60)
    secure_cookies: bool = False
    adr: dict[str, Path] = pydantic.Field(default_factory=dict)
    redact_fields: tuple[str, ...] = DEFAULT_REDACT_FIELDS

    def signing_key(self) -> str:
        key = self.secret_key or os.environ.get("SEAMLINE_CONSOLE_SECRET")
        if not key or len(key) < 32:
            raise ConfigError(
                "the console needs a session signing key of at least 32 characters: set "
                "secret_key in the console config or SEAMLINE_CONSOLE_SECRET "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return key

    def token_principal(self, token: str) -> ApiToken | None:
        digest = hash_token(token)
        for t in self.tokens:
            if hmac.compare_digest(t.sha256, digest):
                return t
        return None


def load_console_config(path: Path) -> ConsoleConfig:
    """Read and check a console config file; every problem is a :class:`ConfigError` that
    names the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read console config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"console config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"console config {path} must be a mapping at the top level")
    try:
        config = ConsoleConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"console config {path}: {where}: {first['msg']}") from exc
    if not config.users and not config.tokens:
        raise ConfigError(
            f"console config {path} defines no users and no tokens: nobody could log in"
        )
    return config
