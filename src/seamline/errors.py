"""The one error root and its shallow tree.

Expected outcomes (a reject, a stale write, a denied gate) are values, not exceptions; these
errors are for things a caller must fix: bad configuration, an unreachable store, a value that
cannot be persisted. Every message says what was expected, what was seen and what to do.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "SchemaVersionError",
    "SeamlineError",
    "StoreError",
    "StoreUnavailableError",
]


class SeamlineError(Exception):
    """Root of every error seamline raises on purpose."""


class ConfigError(SeamlineError):
    """Configuration (a URL, a flag, a file) is malformed or names something unknown."""


class CodecError(SeamlineError):
    """A value cannot be encoded for persistence, or stored text cannot be decoded."""


class StoreError(SeamlineError):
    """The store failed in a way the caller must handle (not a CAS conflict: those are values)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached or opened: wrong URL, server down, unreadable file."""


class SchemaVersionError(StoreError):
    """The database holds a schema this version of seamline does not know."""
