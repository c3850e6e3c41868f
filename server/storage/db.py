"""Database engines: a pooled SQLite engine, the PostgreSQL pool, transactions.

Piccolo's SQLiteEngine opens a connection (and a thread) per query; the
pooled engine below keeps a few connections open and configures each one
(WAL, busy timeout, foreign keys, secure delete) once.

Both pools outlive a database outage: asyncpg reconnects a pooled
connection that was closed under it, and the SQLite pool checks on every
checkout that the file at its path is still the one it has open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction
from piccolo.engine.sqlite import SQLiteEngine, SQLiteTransaction, TransactionType, dict_factory
from piccolo.query.methods.select import Select

from server.config import DatabaseConfig
from server.storage.tables import TABLES

logger = logging.getLogger("ghvault.db")

T = TypeVar("T")

# A refresh holds SQLite's write lock while it waits for GitHub (at most the
# GitHub timeout, 10 s by default); writers queued behind it must outwait that.
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE = 4
CHECKPOINT_BUSY_TIMEOUT_MS = 200
CHECKPOINT_ATTEMPTS = 10
POSTGRES_POOL_MAX_SIZE = 10
# A connection attempt or a statement that gets no answer (a dropped network
# path rather than a refused one) fails after these instead of waiting forever.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5.0
POSTGRES_COMMAND_TIMEOUT_SECONDS = 30.0

# Per-connection settings; journal_mode=WAL is persistent but cheap to re-assert.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA secure_delete = ON",
    "PRAGMA synchronous = NORMAL",
)


async def _settle(
    transaction: SQLiteTransaction | PostgresTransaction, exception: BaseException | None
) -> None:
    """Roll back after an exception, else commit, unless the caller already did either."""
    if exception:
        if not transaction._rolled_back:
            await transaction.rollback()
    elif not transaction._committed and not transaction._rolled_back:
        await transaction.commit()


class PooledSQLiteTransaction(SQLiteTransaction):
    """A transaction on a pooled connection, handed back instead of closed."""

    async def get_connection(self) -> aiosqlite.Connection:
        return await self.engine.acquire()

    @property
    def _writes(self) -> bool:
        return self.transaction_type is not TransactionType.deferred

    async def __aenter__(self) -> PooledSQLiteTransaction:
        if self._parent is not None:
            return self._parent
        if self._writes:
            # Writers of this process queue here, in order, instead of polling
            # SQLite's busy handler (which sleeps, and makes latency spiky);
            # other processes are still held off by BEGIN IMMEDIATE.
            await self.engine.writer.acquire()
        try:
            self.connection = await self.get_connection()
            try:
                await self.begin()
            except BaseException:
                # BEGIN IMMEDIATE gives up after the busy timeout; the connection
                # must still go back, or each such failure shrinks the pool for good.
                await self.engine.release(self.connection)
                raise
        except BaseException:
            if self._writes:
                self.engine.writer.release()
            raise
        self.context = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(self, exception_type, exception, traceback) -> bool:
        if self._parent:
            return exception is None
        try:
            await _settle(self, exception)
        finally:
            await self.engine.release(
                self.connection, reusable=not isinstance(exception, asyncio.CancelledError)
            )
            self.engine.current_transaction.reset(self.context)
            if self._writes:
                self.engine.writer.release()
        return exception is None


class PostgresWriteTransaction(PostgresTransaction):
    """A PostgresTransaction that gives its connection back however it ends.

    Piccolo's keeps the connection checked out when BEGIN, COMMIT or
    ROLLBACK raises (a statement timeout while the database does not
    answer): each such failure takes a connection from the pool for good,
    and closing the pool then waits for it forever.
    """

    async def __aenter__(self) -> PostgresWriteTransaction:
        if self._parent is not None:
            return self._parent
        self.connection = await self.get_connection()
        self.transaction = self.connection.transaction()
        try:
            await self.begin()
        except BaseException:
            await self._give_back()
            raise
        self.context = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(self, exception_type, exception, traceback) -> bool:
        if self._parent:
            return exception is None
        try:
            await _settle(self, exception)
        finally:
            await self._give_back()
            self.engine.current_transaction.reset(self.context)
        return exception is None

    async def _give_back(self) -> None:
        # The pool rolls back whatever a failed COMMIT left open, or drops the
        # connection when it cannot.
        if self.engine.pool:
            await self.engine.pool.release(self.connection)
        else:
            await self.connection.close()


FileIdentity = tuple[int, int]


def _file_identity(path: str) -> FileIdentity | None:
    """(device, inode) of the file at `path`; None when it cannot be reached."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class PooledSQLiteEngine(SQLiteEngine):
    """SQLiteEngine with kept connections once `start_connection_pool` ran.

    Without a started pool (the piccolo CLI, one-off scripts) it opens a
    configured connection per query, as SQLiteEngine does.

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

    async def start_connection_pool(self) -> None:
        if self._slots is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        for _ in range(self.pool_size):
            connection = await self._open()
            self._current.add(connection)
            self._idle.append(connection)
        self._identity = _file_identity(self.path)
        self._slots = asyncio.BoundedSemaphore(self.pool_size)

    async def close_connection_pool(self) -> None:
        # Lent connections on an older file are closed when they come back.
        connections, self._current, self._idle = self._current, set(), []
        self._slots = self._identity = None
        for connection in connections:
            await connection.close()

    async def _open(self) -> aiosqlite.Connection:
        connection = await aiosqlite.connect(**self.connection_kwargs)
        connection.row_factory = dict_factory  # type: ignore[assignment]
        for pragma in _SQLITE_PRAGMAS:
            await connection.execute(pragma)
        return connection

    async def _follow_file(self) -> None:
        """Fail when the file is gone; retire the idle connections when it was replaced."""
        identity = _file_identity(self.path)
        if identity is None:
            raise sqlite3.OperationalError("database file is unavailable")
        if identity == self._identity:
            return
        # Swapped before the first await, so no other checkout can see a
        # retired connection as current.
        retired, self._idle, self._current = self._idle, [], set()
        self._identity = identity
        for connection in retired:
            await connection.close()

    async def acquire(self) -> aiosqlite.Connection:
        if self._slots is None:
            return await self._open()
        await self._slots.acquire()
        try:
            await self._follow_file()
            if self._idle:
                return self._idle.pop()
            connection = await self._open()
            self._current.add(connection)
            return connection
        except BaseException:
            self._slots.release()
            raise

    async def release(self, connection: aiosqlite.Connection, *, reusable: bool = True) -> None:
        """Hand a connection back; `reusable=False` closes it instead.

        A query cancelled while aiosqlite's thread runs it leaves a cursor
        nobody closes, holding a read snapshot (which blocks the WAL
        checkpoints purges need): such a connection is not reused.
        """
        # Kept only when it is on the current file and no transaction was left
        # open (a failed COMMIT): the next user would inherit that transaction.
        keep = reusable and connection in self._current and not connection.in_transaction
        if keep:
            self._idle.append(connection)
        else:
            self._current.discard(connection)
        if self._slots is not None:
            self._slots.release()
        if not keep:
            # Shielded: a caller cancelled once more must not leave it (and its thread) open.
            await asyncio.shield(connection.close())

    async def get_connection(self) -> aiosqlite.Connection:
        return await self.acquire()

    @property
    def lent(self) -> int:
        """Pooled connections out with a caller now (0 without a pool)."""
        return len(self._current) - len(self._idle) if self._slots is not None else 0

    async def _run_in_new_connection(
        self,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: Any = None,
    ) -> Any:
        connection = await self.acquire()
        try:
            async with connection.execute(query, args or []) as cursor:
                rows = await cursor.fetchall()
        except asyncio.CancelledError:
            await self.release(connection, reusable=False)
            raise
        except BaseException:
            await self.release(connection)
            raise
        await self.release(connection)
        return rows

    async def truncate_wal(self) -> bool:
        """Checkpoint and empty the write-ahead log; False when readers kept it busy.

        Bounded: readers in flight make TRUNCATE wait in SQLite's busy
        handler, so this connection waits briefly per try, and tries a few times.
        """
        connection = await self.acquire()
        try:
            await connection.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")
            for _ in range(CHECKPOINT_ATTEMPTS):
                async with connection.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                    result = await cursor.fetchone()
                if not result["busy"]:
                    return True
                await asyncio.sleep(0.02)
            return False
        finally:
            await connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            await self.release(connection)

    def transaction(
        self,
        transaction_type: TransactionType = TransactionType.deferred,
        allow_nested: bool = True,
    ) -> PooledSQLiteTransaction:
        return PooledSQLiteTransaction(
            engine=self, transaction_type=transaction_type, allow_nested=allow_nested
        )


def create_engine(config: DatabaseConfig) -> Engine:
    if config.is_sqlite:
        assert config.sqlite_path is not None
        return PooledSQLiteEngine(path=str(config.sqlite_path))
    return PostgresEngine(
        config={"dsn": config.postgres_dsn, "timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
    )


def bind_tables(engine: Engine) -> None:
    """Point every table at `engine` (tests switch engines; the app binds once)."""
    for table in TABLES:
        table._meta.db = engine


async def start(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        # The statement bound is for the serving pool only: one-off connections
        # (migrations) may legitimately run longer.
        await engine.start_connection_pool(
            max_size=POSTGRES_POOL_MAX_SIZE,
            timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS,
            command_timeout=POSTGRES_COMMAND_TIMEOUT_SECONDS,
        )
    elif isinstance(engine, PooledSQLiteEngine):
        await engine.start_connection_pool()


async def stop(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine | PooledSQLiteEngine):
        await engine.close_connection_pool()


def connections_in_use(engine: Engine) -> int:
    """Connections lent out of the engine's pool now; 0 without a pool."""
    if isinstance(engine, PooledSQLiteEngine):
        return engine.lent
    if isinstance(engine, PostgresEngine) and engine.pool is not None:
        return engine.pool.get_size() - engine.pool.get_idle_size()
    return 0


