"""Shared fixtures: a store per test on each backend.

PostgreSQL tests use the server named by SEAMLINE_TEST_POSTGRES (default: the local one),
each test in a schema of its own that is dropped afterwards. Where no server answers they are
skipped on a developer machine and fail under CI (CI=true): the contract must hold on both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from seamline.clock import VirtualClock
from seamline.store import SqlStore, open_store

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _pg_base() -> str:
    return os.environ.get("SEAMLINE_TEST_POSTGRES", DEFAULT_PG)


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """The PostgreSQL server for tests; skip (or, in CI, fail) when it does not answer."""
    import psycopg

    url = _pg_base()
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        message = f"PostgreSQL at {url} is not reachable ({exc}); set SEAMLINE_TEST_POSTGRES"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI requires the PostgreSQL tests to run)")
        pytest.skip(message)
    return url


def pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A URL whose connections live in a fresh, private schema."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield pg_schema_url(pg_base_url, schema)
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty store URL on each backend in turn."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
async def store(store_url: str, clock: VirtualClock) -> AsyncIterator[SqlStore]:
    st = open_store(store_url, clock=clock)
    try:
        yield st
    finally:
        await st.close()
