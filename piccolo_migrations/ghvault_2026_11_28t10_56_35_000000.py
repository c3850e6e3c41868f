"""Composite unique indexes and the app-type check.

Raw SQL, valid on both engines: Piccolo's composite Unique constraint fails on
SQLite, and SQLite cannot add a CHECK to an existing table, so it gets
triggers instead. A migration of its own because Piccolo runs a migration's
raw SQL before the tables it creates.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.storage.ddl import migrating_sqlite, run_ddl

ID = "2026-11-28T10:56:35:000000"
VERSION = "1.38.0"
DESCRIPTION = "Unique (user, app type) and (GitHub user, app type); app-type check"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="ghvault", description=DESCRIPTION)

    async def add_constraints() -> None:
        await run_ddl(_constraint_statements())

    async def drop_constraints() -> None:
        await run_ddl(_drop_constraint_statements())

    manager.add_raw(add_constraints)
    manager.add_raw_backwards(drop_constraints)

    return manager


_APP_TYPES = "('standard', 'lite')"

_INDEXES = (
    "CREATE UNIQUE INDEX user_github_app_tokens_user_app_unique "
    "ON user_github_app_tokens (user_id, github_app_type)",
    "CREATE UNIQUE INDEX user_github_app_tokens_github_user_app_unique "
    "ON user_github_app_tokens (github_user_id, github_app_type)",
)


def _constraint_statements() -> list[str]:
    if migrating_sqlite():
        checks = [
            f"CREATE TRIGGER user_github_app_tokens_app_type_{event.lower()} "
            f"BEFORE {event} ON user_github_app_tokens "
            f"WHEN NEW.github_app_type NOT IN {_APP_TYPES} "
            "BEGIN SELECT RAISE(ABORT, 'github_app_type must be standard or lite'); END"
            for event in ("INSERT", "UPDATE")
        ]
    else:
        checks = [
            "ALTER TABLE user_github_app_tokens ADD CONSTRAINT "
            f"user_github_app_tokens_app_type_check CHECK (github_app_type IN {_APP_TYPES})"
        ]
    return [*_INDEXES, *checks]


def _drop_constraint_statements() -> list[str]:
    if migrating_sqlite():
        checks = [
            f"DROP TRIGGER IF EXISTS user_github_app_tokens_app_type_{event}"
            for event in ("insert", "update")
        ]
    else:
        checks = [
            "ALTER TABLE user_github_app_tokens "
            "DROP CONSTRAINT IF EXISTS user_github_app_tokens_app_type_check"
        ]
    indexes = [
        "DROP INDEX IF EXISTS user_github_app_tokens_user_app_unique",
        "DROP INDEX IF EXISTS user_github_app_tokens_github_user_app_unique",
    ]
    return [*checks, *indexes]
