"""Hot single-row reads without the ORM's per-query cost.

A status read and checkout's first SELECT run on every request. Through
Piccolo each one rebuilds the same SELECT and, on SQLite, hops to an
aiosqlite thread and back; the indexed lookup itself takes ~20 µs. Here a
SELECT is compiled once (`PreparedSelect`) and runs:

- on SQLite, on the event loop thread with a plain `sqlite3` connection
  (`LoopReader`): in WAL mode a reader never waits for a writer, so a short
  indexed read does not block the loop. The connection never waits for a
  lock itself (busy timeout 0); in the rare case SQLite answers "busy"
  (a checkpoint truncating the log, recovery) the read goes through the
  pool instead, whose wait is bounded by its busy timeout;
- on PostgreSQL, straight from asyncpg's pool, whose per-connection
  statement cache makes it a prepared statement after the first use.

Inside a transaction, or without a started pool (the CLI), the query goes
through Piccolo as before, so it sees the transaction's own writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from piccolo.engine.postgres import PostgresEngine
from piccolo.query.methods.select import Select

from server.storage.engines import current_engine
from server.storage.sqlite_pool import FileIdentity, PooledSQLiteEngine, _file_identity


class LoopReader:
    """One read-only `sqlite3` connection used on the event loop thread.

    It follows the file at its path as the pool does: a missing file fails
    the read, a replaced one (a restore) is reopened.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._identity: FileIdentity | None = None

    def _current(self) -> sqlite3.Connection:
        identity = _file_identity(self.path)
        if identity is None:
            raise sqlite3.OperationalError("database file is unavailable")
        if self._connection is None or identity != self._identity:
            self.close()
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                # Piccolo's converters: TIMESTAMPTZ to aware datetimes, UUID to UUID.
                detect_types=sqlite3.PARSE_DECLTYPES,
            )
            connection.execute("PRAGMA busy_timeout = 0")
            connection.execute("PRAGMA query_only = ON")
            self._connection, self._identity = connection, identity
        return self._connection

    def fetch(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        cursor = self._current().execute(sql, args)
        # fetchall steps the statement to its end, so no read snapshot stays
        # open after the call (an open one would hold back WAL checkpoints).
        rows = cursor.fetchall()
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


class PreparedSelect:
    """A Piccolo SELECT compiled once per engine kind, run with fresh arguments.

    `build` makes the query from its arguments (positional, in a fixed
    order). On first use with an engine kind it is called with markers to
    learn the SQL and where each argument goes; afterwards only on the
    fallback path. Nothing is compiled at import time (no engine yet).
    """

    def __init__(self, build: Callable[..., Select[Any]], arity: int) -> None:
        self.build = build
        self.arity = arity
        self._compiled: dict[str, tuple[str, list[int]]] = {}

    def _compile(self, engine_type: str) -> tuple[str, list[int]]:
        compiled = self._compiled.get(engine_type)
        if compiled is None:
            markers = [f"\x00argument {index}\x00" for index in range(self.arity)]
            querystring = self.build(*markers).querystrings[0]
            sql, args = querystring.compile_string(engine_type=engine_type)
            compiled = self._compiled[engine_type] = (sql, [markers.index(arg) for arg in args])
        return compiled

    async def first(self, *values: Any) -> dict[str, Any] | None:
        """The first row as a dict of the selected names, or None."""
        engine = current_engine()
        if engine.current_transaction.get() is None:
            if isinstance(engine, PooledSQLiteEngine) and engine.pooled:
                sql, order = self._compile("sqlite")
                args = [values[index] for index in order]
                if engine.loop_reader is None:
                    engine.loop_reader = LoopReader(engine.path)
                try:
                    rows = engine.loop_reader.fetch(sql, args)
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise
                else:
                    return rows[0] if rows else None
                # Through a pooled connection, whose busy timeout waits it out.
                rows = await engine._run_alone(sql, args)
                return dict(rows[0]) if rows else None
            if isinstance(engine, PostgresEngine) and engine.pool is not None:
                sql, order = self._compile("postgres")
                record = await engine.pool.fetchrow(sql, *(values[index] for index in order))
                return dict(record) if record is not None else None
        return await self.build(*values).first()
