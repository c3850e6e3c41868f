"""The pooled SQLite engine: connection settings and write locking."""

from __future__ import annotations

import sqlite3

import pytest

from server.domain.enums import Role
from server.storage import db
from tests.helpers import SERVICE, STORE, Database, GraphQLClient, bearer, error_codes, store_input

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


async def test_pooled_sqlite_connections_are_configured(database: Database) -> None:
    """WAL, a busy timeout, foreign keys and secure delete on every kept connection."""
    engine = database.engine
    for _ in range(engine.pool_size):
        settings = {}
        for pragma in ("journal_mode", "busy_timeout", "foreign_keys", "secure_delete"):
            rows = await database.fetch(f"PRAGMA {pragma}")
            settings[pragma] = next(iter(rows[0].values()))
        assert settings == {
            "journal_mode": "wal",
            "busy_timeout": db.SQLITE_BUSY_TIMEOUT_MS,
            "foreign_keys": 1,
            "secure_delete": 1,
        }


async def test_write_transactions_take_the_write_lock_up_front(database: Database) -> None:
    """BEGIN IMMEDIATE: while one is open, no other connection can start writing."""
    other = sqlite3.connect(database.sqlite_path, timeout=0, isolation_level=None)
    try:
        async with db.write_transaction():
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_cancelled_query_leaves_no_reader_behind(
    gql: GraphQLClient, clock, database: Database
) -> None:
    """A root field cancelled mid-query (its sibling failed) must not keep a read snapshot:
    it would keep the WAL checkpoint a purge needs from emptying the log."""
    admin = bearer("root", Role.ADMIN)
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    # Whether the cancellation lands mid-query is timing; thirty tries make it all but certain.
    for _ in range(30):
        body = await gql.post(
            '{ user(id: "alice") { id } auditEvents(first: 0) { edges { cursor } } }', auth=admin
        )
        assert error_codes(body) == ["INVALID_INPUT"]

    assert await database.engine.truncate_wal()
