"""Which exceptions mean "the database is out, retry later" rather than a bug.

A refused or dropped connection, a server shutting down or not yet
accepting connections, a failover that left this connection on a
read-only standby, a full connection table, a SQLite file that is busy
past its timeout, gone or unreadable: each passes once the database is
back, and callers are told to retry (UNAVAILABLE, HTTP 503). A syntax
error, a constraint violation or a missing table is a bug and stays one.
"""

from __future__ import annotations

import sqlite3

import asyncpg

from server.storage.sqlite_pool import DatabaseFileUnavailable

_OUTAGES = (
    OSError,
    TimeoutError,
    DatabaseFileUnavailable,
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.OperatorInterventionError,  # class 57: shutdown, cannot connect now, cancelled
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.ReadOnlySQLTransactionError,  # a write that reached a standby mid-failover
)
_SQLITE_OUTAGES = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL"}
)


def is_database_outage(exc: BaseException) -> bool:
    if isinstance(exc, _OUTAGES):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # asyncpg's word for a connection closed under it, e.g. by a restarting server.
        return "connection is closed" in str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorname", None) in _SQLITE_OUTAGES
    return False
