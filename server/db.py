"""Database engines: a pooled SQLite engine, the PostgreSQL pool, transactions.

Piccolo's SQLiteEngine opens a connection (and a thread) per query; the
pooled engine below keeps a few connections open and configures each one
(WAL, busy timeout, foreign keys, secure delete) once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, SQLiteTransaction, TransactionType, dict_factory
from piccolo.query.methods.select import Select

from server.config import DatabaseConfig
from server.tables import TABLES

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_POOL_SIZE = 4
POSTGRES_POOL_MAX_SIZE = 10

# Per-connection settings; journal_mode=WAL is persistent but cheap to re-assert.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA secure_delete = ON",
    "PRAGMA synchronous = NORMAL",
)


class PooledSQLiteTransaction(SQLiteTransaction):
    """A transaction on a pooled connection, handed back instead of closed."""

    async def get_connection(self) -> aiosqlite.Connection:
        return await self.engine.acquire()

    async def __aexit__(self, exception_type, exception, traceback) -> bool:
        if self._parent:
            return exception is None
        try:
            if exception:
                if not self._rolled_back:
                    await self.rollback()
            elif not self._committed and not self._rolled_back:
                await self.commit()
        finally:
            self.engine.release(self.connection)
            self.engine.current_transaction.reset(self.context)
        return exception is None


class PooledSQLiteEngine(SQLiteEngine):
    """SQLiteEngine with kept connections once `start_connection_pool` ran.

    Without a started pool (the piccolo CLI, one-off scripts) it opens a
    configured connection per query, as SQLiteEngine does.
    """

    def __init__(self, path: str, pool_size: int = SQLITE_POOL_SIZE) -> None:
        super().__init__(path=path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        self.pool_size = pool_size
        self._idle: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all: list[aiosqlite.Connection] = []

    async def start_connection_pool(self) -> None:
        if self._idle is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for _ in range(self.pool_size):
            connection = await self._open()
            self._all.append(connection)
            idle.put_nowait(connection)
        self._idle = idle

    async def close_connection_pool(self) -> None:
        connections, self._all, self._idle = self._all, [], None
        for connection in connections:
            await connection.close()

    async def _open(self) -> aiosqlite.Connection:
        connection = await aiosqlite.connect(**self.connection_kwargs)
        connection.row_factory = dict_factory  # type: ignore[assignment]
        for pragma in _SQLITE_PRAGMAS:
            await connection.execute(pragma)
        return connection

    async def acquire(self) -> aiosqlite.Connection:
        if self._idle is None:
            return await self._open()
        return await self._idle.get()

    def release(self, connection: aiosqlite.Connection) -> None:
        if self._idle is None or connection not in self._all:
            # Pool-less (or closed meanwhile): this connection was opened for one use.
            asyncio.get_running_loop().create_task(connection.close())
            return
        self._idle.put_nowait(connection)

    async def get_connection(self) -> aiosqlite.Connection:
        return await self.acquire()

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
                return await cursor.fetchall()
        finally:
            self.release(connection)

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
    return PostgresEngine(config={"dsn": config.postgres_dsn})


def bind_tables(engine: Engine) -> None:
    """Point every table at `engine` (tests switch engines; the app binds once)."""
    for table in TABLES:
        table._meta.db = engine


async def start(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(max_size=POSTGRES_POOL_MAX_SIZE)
    elif isinstance(engine, PooledSQLiteEngine):
        await engine.start_connection_pool()


async def stop(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine | PooledSQLiteEngine):
        await engine.close_connection_pool()


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
        async with engine.transaction():
            yield


async def ping(engine: Engine) -> None:
    """Raise when the database cannot answer a trivial query."""
    await engine.run_ddl("SELECT 1")


def is_unique_violation(exc: BaseException) -> bool:
    """A UNIQUE index refused the write (either engine)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(exc)
    return isinstance(exc, asyncpg.UniqueViolationError)


async def erase_freed_pages() -> None:
    """Make erased rows unrecoverable from the SQLite files.

    secure_delete zeroes freed space in the database, but the write-ahead
    log still holds earlier page images until a checkpoint: TRUNCATE copies
    the log back and empties it. Readers in flight can make it report busy,
    so it is retried briefly. PostgreSQL reclaims dead tuples with VACUUM,
    which is the operator's schedule, not a request's.
    """
    engine = current_engine()
    if not is_sqlite(engine):
        return
    for _ in range(50):
        rows = await engine.run_ddl("PRAGMA wal_checkpoint(TRUNCATE)")
        if not rows or not rows[0]["busy"]:
            return
        await asyncio.sleep(0.02)
