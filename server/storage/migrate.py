"""`ghvault migrate`: Piccolo's forwards migrations, on the database it names, created on request.

A database without ghvault's tables (a SQLite file that does not exist yet,
or a PostgreSQL database never migrated) is only set up with `create=True`:
a mistyped DATABASE_URL must not quietly become a new, empty vault.
Piccolo's own progress lines are kept out of the output; the report says
which database was migrated, whether it was new, and how many migrations ran.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

from piccolo.engine.base import Engine
from piccolo.engine.finder import engine_finder

from server.config import DatabaseConfig
from server.storage.migration_state import (
    DATABASE_UNREACHABLE,
    DatabaseNotReady,
    applied_migration_ids,
    refuse_a_missing_file,
    shipped_migration_ids,
    unreachable,
)
from server.storage.sqlite_files import create_private


@dataclass(frozen=True)
class MigrationReport:
    label: str
    created: bool
    applied: int
    total: int

    def summary(self) -> str:
        if self.created:
            return f"created {self.label}: {self.applied} migrations applied"
        if self.applied:
            return f"migrated {self.label}: {self.applied} of {self.total} migrations applied"
        return f"{self.label} is up to date ({self.total} migrations)"


def _engine() -> Engine[Any]:
    """The engine Piccolo migrates with: piccolo_conf's, from the same DATABASE_URL."""
    engine = engine_finder()
    assert engine is not None, "piccolo_conf defines DB"
    return engine


def _prepare_file(database: DatabaseConfig, *, create: bool) -> bool:
    """Whether the SQLite file is new; created (private) when it may be."""
    if database.sqlite_path is None or database.sqlite_path.exists():
        return False
    if not create:
        refuse_a_missing_file(_engine())
    create_private(database.sqlite_path)
    return True


async def migrate(database: DatabaseConfig, *, create: bool) -> MigrationReport:
    """Apply every pending migration; DatabaseNotReady (one line) when that cannot be done."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    engine = _engine()
    new_file = _prepare_file(database, create=create)
    try:
        before = frozenset() if new_file else await applied_migration_ids(engine)
    except DATABASE_UNREACHABLE as exc:
        raise unreachable(exc) from None
    if not before and not create:
        raise DatabaseNotReady(
            f"{database.label} holds no ghvault tables: check DATABASE_URL, or run "
            "`ghvault migrate --create` to set up a new, empty vault there"
        )
    unknown = before - shipped_migration_ids()
    if unknown:
        raise DatabaseNotReady(
            f"{database.label} has {len(unknown)} migration(s) this ghvault does not know: "
            "run the ghvault release that applied them, or a newer one"
        )
    progress = io.StringIO()
    try:
        with contextlib.redirect_stdout(progress):
            result = await run_forwards(app_name="all")
        after = await applied_migration_ids(engine)
    except DATABASE_UNREACHABLE as exc:
        raise unreachable(exc) from None
    if not result.success:
        reason = (result.message or progress.getvalue() or "unknown").strip().splitlines()[-1]
        raise DatabaseNotReady(f"migrating {database.label} failed: {reason}")
    return MigrationReport(
        label=database.label,
        created=not before,
        applied=len(after - before),
        total=len(after),
    )
