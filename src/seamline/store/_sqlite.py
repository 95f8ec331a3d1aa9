"""SQLite backend: one connection owned by one thread, with group commit.

SQLite allows one writer at a time, so each process keeps a single connection on a dedicated
thread and queues work to it. When several units are waiting, the thread writes them in one
``BEGIN IMMEDIATE`` transaction, each inside its own savepoint: a conflicting unit rolls back
alone, and all of them pay for one fsync instead of one each. A caller is answered only after
the transaction holding its unit has committed, so durability is the same as one transaction
per unit. Other processes share the file through WAL and the busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from seamline.errors import SchemaVersionError, StoreError, StoreUnavailableError
from seamline.store._engine import SQLITE, Engine, Rollback

T = TypeVar("T")

MAX_BATCH = 128


@dataclass(slots=True)
class _Write:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Read:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


Settlement = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(items: list[Settlement]) -> None:
    """Runs on the caller's event loop: resolve every future of one transaction at once."""
    for future, result, error in items:
        if future.done():  # the caller was cancelled meanwhile
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _answer(items: list[tuple[_Write | _Read, Any, BaseException | None]]) -> None:
    """Hand results back with one wake-up per event loop, not one per caller."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Settlement]] = {}
    for job, result, error in items:
        by_loop.setdefault(job.loop, []).append((job.future, result, error))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, settled)


_STOP = object()


class SqliteBackend:
    engine = Engine(SQLITE)

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0, migrate: bool = True) -> None:
        self.path = path
        self.display_url = f"sqlite:///{path}"
        self._busy_timeout_s = busy_timeout_s
        self._jobs: queue.SimpleQueue[_Write | _Read | object] = queue.SimpleQueue()
        self._closed = False
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready, migrate), name=f"seamline-sqlite:{path}", daemon=True
        )
        self._thread.start()
        ready.result()  # re-raises an open or migration failure in the caller

    # --- the connection thread ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:" and not Path(self.path).parent.exists():
            raise StoreUnavailableError(
                f"cannot open {self.display_url}: folder {str(Path(self.path).parent)!r} does not "
                "exist; create it or point SEAMLINE_STORE / --store elsewhere"
            )
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=True,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailableError(
                f"cannot open {self.display_url}: {exc}. If the file is not a seamline database "
                "(or is damaged), move it aside and run again to start a fresh store."
            ) from exc
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs a lock SQLite does not wait for through the busy
        # handler, so processes opening the same new file at once retry here.
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        self._begin_immediate(conn)
        try:
            self.engine.create_schema_table(conn)
            current = self.engine.schema_version(conn)
            if current > self.engine.latest_version():
                raise SchemaVersionError(
                    f"{self.display_url} has schema version {current}, newer than the "
                    f"{self.engine.latest_version()} this seamline knows; upgrade seamline "
                    "(pip install -U seamline) or use another store"
                )
            self.engine.migrate(conn, datetime.now(UTC))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _run(self, ready: Future[None], migrate: bool) -> None:
        try:
            conn = self._connect()
            if migrate:
                self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            ready.set_exception(StoreUnavailableError(f"cannot prepare {self.display_url}: {exc}"))
            return
        except BaseException as exc:
            ready.set_exception(exc)
            return
        # The write lock is waited for in _begin_immediate; in WAL mode nothing else this
        # connection does waits on another writer.
        conn.execute("PRAGMA busy_timeout = 1")
        ready.set_result(None)
        held: _Write | _Read | object | None = None
        try:
            while True:
                job = held if held is not None else self._jobs.get()
                held = None
                if job is _STOP:
                    break
                if isinstance(job, _Read):
                    self._do_read(conn, job)
                    continue
                assert isinstance(job, _Write)
                batch = [job]
                while len(batch) < MAX_BATCH:
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(nxt, _Write):
                        batch.append(nxt)
                    else:
                        held = nxt
                        break
                self._do_writes(conn, batch)
        finally:
            conn.close()

    def _do_read(self, conn: sqlite3.Connection, job: _Read) -> None:
        if job.future.done():  # cancelled before it ran
            return
        try:
            _answer([(job, job.fn(conn), None)])
        except sqlite3.Error as exc:
            _answer([(job, None, StoreError(f"read from {self.display_url} failed: {exc}"))])
        except Exception as exc:
            _answer([(job, None, exc)])

    def _do_writes(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        # A unit whose caller was cancelled before it was picked up is not written.
        batch = [w for w in batch if not w.future.done()]
        if not batch:
            return
        try:
            self._begin_immediate(conn)
        except sqlite3.Error as exc:
            err = StoreError(
                f"could not start a write on {self.display_url}: {exc}. Another process has "
                f"held the write lock for over {self._busy_timeout_s:.0f} s."
            )
            _answer([(w, None, err) for w in batch])
            return
        # One unit alone needs no savepoint: on a conflict the whole transaction rolls back.
        alone = len(batch) == 1
        results: list[tuple[_Write | _Read, Any, BaseException | None]] = []
        try:
            for w in batch:
                if not alone:
                    conn.execute("SAVEPOINT unit")
                try:
                    results.append((w, w.fn(conn), None))
                except Rollback as rb:
                    self._undo(conn, alone)
                    results.append((w, rb.outcome, None))
                except sqlite3.Error as exc:
                    self._undo(conn, alone)
                    results.append(
                        (w, None, StoreError(f"write to {self.display_url} failed: {exc}"))
                    )
                except Exception as exc:
                    self._undo(conn, alone)
                    results.append((w, None, exc))
                if not alone:
                    conn.execute("RELEASE unit")
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = StoreError(f"commit to {self.display_url} failed: {exc}")
            _answer([(w, None, err) for w in batch])
            return
        _answer(results)

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        """Take the write lock, waiting up to the busy timeout. SQLite's own busy handler
        sleeps up to 100 ms between tries, so a process waiting on a busy writer in another
        process can miss every gap between that writer's transactions for seconds (a kill
        switch must land within one). Short, jittered polls here give every process its
        turn."""
        deadline = time.monotonic() + self._busy_timeout_s
        pause = 0.0005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, 0.004)

    @staticmethod
    def _undo(conn: sqlite3.Connection, alone: bool) -> None:
        conn.execute("ROLLBACK" if alone else "ROLLBACK TO unit")

    # --- the async side -------------------------------------------------------------------

    def _submit(self, job: _Write | _Read) -> None:
        if self._closed:
            raise StoreError(f"store {self.display_url} is closed")
        self._jobs.put(job)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; a :class:`Rollback` it raises rolls its writes
        back and its outcome is returned."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(_Write(fn, loop, future))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.path != ":memory:":
            # WAL lets a reader run beside the writer, and an indexed read takes microseconds:
            # reading on the caller's thread saves two thread hand-offs per read.
            if self._closed:
                raise StoreError(f"store {self.display_url} is closed")
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StoreError(f"read from {self.display_url} failed: {exc}") from exc
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(_Read(fn, loop, future))
        return await future

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (one per thread that reads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
