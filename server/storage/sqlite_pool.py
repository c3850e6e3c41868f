"""The pooled SQLite engine.

Piccolo's SQLiteEngine opens a connection (and a thread) per query; this one
keeps a few connections open and configures each one (WAL, busy timeout,
foreign keys, secure delete) once.

Every aiosqlite connection owns a thread that only its `close()` stops: a
connection dropped unclosed keeps the process from exiting. So each one is
closed whatever happens to whoever opened or borrowed it, cancellation
included, and `close_connection_pool` returns only once every close and
every cancelled open has finished.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import aiosqlite
from piccolo.engine.sqlite import SQLiteEngine, TransactionType, dict_factory
from piccolo.querystring import QueryString

from server.storage.pooled_transactions import PooledSQLiteTransaction
from server.storage.sqlite_files import create_private, warn_if_readable_by_others

# A refresh holds SQLite's write lock while it waits for GitHub (at most the
# GitHub timeout, 10 s by default); writers queued behind it must outwait that.
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE = 4
CHECKPOINT_BUSY_TIMEOUT_MS = 200
CHECKPOINT_ATTEMPTS = 10

# Per-connection settings; journal_mode=WAL is persistent but cheap to re-assert.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA secure_delete = ON",
    "PRAGMA synchronous = NORMAL",
)

FileIdentity = tuple[int, int]


def _file_identity(path: str) -> FileIdentity | None:
    """(device, inode) of the file at `path`; None when it cannot be reached."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class DatabaseFileUnavailable(sqlite3.OperationalError):
    """The database file is gone from its path (moved, deleted, not yet restored)."""


