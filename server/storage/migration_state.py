"""Whether a database holds exactly the migrations this ghvault ships.

A server on a database that lacks a migration fails on every query that
touches the missing part ("no such table"); one on a database migrated by a
newer ghvault may write rows that release does not expect. Both refuse to
start and are never ready, and say what to run instead.
"""

from __future__ import annotations

import ast
import functools
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.sqlite import SQLiteEngine

from server.redaction import redact
from server.storage import engines
from server.storage.engines import is_sqlite

# The top-level migrations folder: beside the `server` package, in the
# repository and in an installed wheel alike.
MIGRATIONS_FOLDER = Path(__file__).resolve().parents[2] / "piccolo_migrations"

# Piccolo's bookkeeping table: one row per migration that ran, per app.
_APPLIED = "SELECT name FROM migration WHERE app_name = 'ghvault'"


# What opening a connection raises when the database is not there: refused or
# unresolvable hosts, no answer, wrong credentials or database name, an
# unwritable SQLite path or a file that is not a database.
DATABASE_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
)


class DatabaseNotReady(Exception):
    """The database cannot serve this ghvault; the message (one line) says what to do."""


def unreachable(exc: BaseException) -> DatabaseNotReady:
    return DatabaseNotReady(
        f"cannot reach the database of DATABASE_URL: {type(exc).__name__}: {redact(str(exc))}"
    )


def refuse_a_missing_file(engine: Engine[Any]) -> None:
    """DatabaseNotReady when `engine` is SQLite's and its file does not exist."""
    if isinstance(engine, SQLiteEngine) and not Path(engine.path).exists():
        raise DatabaseNotReady(
            f"there is no database at {Path(engine.path).absolute()}: check DATABASE_URL, or "
            "run `ghvault migrate --create` to make a new, empty one there"
        )


@asynccontextmanager
async def serving_checked(engine: Engine[Any]) -> AsyncIterator[None]:
    """`engines.serving(engine)` once the database is there and holds this release's migrations.

    Raises DatabaseNotReady otherwise. A SQLite file that does not exist is
    refused rather than created: a mistyped path must not become a new vault.
    """
    refuse_a_missing_file(engine)
    ready = False
    try:
        async with engines.serving(engine):
            await check_schema(engine)
            ready = True
            yield
    except DATABASE_UNREACHABLE as exc:
        if ready:
            raise
        raise unreachable(exc) from None


@functools.cache
def shipped_migration_ids() -> frozenset[str]:
    """The ids of the migrations in this release: each module's `ID`, as Piccolo reads it.

    Read from the source rather than imported: the migration modules (and
    the Piccolo app config) pull in Piccolo's migration machinery, black
    included, which a server has no use for.
    """
    files = MIGRATIONS_FOLDER.glob("*.py")
    ids = (_module_id(path) for path in files if path.name != "__init__.py")
    return frozenset(migration_id for migration_id in ids if migration_id is not None)


def _module_id(path: Path) -> str | None:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(target, "id", None) for target in node.targets] == ["ID"]
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


async def has_table(engine: Engine[Any], name: str) -> bool:
    """Whether the database has the table `name` (one of ghvault's, never a caller's)."""
    if is_sqlite(engine):
        query = f"SELECT name FROM sqlite_master WHERE type = 'table' AND name = '{name}'"  # noqa: S608
        return bool(await engine.run_ddl(query))
    found = await engine.run_ddl(f"SELECT to_regclass('{name}') IS NOT NULL AS present")
    return bool(found[0]["present"])


async def applied_migration_ids(engine: Engine[Any]) -> frozenset[str]:
    """The ids of the migrations that ran on the database; none when it was never migrated."""
    if not await has_table(engine, "migration"):
        return frozenset()
    return frozenset(row["name"] for row in await engine.run_ddl(_APPLIED))


async def schema_problem(engine: Engine[Any]) -> str | None:
    """What is wrong with the database's migrations, as one line; None when nothing is."""
    shipped = shipped_migration_ids()
    applied = await applied_migration_ids(engine)
    unknown = sorted(applied - shipped)
    if unknown:
        return (
            f"the database has {len(unknown)} migration(s) this ghvault does not know "
            f"({', '.join(unknown)}): run the ghvault release that applied them, or a newer one"
        )
    missing = shipped - applied
    if not applied:
        return (
            f"the database lacks {len(missing)} of {len(shipped)} migrations (it holds no "
            "ghvault tables): check DATABASE_URL, or run `ghvault migrate --create` to set it up"
        )
    if missing:
        return (
            f"the database lacks {len(missing)} of {len(shipped)} migrations: "
            "run `ghvault migrate` first"
        )
    return None


async def check_schema(engine: Engine[Any]) -> None:
    """Raise DatabaseNotReady unless the database holds exactly the shipped migrations."""
    problem = await schema_problem(engine)
    if problem is not None:
        raise DatabaseNotReady(problem)
