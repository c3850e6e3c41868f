"""Rolling migrations back without losing data by accident.

Undoing a migration that created a table drops the table and every row in
it. Such a backwards step first counts the rows it would drop and, when
there are any, refuses before changing anything of its migration, naming
the tables and how many rows each holds, unless the operator asked for the
loss: `ghvault migrate --backwards ID --drop-data`, or
GHVAULT_MIGRATIONS_DROP_DATA=yes with `piccolo migrations backwards`.

Replay protection is never dropped at all (`KeepTablesOnRollback`): a
signed webhook body that was acted on must stay refused after any rollback
and migration forwards again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.base import Engine

from server.storage.ddl import migration_engine
from server.storage.migration_state import has_table

DROP_DATA_VARIABLE = "GHVAULT_MIGRATIONS_DROP_DATA"
_YES = ("1", "yes", "true")


class RollbackWouldDropData(Exception):
    """A backwards migration would drop rows nobody agreed to lose; one line for the operator."""


def dropping_data_allowed() -> bool:
    return os.environ.get(DROP_DATA_VARIABLE, "").strip().lower() in _YES


async def _rows(engine: Engine[Any], table: str) -> int:
    # Table names come from the migrations themselves, never from a caller.
    result = await engine.run_ddl(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608
    return int(result[0]["n"])


async def refuse_to_drop_rows(migration_id: str, tables: Sequence[str]) -> None:
    """Raise RollbackWouldDropData when undoing `migration_id` would drop rows of `tables`."""
    if dropping_data_allowed():
        return
    engine = migration_engine()
    holding = {table: n for table in tables if (n := await _rows(engine, table))}
    if not holding:
        return
    counts = ", ".join(f"{table} ({n} row{'' if n == 1 else 's'})" for table, n in holding.items())
    raise RollbackWouldDropData(
        f"undoing migration {migration_id} would drop {counts}, so nothing of it was undone "
        "(`ghvault migrate` restores any later ones undone before it). To drop them, run "
        f"`ghvault migrate --backwards {migration_id} --drop-data`, or set "
        f"{DROP_DATA_VARIABLE}=yes for `piccolo migrations backwards`"
    )


class RefuseToDropRows(MigrationManager):
    """A migration whose undoing drops the tables it created only while they are empty,
    or when the operator asked for the loss (see the module's docstring)."""

    async def run(self, backwards: bool = False) -> None:
        if backwards and not self.preview:
            await refuse_to_drop_rows(
                self.migration_id, [table.tablename for table in self.add_tables]
            )
        await super().run(backwards=backwards)


class KeepTablesOnRollback(MigrationManager):
    """A migration creating tables that outlive its rollback, rows and all.

    Backwards it leaves them (and says so); forwards again it finds them and
    creates nothing. The tables it describes stay in `add_tables`, so
    `piccolo migrations new --auto` sees them like any others.
    """

    async def run(self, backwards: bool = False) -> None:
        engine = migration_engine()
        names = [table.tablename for table in self.add_tables]
        # Piccolo's own progress line, which its command ends with "ok!".
        if backwards:
            print(f"  - {self.migration_id} [backwards]... keeping {', '.join(names)}, ", end="")
            return
        if all([await has_table(engine, name) for name in names]):
            print(f"  - {self.migration_id} [forwards]... {', '.join(names)} kept, ", end="")
            return
        await super().run(backwards=False)