def is_sqlite(engine: Engine) -> bool:
    return engine.engine_type == "sqlite"


def current_engine() -> Engine:
    """The engine the tables are bound to."""
    return TABLES[0]._meta.db


def for_update(query: Select) -> Select:
    """Lock the selected rows until the transaction ends (PostgreSQL).

    SQLite has no row locks: there `write_transaction` already holds the
    database write lock, which serializes the same critical sections.
    """
    return query if is_sqlite(current_engine()) else query.lock_rows()


@asynccontextmanager
async def write_transaction() -> AsyncIterator[None]:
    """A transaction that takes the write lock up front.

    On SQLite, BEGIN IMMEDIATE makes the lock-then-read-then-write sequences
    of the domain serialize across connections and processes, the role row
    locks (`FOR UPDATE`) play on PostgreSQL.
    """
    engine = current_engine()
    if isinstance(engine, SQLiteEngine):
        async with engine.transaction(transaction_type=TransactionType.immediate):
            yield
    else:
        async with PostgresWriteTransaction(engine=engine):
            yield


# Pings given up on at their deadline, referenced until they have unwound.
_abandoned_pings: set[asyncio.Task[Any]] = set()


def _forget_ping(query: asyncio.Task[Any]) -> None:
    _abandoned_pings.discard(query)
    if not query.cancelled():
        query.exception()  # nobody waits for it any more: this marks it seen


