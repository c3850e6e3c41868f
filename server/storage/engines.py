"""Which engine the tables use: creating, binding, starting and stopping it, and pinging it.

Both pools outlive a database outage: asyncpg reconnects a pooled
connection that was closed under it, and the SQLite pool checks on every
checkout that the file at its path is still the one it has open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from server.config import DatabaseConfig
from server.storage.sqlite_pool import PooledSQLiteEngine
from server.storage.tables import TABLES

T = TypeVar("T")
E = TypeVar("E", bound=Engine[Any])

POSTGRES_POOL_MAX_SIZE = 10
# A connection attempt or a statement that gets no answer (a dropped network
# path rather than a refused one) fails after these instead of waiting forever.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5.0
POSTGRES_COMMAND_TIMEOUT_SECONDS = 30.0


class QuietPostgresEngine(PostgresEngine):
    """Piccolo's PostgresEngine, without the server version it fetches when constructed.

    Piccolo connects from the constructor to log that version, and on a
    database it cannot reach logs "version 0.0" under a coloured warning;
    ghvault says itself, in one line, when the database cannot be reached.
    """

    async def check_version(self) -> None:
        return None


def create_engine(config: DatabaseConfig) -> Engine[Any]:
    if config.is_sqlite:
        assert config.sqlite_path is not None
        return PooledSQLiteEngine(path=str(config.sqlite_path))
    options: dict[str, Any] = {
        "dsn": config.postgres_dsn,
        "timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS,
    }
    if config.pooled_per_transaction:
        # The next statement may reach another server connection, where a statement
        # prepared on this one does not exist: asyncpg then uses unnamed statements.
        options["statement_cache_size"] = 0
    return QuietPostgresEngine(config=options)


def bind_tables(engine: Engine[Any]) -> None:
    """Point every table at `engine` (tests switch engines; the app binds once)."""
    # `_meta` is Piccolo's documented table metadata (TableMeta), not private state.
    for table in TABLES:
        table._meta.db = engine


def connections_in_use(engine: Engine[Any]) -> int:
    """Connections lent out of the engine's pool now; 0 without a pool."""
    if isinstance(engine, PooledSQLiteEngine):
        return engine.lent
    if isinstance(engine, PostgresEngine) and engine.pool is not None:
        return engine.pool.get_size() - engine.pool.get_idle_size()
    return 0


def current_engine() -> Engine[Any]:
    """The engine the tables are bound to."""
    return TABLES[0]._meta.db


def is_sqlite(engine: Engine[Any]) -> bool:
    return engine.engine_type == "sqlite"


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's reset query.

    The default sends `RESET ALL; UNLISTEN *; CLOSE ALL; ...` on every
    release, a round trip per query. ghvault sets no session state (no SET,
    LISTEN, advisory lock or cursor outside a transaction), and asyncpg
    still rolls back a transaction left open before this runs.
    """


async def start(engine: Engine[Any]) -> None:
    if isinstance(engine, PostgresEngine):
        # The statement bound is for the serving pool only: one-off connections
        # (migrations) may legitimately run longer.
        await engine.start_connection_pool(
            max_size=POSTGRES_POOL_MAX_SIZE,
            timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS,
            command_timeout=POSTGRES_COMMAND_TIMEOUT_SECONDS,
            reset=_keep_session,
        )
    elif isinstance(engine, PooledSQLiteEngine):
        await engine.start_connection_pool()


async def stop(engine: Engine[Any]) -> None:
    if isinstance(engine, PostgresEngine | PooledSQLiteEngine):
        await engine.close_connection_pool()


@asynccontextmanager
async def serving(engine: E) -> AsyncIterator[E]:
    """The tables bound to `engine` and its pool started, until the block ends."""
    bind_tables(engine)
    await start(engine)
    try:
        yield engine
    finally:
        await stop(engine)


# Pings given up on at their deadline, referenced until they have unwound.
_abandoned_pings: set[asyncio.Task[Any]] = set()


def _forget_ping(query: asyncio.Task[Any]) -> None:
    _abandoned_pings.discard(query)
    if not query.cancelled():
        query.exception()  # nobody waits for it any more: this marks it seen


async def ping(engine: Engine[Any], within: float) -> None:
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
