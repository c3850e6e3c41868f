"""What the domain needs around its queries: write transactions, row locks,
unique violations, and erasing freed pages."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from piccolo.engine.sqlite import TransactionType
from piccolo.query.methods.select import Select

from server.storage.engines import current_engine, is_sqlite
from server.storage.pooled_transactions import PooledPostgresTransaction
from server.storage.sqlite_pool import PooledSQLiteEngine

logger = logging.getLogger("ghvault.db")


def for_update(query: Select[Any], skip_locked: bool = False) -> Select[Any]:
    """Lock the selected rows until the transaction ends (PostgreSQL).

    SQLite has no row locks: there `write_transaction` already holds the
    database write lock, which serializes the same critical sections.
    `skip_locked` leaves out rows another transaction holds instead of waiting.
    """
    if is_sqlite(current_engine()):
        return query
    return query.lock_rows(skip_locked=skip_locked)


@asynccontextmanager
async def write_transaction() -> AsyncIterator[None]:
    """A transaction that takes the write lock up front.

    On SQLite, BEGIN IMMEDIATE makes the lock-then-read-then-write sequences
    of the domain serialize across connections and processes, the role row
    locks (`FOR UPDATE`) play on PostgreSQL.
    """
    engine = current_engine()
    if is_sqlite(engine):
        async with engine.transaction(transaction_type=TransactionType.immediate):
            yield
    else:
        async with PooledPostgresTransaction(engine=engine):
            yield


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
