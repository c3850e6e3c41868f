"""What the migrations in piccolo_migrations/ run their SQL through."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from piccolo.engine import engine_finder
from piccolo.engine.base import Engine


def migration_engine() -> Engine[Any]:
    """The engine piccolo_conf.py configures, which `piccolo migrations` runs on."""
    engine = engine_finder()
    if engine is None:
        raise RuntimeError("piccolo_conf.py configures no engine (DB)")
    return engine


def migrating_sqlite() -> bool:
    return migration_engine().engine_type == "sqlite"


async def run_ddl(statements: Iterable[str]) -> None:
    """Run each statement in turn, in the migration's transaction."""
    engine = migration_engine()
    for statement in statements:
        await engine.run_ddl(statement)
