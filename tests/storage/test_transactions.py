"""Write transactions on both engines: what the domain relies on from them.

These pin the behaviour ghvault builds on Piccolo's transaction API, so an
upgrade that changes it fails here rather than in production.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from server.storage.engines import connections_in_use
from server.storage.pooled_transactions import PooledPostgresTransaction, PooledSQLiteTransaction
from server.storage.tables import User
from server.storage.transactions import write_transaction
from tests.helpers import Database

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T = TypeVar("T")


class Refused(Exception):
    """Stands for a statement the database refused."""


def transaction_class(database: Database) -> type:
    return PooledSQLiteTransaction if database.is_sqlite else PooledPostgresTransaction


async def add_user(user_id: str) -> None:
    await User.insert(User(id=user_id, created_at=NOW))


async def user_ids() -> set[str]:
    return {row["id"] for row in await User.select(User.id)}


async def outside_any_transaction(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `work` on its own connection, as another request would."""
    return await asyncio.create_task(work(), context=contextvars.Context())


async def test_a_transaction_that_ends_normally_commits(database: Database) -> None:
    """Make sure what a write transaction wrote is there once it ends."""
    async with write_transaction():
        await add_user("alice")
    assert await outside_any_transaction(user_ids) == {"alice"}
    assert connections_in_use(database.engine) == 0


async def test_a_transaction_that_raises_rolls_back(database: Database) -> None:
    """Make sure nothing of a failed write transaction stays, and its error comes out."""

    async def write_then_fail() -> None:
        async with write_transaction():
            await add_user("alice")
            raise Refused

    with pytest.raises(Refused):
        await write_then_fail()
    assert await user_ids() == set()
    assert connections_in_use(database.engine) == 0


async def test_a_nested_transaction_joins_the_outer_one(database: Database) -> None:
    """Make sure an inner transaction neither commits early nor survives the outer rollback."""

    async def nest_then_fail() -> None:
        async with write_transaction():
            async with write_transaction():
                await add_user("alice")
            # The inner one ended: still nothing visible to anyone else.
            assert await outside_any_transaction(user_ids) == set()
            assert await user_ids() == {"alice"}
            raise Refused

    with pytest.raises(Refused):
        await nest_then_fail()
    assert await user_ids() == set()
    assert connections_in_use(database.engine) == 0


async def test_the_connection_goes_back_when_begin_fails(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make sure a BEGIN that fails (a timeout, a busy database) does not keep its connection."""

    async def refuse(self: Any) -> None:
        raise Refused

    monkeypatch.setattr(transaction_class(database), "begin", refuse)
    for _ in range(12):  # more than either pool holds
        with pytest.raises(Refused):
            async with write_transaction():
                pytest.fail("the body ran without a transaction")
    assert connections_in_use(database.engine) == 0
    monkeypatch.undo()
    async with write_transaction():
        await add_user("alice")
    assert await user_ids() == {"alice"}


async def test_the_connection_goes_back_when_commit_fails(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make sure a COMMIT that fails keeps no connection, and nothing of its writes."""

    async def refuse(self: Any) -> None:
        raise Refused

    monkeypatch.setattr(transaction_class(database), "commit", refuse)
    for user_id in ("alice", "bob"):
        with pytest.raises(Refused):
            async with write_transaction():
                await add_user(user_id)
    monkeypatch.undo()
    assert connections_in_use(database.engine) == 0
    assert await user_ids() == set()


async def test_a_cancelled_transaction_rolls_back_and_gives_its_connection_back(
    database: Database,
) -> None:
    """Make sure cancelling a request mid-transaction leaves neither its writes nor a
    checked-out connection."""
    wrote = asyncio.Event()

    async def write_then_wait() -> None:
        async with write_transaction():
            await add_user("alice")
            wrote.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(write_then_wait())
    await wrote.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert connections_in_use(database.engine) == 0
    assert await user_ids() == set()
    async with write_transaction():
        await add_user("bob")
    assert await user_ids() == {"bob"}


async def test_a_transaction_committed_by_hand_is_not_committed_again(
    database: Database,
) -> None:
    """Make sure the exit leaves a transaction the caller already ended alone."""
    engine = database.engine
    transaction = (
        engine.transaction() if database.is_sqlite else PooledPostgresTransaction(engine=engine)
    )
    async with transaction:
        await add_user("alice")
        await transaction.commit()
    assert await user_ids() == {"alice"}
    assert connections_in_use(engine) == 0
