"""The pooled SQLite engine: connection settings, write locking, closing every connection."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections import Counter
from typing import Any

import aiosqlite
import pytest
from piccolo.engine.sqlite import TransactionType

from server.domain.enums import Role
from server.storage import transactions
from server.storage.sqlite_pool import SQLITE_BUSY_TIMEOUT_MS, PooledSQLiteEngine
from tests.helpers import SERVICE, STORE, Database, GraphQLClient, bearer, error_codes, store_input

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


async def test_pooled_sqlite_connections_are_configured(database: Database) -> None:
    """WAL, a busy timeout, foreign keys and secure delete on every kept connection."""
    engine = database.sqlite_engine
    for _ in range(engine.pool_size):
        settings = {}
        for pragma in ("journal_mode", "busy_timeout", "foreign_keys", "secure_delete"):
            rows = await database.fetch(f"PRAGMA {pragma}")
            settings[pragma] = next(iter(rows[0].values()))
        assert settings == {
            "journal_mode": "wal",
            "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
            "foreign_keys": 1,
            "secure_delete": 1,
        }


async def test_a_statement_in_a_transaction_is_one_trip_with_dict_rows_and_foreign_keys(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statements skip Piccolo's per-statement PRAGMA and cursor trips: what that relies on
    (rows as dicts, foreign keys enforced, RETURNING) holds inside transactions."""
    trips: Counter[str] = Counter()
    for name in ("execute", "execute_fetchall"):
        original = getattr(aiosqlite.Connection, name)

        def counting(self: Any, *args: Any, _name: str = name, _original: Any = original) -> Any:
            trips[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(aiosqlite.Connection, name, counting)

    async with transactions.write_transaction():
        trips.clear()
        rows = await database.fetch(
            "INSERT INTO users (id, created_at) VALUES ('one-trip', CURRENT_TIMESTAMP) RETURNING id"
        )
        assert rows == [{"id": "one-trip"}]
        assert trips == Counter({"execute_fetchall": 1})
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await database.fetch(
                "INSERT INTO user_github_app_tokens (user_id, github_app_type) "
                "VALUES ('nobody', 'standard')"
            )


async def test_write_transactions_take_the_write_lock_up_front(database: Database) -> None:
    """BEGIN IMMEDIATE: while one is open, no other connection can start writing."""
    other = sqlite3.connect(database.sqlite_file, timeout=0, isolation_level=None)
    try:
        async with transactions.write_transaction():
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
    # A sibling may still be finishing after its response went out: a reader in flight
    # is not one left behind, so wait until every connection is back (or fail: one was kept).
    for _ in range(1000):
        if not database.sqlite_engine.lent:
            break
        await asyncio.sleep(0.01)
    assert database.sqlite_engine.lent == 0

    assert await database.sqlite_engine.truncate_wal()


def connection_threads() -> set[threading.Thread]:
    """Live aiosqlite worker threads: each connection not yet closed has one."""
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.endswith("(_connection_worker_thread)")
    }


async def test_connections_cancelled_at_any_point_are_all_closed(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make sure no connection outlives a request cancelled while it opened or used one:
    an unclosed one keeps its thread, and the process, alive."""
    already_open = connection_threads()
    opens = 0
    connect = aiosqlite.connect

    def counting_connect(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
        nonlocal opens
        opens += 1
        return connect(*args, **kwargs)

    monkeypatch.setattr(aiosqlite, "connect", counting_connect)
    pooled = PooledSQLiteEngine(path=str(database.sqlite_file), pool_size=2)
    unpooled = PooledSQLiteEngine(path=str(database.sqlite_file))  # opens one per query
    await pooled.start_connection_pool()

    async def in_transaction() -> None:
        async with pooled.transaction(transaction_type=TransactionType.immediate):
            await pooled.run_ddl("SELECT count(*) FROM users")

    work = (
        lambda: pooled.run_ddl("SELECT count(*) FROM users"),
        in_transaction,
        pooled.truncate_wal,
        lambda: unpooled.run_ddl("SELECT 1"),
        lambda: unpooled.run_ddl("SELECT count(*) FROM users"),
    )
    rng = random.Random(20261130)
    outcomes: Counter[str] = Counter()
    try:
        for _ in range(300):
            tasks = [asyncio.create_task(rng.choice(work)()) for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.5:
                for _ in range(rng.randrange(60)):
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(rng.random() / 500)
            for task in tasks:
                if rng.random() < 0.8:
                    task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                outcomes[type(result).__name__] += 1
        assert pooled.lent == unpooled.lent == 0
        assert await pooled.run_ddl("SELECT 1 AS one") == [{"one": 1}]
    finally:
        await pooled.close_connection_pool()
        await unpooled.close_connection_pool()

    # Results: rows (queries), None (the transaction), a bool (truncate_wal).
    assert set(outcomes) <= {"CancelledError", "list", "NoneType", "bool"}, outcomes
    assert outcomes["CancelledError"] > 100, outcomes  # the cancellations did land
    left_open = connection_threads() - already_open
    for thread in left_open:
        thread.join(timeout=10)  # closing ends the thread just after `close()` returns
    assert opens > 300
    assert [thread for thread in left_open if thread.is_alive()] == []


async def test_a_connection_opened_while_the_pool_closes_is_closed_when_it_comes_back(
    database: Database,
) -> None:
    """Make sure a checkout that was still opening at shutdown leaves no connection open."""
    already_open = connection_threads()
    engine = PooledSQLiteEngine(path=str(database.sqlite_file), pool_size=1)
    await engine.start_connection_pool()
    await engine.release(await engine.acquire(), reusable=False)  # the next checkout opens
    checkout = asyncio.create_task(engine.acquire())
    await asyncio.sleep(0)  # it is opening now
    await engine.close_connection_pool()
    connection = await checkout
    assert connection_threads() - already_open  # its thread, seen while it is open

    await engine.release(connection)  # nothing closes the pool again after this

    left_open = connection_threads() - already_open
    for thread in left_open:
        thread.join(timeout=10)  # the thread ends just after `close()` returns
    assert [thread for thread in left_open if thread.is_alive()] == []