async def ping(engine: Engine, within: float) -> None:
    """Raise when the database cannot answer a trivial query within `within` seconds."""
    await answer_within(engine.run_ddl("SELECT 1"), within)


async def answer_within(query: Coroutine[Any, Any, T], within: float) -> T:
    """The result of `query`, or TimeoutError when it takes more than `within` seconds.

    At the deadline the query is cancelled and left to unwind by itself:
    asyncio.wait_for would also wait for that, and asyncpg's cancel request
    to a database that answers nothing can take the whole statement timeout.
    """
    task = asyncio.create_task(query)
    try:
        done, _ = await asyncio.wait({task}, timeout=within)
    finally:
        if not task.done():
            task.cancel()
            _abandoned_pings.add(task)
            task.add_done_callback(_forget_ping)
    if not done:
        raise TimeoutError(f"the database did not answer within {within} s")
    return task.result()


def is_unique_violation(exc: BaseException) -> bool:
    """A UNIQUE index refused the write (either engine)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(exc)
    return isinstance(exc, asyncpg.UniqueViolationError)


async def erase_freed_pages() -> None:
    """Make erased rows unrecoverable from the SQLite files.

    secure_delete zeroes freed space in the database, but the write-ahead
    log still holds earlier page images until a checkpoint: TRUNCATE copies
    the log back and empties it. PostgreSQL reclaims dead tuples with VACUUM,
    which is the operator's schedule, not a request's.
    """
    engine = current_engine()
    if isinstance(engine, PooledSQLiteEngine):
        truncated = await engine.truncate_wal()
    elif is_sqlite(engine):
        rows = await engine.run_ddl("PRAGMA wal_checkpoint(TRUNCATE)")
        truncated = bool(rows) and not rows[0]["busy"]
    else:
        return
    if not truncated:
        logger.warning(
            "the write-ahead log could not be truncated (readers kept it busy); "
            "erased rows leave it at the next checkpoint"
        )
