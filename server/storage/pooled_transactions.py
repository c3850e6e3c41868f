"""Transactions that give their connection back however they end, on either engine.

Piccolo's transactions keep the connection checked out when BEGIN, COMMIT or
ROLLBACK raises (a statement timeout while the database does not answer, a
cancellation): each such failure takes a connection from the pool for good,
and closing the pool then waits for it forever. The two classes here share
one enter and one exit that always give it back. They use Piccolo's public
transaction API only (`begin`, `commit`, `rollback`, `connection`, the
engine's `current_transaction`) and keep their own state for the rest.
"""

from __future__ import annotations

import asyncio
from contextvars import Token
from typing import TYPE_CHECKING, Any

from piccolo.engine.postgres import PostgresTransaction
from piccolo.engine.sqlite import SQLiteTransaction, TransactionType

if TYPE_CHECKING:
    from piccolo.engine.base import BaseTransaction

    class _PiccoloTransaction(BaseTransaction):
        """What the mixin below uses of PostgresTransaction and SQLiteTransaction,
        which follow it in its subclasses' bases."""

        def __init__(self, engine: Any, *args: Any, **kwargs: Any) -> None: ...
        async def begin(self) -> None: ...
        async def commit(self) -> None: ...
        async def rollback(self) -> None: ...
else:
    _PiccoloTransaction = object


class PooledTransaction(_PiccoloTransaction):
    """The enter and exit both engines' transactions share.

    Opened inside another transaction of the same engine, it joins that one:
    its queries run on the outer connection, and only the outer transaction
    commits or rolls back. Subclasses say how a connection is borrowed and
    given back.
    """

    engine: Any
    connection: Any

    def __init__(self, engine: Any, *args: Any, **kwargs: Any) -> None:
        self.outer = engine.current_transaction.get()
        self.finished = False  # committed or rolled back, by the exit or by the caller
        self._scope: Token[Any] | None = None
        super().__init__(engine, *args, **kwargs)

    async def borrow(self) -> Any:
        raise NotImplementedError

    async def give_back(self, *, reusable: bool) -> None:
        raise NotImplementedError

    async def commit(self) -> None:
        await super().commit()
        self.finished = True

    async def rollback(self) -> None:
        await super().rollback()
        self.finished = True

    async def __aenter__(self) -> Any:
        if self.outer is not None:
            return self.outer
        self.connection = await self.borrow()
        try:
            await self.begin()
        except BaseException as exc:
            # A cancelled BEGIN may still be queued on the connection.
            await self.give_back(reusable=not isinstance(exc, asyncio.CancelledError))
            raise
        self._scope = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(self, exception_type: Any, exception: Any, traceback: Any) -> bool:
        if self.outer is not None:
            return exception is None
        # A body cancelled mid-query may leave that query running on the connection.
        reusable = not isinstance(exception, asyncio.CancelledError)
        try:
            if not self.finished:
                await (self.rollback() if exception else self.commit())
        except BaseException:
            reusable = False
            raise
        finally:
            assert self._scope is not None
            self.engine.current_transaction.reset(self._scope)
            await self.give_back(reusable=reusable)
        return exception is None


class PooledSQLiteTransaction(PooledTransaction, SQLiteTransaction):
    """A transaction on a connection of a PooledSQLiteEngine, handed back instead of closed."""

    @property
    def writes(self) -> bool:
        return self.transaction_type is not TransactionType.deferred

    async def borrow(self) -> Any:
        if self.writes:
            # Writers of this process queue here, in order, instead of polling
            # SQLite's busy handler (which sleeps, and makes latency spiky);
            # other processes are still held off by BEGIN IMMEDIATE.
            await self.engine.writer.acquire()
        try:
            return await self.engine.acquire()
        except BaseException:
            if self.writes:
                self.engine.writer.release()
            raise

    async def give_back(self, *, reusable: bool) -> None:
        try:
            await self.engine.release(self.connection, reusable=reusable)
        finally:
            if self.writes:
                self.engine.writer.release()


class PooledPostgresTransaction(PooledTransaction, PostgresTransaction):
    """A PostgreSQL transaction whose connection goes back to the pool however it ends."""

    async def borrow(self) -> Any:
        pool = self.engine.pool
        connection = await (pool.acquire() if pool else self.engine.get_new_connection())
        self.transaction = connection.transaction()
        return connection

    async def give_back(self, *, reusable: bool) -> None:
        # Whatever comes back, asyncpg's pool resets it (rolling back what a
        # failed COMMIT left open) or drops it, so `reusable` needs no handling.
        if self.engine.pool:
            await self.engine.pool.release(self.connection)
        else:
            await self.connection.close()
