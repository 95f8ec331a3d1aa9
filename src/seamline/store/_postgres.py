"""PostgreSQL backend: a psycopg connection pool driven from a small thread pool.

Correctness is in the SQL (compare-and-swap updates, unique keys, the event-counter row lock),
so any number of processes on any number of machines can share one database. The engine's
SQL is synchronous and shared with SQLite; running it on worker threads keeps the event loop
free and lets the pool's connections work in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from seamline.errors import SchemaVersionError, StoreError, StoreUnavailableError
from seamline.store._engine import POSTGRES, Engine, Rollback

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise StoreUnavailableError(
        "PostgreSQL support needs the 'postgres' extra: pip install 'seamline[postgres]'"
    ) from exc

T = TypeVar("T")

# Transient conflicts PostgreSQL itself resolves by aborting one side; the unit is safe to run
# again because nothing of it was committed.
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_ATTEMPTS = 5
_MIGRATION_LOCK = 0x5EA71E  # pg_advisory_xact_lock key: one migrator at a time


class PostgresBackend:
    engine = Engine(POSTGRES)

    def __init__(
        self,
        url: str,
        *,
        display_url: str,
        pool_size: int = 8,
        connect_timeout_s: float = 5.0,
        migrate: bool = True,
    ) -> None:
        self.display_url = display_url
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._prepare(migrate)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": int(connect_timeout_s)},
            open=False,
            timeout=30.0,
            name="seamline",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailableError(
                f"cannot reach {display_url}: no connection within {connect_timeout_s:.0f} s"
            ) from exc
        self._threads = ThreadPoolExecutor(pool_size, thread_name_prefix="seamline-pg")

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailableError(
            f"cannot reach {self.display_url}: {reason}. Is PostgreSQL running and the URL "
            "right? Set SEAMLINE_STORE or pass --store postgresql://USER@HOST:PORT/DB"
        )

    def _prepare(self, migrate: bool) -> None:
        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=int(self._connect_timeout_s)
            )
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc
        with conn:
            if not migrate:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                self.engine.create_schema_table(conn)
                current = self.engine.schema_version(conn)
                if current > self.engine.latest_version():
                    raise SchemaVersionError(
                        f"{self.display_url} has schema version {current}, newer than the "
                        f"{self.engine.latest_version()} this seamline knows; upgrade seamline "
                        "(pip install -U seamline) or use another database"
                    )
                self.engine.migrate(conn, datetime.now(UTC))

    def _write_sync(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn:
                    try:
                        with conn.transaction():
                            return fn(conn)
                    except Rollback as rb:
                        return rb.outcome  # type: ignore[return-value]
            except _RETRYABLE:
                if attempt == _ATTEMPTS:
                    raise
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from exc
            except psycopg.Error as exc:
                raise StoreError(f"write to {self.display_url} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_sync(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        except psycopg.Error as exc:
            raise StoreError(f"read from {self.display_url} failed: {exc}") from exc

    async def write(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._write_sync, fn)

    async def read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._read_sync, fn)

    async def close(self) -> None:
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._threads.shutdown(wait=True)
        self._pool.close()
