"""Opening a store: URLs, migrations from empty, and clear errors for bad stores."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest

from seamline.errors import ConfigError, SchemaVersionError, StoreUnavailableError
from seamline.store import open_store, parse_store_url
from seamline.store._migrations import MIGRATIONS, latest_version

TABLES = {
    "seamline_schema",
    "seamline_rows",
    "seamline_counters",
    "seamline_events",
    "seamline_offsets",
    "seamline_commits",
    "seamline_timers",
    "seamline_approvals",
    "seamline_audit",
    "seamline_usage",
    "seamline_buckets",
    "seamline_kills",
    "seamline_runs",
    "seamline_spans",
}


@pytest.mark.parametrize(
    ("url", "backend", "target"),
    [
        (None, "sqlite", "seamline.db"),
        ("", "sqlite", "seamline.db"),
        ("sqlite:///data/x.db", "sqlite", "data/x.db"),
        ("sqlite:////abs/x.db", "sqlite", "/abs/x.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("plain.db", "sqlite", "plain.db"),
        ("postgresql://u@h:5432/db", "postgresql", "postgresql://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql", "postgres://u@h/db"),
    ],
)
def test_store_urls_choose_the_backend(url: str | None, backend: str, target: str) -> None:
    """SQLite URLs, bare paths and PostgreSQL URLs map to the right backend and target."""
    parsed = parse_store_url(url)
    assert (parsed.backend, parsed.target) == (backend, target)


def test_displayed_url_hides_the_password() -> None:
    """The display form of a URL never carries the password."""
    parsed = parse_store_url("postgresql://app:s3cret@db.internal:5432/prod")
    assert parsed.display == "postgresql://app:***@db.internal:5432/prod"
    assert "s3cret" not in parsed.display


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "scheme 'mysql' is not supported"),
        ("sqlite://relative.db", "sqlite:///relative/path.db"),
        ("sqlite:///", "names no file"),
        ("postgresql:///db", "names no host"),
    ],
)
def test_malformed_urls_say_what_to_write(url: str, message: str) -> None:
    """A malformed or unknown URL is a ConfigError that shows a correct form."""
    with pytest.raises(ConfigError, match=message):
        parse_store_url(url)


def test_directory_is_not_a_store(tmp_path: Path) -> None:
    """A directory given as the store path is refused before anything is created."""
    with pytest.raises(ConfigError, match="is a directory"):
        open_store(str(tmp_path))


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    """A SQLite path in a folder that does not exist says which folder to create."""
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/no/such/dir/s.db")


def test_corrupt_sqlite_file_is_reported(tmp_path: Path) -> None:
    """A file that is not a SQLite database gives StoreUnavailableError saying what to do."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailableError, match="move it aside"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


def test_unreachable_postgres_is_reported() -> None:
    """A PostgreSQL URL nobody answers at is StoreUnavailableError naming the (redacted) URL."""
    with pytest.raises(StoreUnavailableError, match=r"cannot reach postgresql://u:\*\*\*@127"):
        open_store("postgresql://u:pw@127.0.0.1:1/db")


def _tables_sqlite(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows if r[0].startswith("seamline_")}


async def test_migrations_build_schema_from_empty_sqlite(tmp_path: Path) -> None:
    """An empty file is migrated to the latest version and the run is recorded per migration."""
    path = tmp_path / "s.db"
    store = open_store(f"sqlite:///{path}")
    assert await store.schema_version() == latest_version()
    await store.close()
    assert _tables_sqlite(path) == TABLES
    with sqlite3.connect(path) as conn:
        recorded = conn.execute("SELECT version, name FROM seamline_schema").fetchall()
    assert recorded == [(m.version, m.name) for m in MIGRATIONS]


async def test_migrations_build_schema_from_empty_postgres(pg_url: str) -> None:
    """An empty PostgreSQL schema is migrated to the latest version with every table."""
    store = open_store(pg_url)
    assert await store.schema_version() == latest_version()
    await store.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    assert {r[0] for r in rows} == TABLES


async def test_reopening_is_idempotent(store_url: str) -> None:
    """Opening a migrated store again applies nothing and keeps the data."""
    from seamline.store import UnitOfWork

    first = open_store(store_url)
    await first.apply(UnitOfWork().create_row("r", kind="k", state="s"))
    await first.close()
    second = open_store(store_url)
    assert await second.schema_version() == latest_version()
    assert await second.get_row("r") is not None
    await second.close()


async def test_concurrent_openers_migrate_once(store_url: str) -> None:
    """Several stores opening an empty database at once leave one recorded migration run."""
    stores = await asyncio.gather(*(asyncio.to_thread(open_store, store_url) for _ in range(4)))
    versions = [await s.schema_version() for s in stores]
    for s in stores:
        await s.close()
    assert versions == [latest_version()] * 4


def _bump_schema_sqlite(url: str) -> None:
    with sqlite3.connect(parse_store_url(url).target) as conn:
        conn.execute(
            "INSERT INTO seamline_schema VALUES (?, 'from the future', '2099-01-01')",
            (latest_version() + 1,),
        )


def _bump_schema_postgres(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO seamline_schema VALUES (%s, 'from the future', '2099-01-01')",
            (latest_version() + 1,),
        )


async def test_newer_schema_is_refused(store_url: str) -> None:
    """A database migrated by a newer seamline is refused with both version numbers."""
    store = open_store(store_url)
    await store.close()
    if store_url.startswith("sqlite"):
        _bump_schema_sqlite(store_url)
    else:
        _bump_schema_postgres(store_url)
    newer = latest_version() + 1
    with pytest.raises(SchemaVersionError, match=f"version {newer}.*upgrade seamline"):
        open_store(store_url)
