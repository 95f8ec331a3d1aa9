"""Store URLs: which backend, where, and how to show it without its password."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from seamline.errors import ConfigError

__all__ = ["DEFAULT_STORE_URL", "StoreURL", "parse_store_url"]

DEFAULT_STORE_URL = "sqlite:///seamline.db"


@dataclass(frozen=True, slots=True)
class StoreURL:
    backend: Literal["sqlite", "postgresql"]
    target: str
    """A filesystem path (or ``:memory:``) for SQLite; the libpq URL for PostgreSQL."""

    @property
    def display(self) -> str:
        """The URL with any password replaced by ``***``: safe for logs and pages."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.target}"
        parts = urlsplit(self.target)
        if parts.password is None:
            return self.target
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))


def parse_store_url(url: str | None) -> StoreURL:
    """Parse ``url`` (``None`` or empty: the default SQLite file in the working directory).

    Accepted: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``,
    a bare file path, and ``postgresql://`` or ``postgres://`` URLs.
    """
    url = (url or DEFAULT_STORE_URL).strip()
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError(
                f"store URL {StoreURL('postgresql', url).display!r} names no host; "
                "write it as postgresql://USER@HOST:PORT/DATABASE"
            )
        return StoreURL("postgresql", url)
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///"):
            raise ConfigError(
                f"store URL {url!r} is not a SQLite URL seamline understands; write "
                "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        path = url[len("sqlite:///") :]
        if not path:
            raise ConfigError(f"store URL {url!r} names no file; e.g. sqlite:///seamline.db")
        return StoreURL("sqlite", path)
    scheme = urlsplit(url).scheme
    if scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive letter
        raise ConfigError(
            f"store URL scheme {scheme!r} is not supported; use sqlite:///PATH (embedded, the "
            "default) or postgresql://USER@HOST/DB (set SEAMLINE_STORE or pass --store)"
        )
    if Path(url).is_dir():
        raise ConfigError(f"store path {url!r} is a directory; name a database file inside it")
    return StoreURL("sqlite", url)