class PooledSQLiteEngine(SQLiteEngine):
    """SQLiteEngine with kept connections once `start_connection_pool` ran.

    Without a started pool (the piccolo CLI, one-off scripts) it opens a
    configured connection per query, and closes it after.

    An open SQLite connection keeps using its file after the file was moved
    or deleted, so the pool serves only the file at its path: it remembers
    that file's identity and checks it at every checkout. A missing file
    fails the checkout; a different file (a restore) retires the pooled
    connections and fresh ones are opened on it.
    """

    def __init__(self, path: str, pool_size: int = SQLITE_POOL_SIZE) -> None:
        super().__init__(path=path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        self.pool_size = pool_size
        self.writer = asyncio.Lock()
        self._slots: asyncio.BoundedSemaphore | None = None  # None: no pool
        self._idle: list[aiosqlite.Connection] = []
        # Pooled connections (idle or lent) on the file now at the path.
        self._current: set[aiosqlite.Connection] = set()
        self._identity: FileIdentity | None = None
        self._lent = 0
        # Opens and closes that outlive a cancelled caller, until they finish.
        self._unfinished: set[asyncio.Future[Any]] = set()
        # server.storage.reads.LoopReader, made on the first hot read of a started pool.
        self.loop_reader: Any = None

    async def check_version(self) -> None:
        # Piccolo's logs SQLite's version read as a float ("Running Sqlite version 3.4").
        return None

    @property
    def pooled(self) -> bool:
        return self._slots is not None

    async def start_connection_pool(self) -> None:
        if self._slots is not None:
            return
        warn_if_readable_by_others(Path(self.path))
        try:
            for _ in range(self.pool_size):
                connection = await self._open()
                self._current.add(connection)
                self._idle.append(connection)
        except BaseException:
            await self.close_connection_pool()
            raise
        self._identity = _file_identity(self.path)
        self._slots = asyncio.BoundedSemaphore(self.pool_size)

    async def close_connection_pool(self) -> None:
        """Close every connection of the pool, lent ones too; return once all are closed."""
        connections, self._current, self._idle = self._current, set(), []
        self._slots = self._identity = None
        if self.loop_reader is not None:
            self.loop_reader.close()
            self.loop_reader = None
        # One after another: SQLite removes the -wal and -shm files when its last
        # connection closes, and connections closing at once each see another open.
        self._finish_anyway(self._close_in_turn(connections))
        await self._wait_for_unfinished()

    @staticmethod
    async def _close_in_turn(connections: Iterable[aiosqlite.Connection]) -> None:
        for connection in connections:
            await connection.close()

    async def _wait_for_unfinished(self) -> None:
        while self._unfinished:
            await asyncio.wait(set(self._unfinished))

    def _finish_anyway(self, work: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run `work` as its own task, so that cancelling whoever awaits it does not stop it."""
        task = asyncio.ensure_future(work)
        self._unfinished.add(task)
        task.add_done_callback(self._unfinished.discard)
        return task

    async def _open(self) -> aiosqlite.Connection:
        opening = self._finish_anyway(self._connect())
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Cancelled callers never see the connection: close it once it is open.
            opening.add_done_callback(self._close_opened)
            raise

    def _close_opened(self, opening: asyncio.Future[aiosqlite.Connection]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._close_soon(opening.result())

    async def _connect(self) -> aiosqlite.Connection:
        """A new connection with the pool's settings; closed again when they fail."""
        # Created here, not by SQLite, so that it never exists with the umask's mode.
        create_private(Path(self.path))
        connection = await aiosqlite.connect(**self.connection_kwargs)
        try:
            # aiosqlite types row_factory as a class; sqlite3 takes any callable.
            connection.row_factory = dict_factory  # type: ignore[assignment]
            for pragma in SQLITE_PRAGMAS:
                await connection.execute(pragma)
        except BaseException:
            await connection.close()
            raise
        return connection

    def _close_soon(self, connection: aiosqlite.Connection) -> asyncio.Future[Any]:
        return self._finish_anyway(connection.close())

    async def _close(self, connection: aiosqlite.Connection) -> None:
        await asyncio.shield(self._close_soon(connection))

    def _follow_file(self) -> None:
        """Fail when the file is gone; retire the idle connections when it was replaced."""
        identity = _file_identity(self.path)
        if identity is None:
            raise DatabaseFileUnavailable("database file is unavailable")
        if identity == self._identity:
            return
        retired, self._idle, self._current = self._idle, [], set()
        self._identity = identity
        # Closed in the background: a cancelled checkout must not leave some open.
        for connection in retired:
            self._close_soon(connection)

    @property
    def lent(self) -> int:
        """Connections acquired and not yet released."""
        return self._lent

    async def acquire(self) -> aiosqlite.Connection:
        if self._slots is None:
            connection = await self._open()
        else:
            connection = await self._checkout(self._slots)
        self._lent += 1
        return connection

    async def _checkout(self, slots: asyncio.BoundedSemaphore) -> aiosqlite.Connection:
        await slots.acquire()
        try:
            self._follow_file()
            if self._idle:
                return self._idle.pop()
            connection = await self._open()
            self._current.add(connection)
            return connection
        except BaseException:
            slots.release()
            raise

    async def release(self, connection: aiosqlite.Connection, *, reusable: bool = True) -> None:
        """Hand a connection back; `reusable=False` closes it instead.

        A query cancelled while aiosqlite's thread runs it leaves a cursor
        nobody closes, holding a read snapshot (which blocks the WAL
        checkpoints purges need): such a connection is not reused.
        """
        # Kept only by a running pool, when it is on the current file and no
        # transaction was left open (a failed COMMIT): the next user would
        # inherit that transaction.
        self._lent -= 1
        keep = (
            reusable
            and self._slots is not None
            and connection in self._current
            and not connection.in_transaction
        )
        if keep:
            self._idle.append(connection)
        else:
            self._current.discard(connection)
        if self._slots is not None:
            self._slots.release()
        if not keep:
            await self._close(connection)

    async def run_querystring(self, querystring: QueryString, in_pool: bool = False) -> Any:
        if self.current_transaction.get() is not None:
            return await super().run_querystring(querystring, in_pool=in_pool)
        query, args = querystring.compile_string(engine_type=self.engine_type)
        return await self._run_alone(query, args)

    async def run_ddl(self, ddl: str, in_pool: bool = False) -> Any:
        if self.current_transaction.get() is not None:
            return await super().run_ddl(ddl, in_pool=in_pool)
        return await self._run_alone(ddl, [])

    async def _run_in_existing_connection(
        self,
        connection: Any,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: Any = None,
    ) -> Any:
        """A statement inside a transaction, in one trip to the connection's thread.

        Piccolo's version re-asserts `foreign_keys` and the row factory, then
        executes, fetches and closes the cursor: four trips, each a wake-up of
        the event loop. A transaction's connection always comes from `acquire`,
        configured when opened (`_connect`), and SQLite has RETURNING (3.35+),
        so executing and fetching is all.
        """
        if sqlite3.sqlite_version_info < (3, 35):
            return await super()._run_in_existing_connection(
                connection, query, args, query_type, table
            )
        return await connection.execute_fetchall(query, args or [])

    async def _run_alone(self, query: str, args: list[Any]) -> list[dict[str, Any]]:
        """One statement outside any transaction, on a borrowed connection, in one trip."""
        connection = await self.acquire()
        reusable = True
        try:
            # Rows come out as dicts: the row_factory set in _connect.
            return await connection.execute_fetchall(query, args)  # type: ignore[return-value]
        except asyncio.CancelledError:
            reusable = False
            raise
        finally:
            await self.release(connection, reusable=reusable)

    async def truncate_wal(self) -> bool:
        """Checkpoint and empty the write-ahead log; False when readers kept it busy.

        Bounded: readers in flight make TRUNCATE wait in SQLite's busy
        handler, so this connection waits briefly per try, and tries a few times.
        Connections still closing (those of cancelled queries, which keep their
        read snapshot until closed) are waited for first.
        """
        await self._wait_for_unfinished()
        connection = await self.acquire()
        restored = False
        try:
            await connection.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")
            truncated = await self._checkpoint(connection)
            await connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            restored = True
            return truncated
        finally:
            # Reused only with its usual busy timeout back.
            await self.release(connection, reusable=restored)

    @staticmethod
    async def _checkpoint(connection: aiosqlite.Connection) -> bool:
        for _ in range(CHECKPOINT_ATTEMPTS):
            async with connection.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                result = await cursor.fetchone()
            if result is not None and not result["busy"]:
                return True
            await asyncio.sleep(0.02)
        return False

    def transaction(
        self,
        transaction_type: TransactionType = TransactionType.deferred,
        allow_nested: bool = True,
    ) -> PooledSQLiteTransaction:
        return PooledSQLiteTransaction(
            engine=self, transaction_type=transaction_type, allow_nested=allow_nested
        )
