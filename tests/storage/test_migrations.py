"""The migrations build the schema the tables describe, undo it, and enforce its rules.

Every database here is made by the test itself (a SQLite file under tmp_path
or a throwaway PostgreSQL database), migrated with the `piccolo` command as
an operator runs it, and examined with plain SQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from server.config import parse_database_url
from server.storage import engines
from server.storage.tables import TABLES
from tests.helpers import (
    PROJECT_ROOT,
    PostgresServer,
    assert_stats_agree_with_rows,
    migrate,
    run_piccolo,
)

ENGINES = ["sqlite", "postgres"]
MIGRATIONS_FOLDER = PROJECT_ROOT / "piccolo_migrations"
GHVAULT = Path(sys.executable).parent / "ghvault"

APP_TABLES = {table._meta.tablename for table in TABLES}
# Kept by triggers, not Piccolo tables (migration 2026-11-30T16:00:00): per engine.
COUNT_TABLES = {
    "sqlite": {"user_github_app_token_counts"},
    "postgres": {"user_github_app_token_counts", "user_github_app_token_count_changes"},
}
# Signed webhook bodies acted on: kept by every rollback (server/storage/rollback.py).
REPLAY_TABLE = "github_webhook_payloads"
UNIQUE_USER_APP = "user_github_app_tokens_user_app_unique"
UNIQUE_GITHUB_USER_APP = "user_github_app_tokens_github_user_app_unique"
APP_TYPE_CHECK = "user_github_app_tokens_app_type_check"
APP_TYPE_TRIGGERS = (
    "user_github_app_tokens_app_type_insert",
    "user_github_app_tokens_app_type_update",
)
# What SQLite reports for each rule; PostgreSQL names the constraint instead.
SQLITE_MESSAGES = {
    UNIQUE_USER_APP: "UNIQUE constraint failed: "
    "user_github_app_tokens.user_id, user_github_app_tokens.github_app_type",
    UNIQUE_GITHUB_USER_APP: "UNIQUE constraint failed: "
    "user_github_app_tokens.github_user_id, user_github_app_tokens.github_app_type",
    APP_TYPE_CHECK: "github_app_type must be standard or lite",
}


# ---------------------------------------------------------------- databases


@dataclass(frozen=True)
class Target:
    """A database a test migrates: its engine and its DATABASE_URL."""

    kind: str  # "sqlite" | "postgres"
    url: str

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"


@contextmanager
def _new_target(kind: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[Target]:
    if kind == "sqlite":
        yield Target("sqlite", f"sqlite:///{folder / 'ghvault.sqlite'}")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database(prefix="ghvault_migrations")
    try:
        yield Target("postgres", url)
    finally:
        server.drop_database(url)


@pytest.fixture(params=ENGINES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A database with nothing in it, one per engine."""
    with _new_target(request.param, request, tmp_path) as target:
        yield target


@pytest.fixture(scope="module", params=ENGINES)
def migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """A database migrated forwards once, shared by this module's read and insert tests."""
    with _new_target(request.param, request, tmp_path_factory.mktemp("migrated")) as target:
        migrate(target.url)
        yield target


class Connection:
    """One connection with `$n` parameters on both engines."""

    def __init__(self, target: Target, raw: Any) -> None:
        self.target = target
        self.raw = raw

    async def execute(self, sql: str, *args: Any) -> None:
        if self.target.is_sqlite:
            self.raw.execute(sql.replace("$", "?"), args)
        else:
            await self.raw.execute(sql, *args)

    def time(self, value: datetime | None) -> Any:
        """A timestamp as the engine's column holds it (Piccolo's text on SQLite)."""
        return str(value) if self.target.is_sqlite and value is not None else value

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.target.is_sqlite:
            return self.raw.execute(sql.replace("$", "?"), args).fetchall()
        return [tuple(row) for row in await self.raw.fetch(sql, *args)]


@asynccontextmanager
async def connect(target: Target) -> AsyncIterator[Connection]:
    if target.is_sqlite:
        raw = sqlite3.connect(target.url.removeprefix("sqlite:///"), isolation_level=None)
        # The app's SQLite engine turns foreign keys on for each connection too.
        raw.execute("PRAGMA foreign_keys = ON")
        try:
            yield Connection(target, raw)
        finally:
            raw.close()
    else:
        pooled = await asyncpg.connect(target.url, timeout=5)
        try:
            yield Connection(target, pooled)
        finally:
            await pooled.close()


async def schema_objects(target: Target) -> set[tuple[str, str]]:
    """(kind, name) of every table, index, sequence, constraint and trigger."""
    async with connect(target) as connection:
        if target.is_sqlite:
            rows = await connection.fetch(
                "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        else:
            rows = await connection.fetch(
                """
                SELECT c.relkind::text, c.relname FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
                UNION ALL
                SELECT 'constraint', con.conname FROM pg_constraint con
                  JOIN pg_namespace n ON n.oid = con.connamespace WHERE n.nspname = 'public'
                UNION ALL
                SELECT 'trigger', t.tgname FROM pg_trigger t
                  JOIN pg_class c ON c.oid = t.tgrelid
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' AND NOT t.tgisinternal
                UNION ALL
                SELECT 'function', p.proname FROM pg_proc p
                  JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
                UNION ALL
                SELECT 'type', t.typname FROM pg_type t
                  JOIN pg_namespace n ON n.oid = t.typnamespace
                  WHERE n.nspname = 'public' AND t.typtype IN ('d', 'e')
                """
            )
    return {(kind, name) for kind, name in rows}


async def table_names(target: Target) -> set[str]:
    async with connect(target) as connection:
        if target.is_sqlite:
            rows = await connection.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = await connection.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
    return {name for (name,) in rows}


def second_migration_objects(target: Target) -> set[str]:
    """Names of what the second migration creates with raw SQL on this engine."""
    checks = set(APP_TYPE_TRIGGERS) if target.is_sqlite else {APP_TYPE_CHECK}
    return {UNIQUE_USER_APP, UNIQUE_GITHUB_USER_APP, *checks}


def piccolo_bookkeeping(target: Target) -> set[tuple[str, str]]:
    """What Piccolo's own `migration` table brings; all that may stay after backwards."""
    if target.is_sqlite:
        return {("table", "migration")}
    return {
        ("r", "migration"),
        ("i", "migration_pkey"),
        ("S", "migration_id_seq"),
        ("constraint", "migration_pkey"),
    }


# ---------------------------------------------------------------- the piccolo command


def run_piccolo_ok(*args: str, target: Target) -> str:
    result = run_piccolo(*args, database_url=target.url)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "failed" not in output.lower(), output
    return result.stdout


def migration_file_ids() -> set[str]:
    """The ID of every migration file in piccolo_migrations/."""
    files = [path for path in MIGRATIONS_FOLDER.glob("*.py") if not path.name.startswith("__")]
    ids = set()
    for path in files:
        match = re.search(r'^ID = "([^"]+)"$', path.read_text(), re.MULTILINE)
        assert match, f"{path.name} has no ID"
        ids.add(match.group(1))
    assert len(ids) == len(files) >= 2
    return ids


def migrations_after(migration_id: str) -> list[str]:
    """The IDs of the migrations that run after `migration_id`, in the order they run."""
    return sorted(other for other in migration_file_ids() if other > migration_id)


def migration_status(target: Target) -> dict[str, str]:
    """Migration ID -> the RAN column of `piccolo migrations check`."""
    output = run_piccolo_ok("migrations", "check", target=target)
    status = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 4 and cells[0] == "ghvault":
            status[cells[1]] = cells[3]
    return status


async def test_forwards_backwards_and_forwards_again_leave_the_same_schema(
    empty_database: Target,
) -> None:
    """Make sure the migrations undo completely, but for the replay protection that
    outlives any rollback (tests/storage/test_rollback.py), and then build the same
    schema again."""
    target = empty_database
    ids = migration_file_ids()

    run_piccolo_ok("migrations", "forwards", "all", target=target)
    first = await schema_objects(target)
    assert await table_names(target) == APP_TABLES | COUNT_TABLES[target.kind] | {"migration"}
    assert second_migration_objects(target) <= {name for _, name in first}
    replay_protection = {item for item in first if item[1].startswith(REPLAY_TABLE)}

    run_piccolo_ok("migrations", "backwards", "all", "--auto_agree", target=target)
    assert APP_TABLES & await table_names(target) == {REPLAY_TABLE}
    assert await schema_objects(target) == piccolo_bookkeeping(target) | replay_protection
    assert migration_status(target) == dict.fromkeys(ids, "False")

    run_piccolo_ok("migrations", "forwards", "all", target=target)
    assert await schema_objects(target) == first
    assert migration_status(target) == dict.fromkeys(ids, "True")


LIST_INDEX_MIGRATION = "2026-11-30T12:10:00:000000"
LIST_INDEXES = {
    "user_github_app_tokens_newest",
    "user_github_app_tokens_login_newest",
    "user_github_app_tokens_revoked_newest",
    "user_github_app_tokens_live_access_expiry",
    "audit_events_subject_newest",
    "audit_events_action_newest",
    "oauth_states_user",
}


async def index_names(target: Target) -> set[str]:
    return {name for kind, name in await schema_objects(target) if kind in {"index", "i"}}


async def test_list_indexes_come_with_forwards_and_go_with_backwards(
    empty_database: Target,
) -> None:
    """Make sure the admin-list indexes exist once migrated and undoing their migration drops
    exactly them, leaving the earlier migrations' indexes in place."""
    target = empty_database
    run_piccolo_ok("migrations", "forwards", "all", target=target)
    migrated = await index_names(target)
    assert migrated >= LIST_INDEXES
    assert {UNIQUE_USER_APP, UNIQUE_GITHUB_USER_APP} <= migrated

    run_piccolo_ok(
        "migrations", "backwards", "ghvault", LIST_INDEX_MIGRATION, "--auto_agree", target=target
    )
    undone = await index_names(target)
    assert not LIST_INDEXES & undone
    assert {UNIQUE_USER_APP, UNIQUE_GITHUB_USER_APP} <= undone
    assert migration_status(target)[LIST_INDEX_MIGRATION] == "False"

    run_piccolo_ok("migrations", "forwards", "all", target=target)
    assert await index_names(target) == migrated


COUNTS_MIGRATION = "2026-11-30T16:00:00:000000"
COUNT_INDEXES = {
    "user_github_app_tokens_refreshable_access",
    "user_github_app_tokens_refreshable_refresh",
    "user_github_app_tokens_unrefreshable_access",
    "user_github_app_token_counts_empty",
}
COUNT_TRIGGERS = {
    "sqlite": {
        "user_github_app_tokens_count_insert",
        "user_github_app_tokens_count_update",
        "user_github_app_tokens_count_delete",
    },
    "postgres": {
        "user_github_app_tokens_count_insert",
        "user_github_app_tokens_count_delete",
        "user_github_app_tokens_count_update",
        "user_github_app_tokens_count_truncate",
        "ghvault_count_token_change",
        "ghvault_count_token_truncate",
    },
}


async def insert_varied_tokens(connection: Connection, prefix: str) -> None:
    """Tokens in every state, of both app types, some without expiries or refresh token."""
    now = datetime.now(UTC)
    hours = timedelta(hours=1)
    rows = [  # access expiry, refresh token, refresh expiry, revoked at
        (None, None, None, None),
        (now + 3 * hours, "v1:x", now + 90 * 24 * hours, None),
        (now - 3 * hours, "v1:x", now + 9 * 24 * hours, None),
        (now - 3 * hours, "v1:x", now - hours, None),
        (now - 3 * hours, None, None, None),
        (now + 3 * hours, "v1:x", None, now),
    ]
    for index, (access, refresh, refresh_expiry, revoked) in enumerate(rows * 2):
        user = f"{prefix}{index}"
        await add_user(connection, user)
        await connection.execute(
            "INSERT INTO user_github_app_tokens (id, user_id, github_app_type, github_user_id, "
            "github_login, access_token_expires_at, refresh_token_encrypted, "
            "refresh_token_expires_at, revoked_at) "
            "VALUES ($1, $2, $3, $4, 'octocat', $5, $6, $7, $8)",
            str(uuid.uuid4()),
            user,
            "lite" if index % 2 else "standard",
            unique("gh"),
            connection.time(access),
            refresh,
            connection.time(refresh_expiry),
            connection.time(revoked),
        )


@asynccontextmanager
async def bound_to(target: Target) -> AsyncIterator[None]:
    """The tables bound to `target` through ghvault's own engine, for domain calls."""
    async with engines.serving(engines.create_engine(parse_database_url(target.url))):
        yield


async def test_token_counts_come_with_forwards_and_go_with_backwards(
    empty_database: Target,
) -> None:
    """Make sure the counts migration counts the tokens already there, keeps counting new
    ones, and undoes to exactly the schema before it, which still takes writes."""
    target = empty_database
    run_piccolo_ok("migrations", "forwards", "all", target=target)
    migrated = await schema_objects(target)
    mine = {name for _, name in migrated} & (
        COUNT_INDEXES | COUNT_TRIGGERS[target.kind] | COUNT_TABLES[target.kind]
    )
    assert mine == COUNT_INDEXES | COUNT_TRIGGERS[target.kind] | COUNT_TABLES[target.kind]
    # Undoing a migration undoes every later one first: those go on their own, beforehand.
    later = migrations_after(COUNTS_MIGRATION)
    if later:
        run_piccolo_ok(
            "migrations", "backwards", "ghvault", later[0], "--auto_agree", target=target
        )
    before = await schema_objects(target)

    run_piccolo_ok(
        "migrations", "backwards", "ghvault", COUNTS_MIGRATION, "--auto_agree", target=target
    )
    undone = await schema_objects(target)
    assert not {name for _, name in undone} & mine
    # Only the migration's own objects went (and the keys and autoindexes of its tables).
    assert {name for _, name in before - undone} >= mine
    assert all(name in mine or "token_count" in name for _, name in before - undone)
    assert migration_status(target)[COUNTS_MIGRATION] == "False"
    async with connect(target) as connection:
        await insert_varied_tokens(connection, "before")

    run_piccolo_ok("migrations", "forwards", "all", target=target)
    assert await schema_objects(target) == migrated
    async with connect(target) as connection:
        await insert_varied_tokens(connection, "after")
        await connection.execute(
            "UPDATE user_github_app_tokens SET revoked_at = NULL WHERE user_id LIKE 'before%'"
        )
        await connection.execute("DELETE FROM users WHERE id LIKE 'after1%'")
    async with bound_to(target):
        assert await assert_stats_agree_with_rows() > 10


LEASES_MIGRATION = "2026-12-04T10:00:00:000000"


async def token_columns(target: Target) -> set[str]:
    async with connect(target) as connection:
        if target.is_sqlite:
            rows = await connection.fetch(
                "SELECT name FROM pragma_table_info('user_github_app_tokens')"
            )
        else:
            rows = await connection.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'user_github_app_tokens'"
            )
    return {name for (name,) in rows}


async def test_the_leases_migration_goes_back_to_reasons_earlier_code_knows(
    empty_database: Target,
) -> None:
    """Make sure leased_until comes with forwards and goes with backwards, which rewrites
    the github_rejected revocations to refresh_failed (earlier code knows no other reason
    that tells the user to connect again) and touches nothing else."""
    target = empty_database
    run_piccolo_ok("migrations", "forwards", "all", target=target)
    assert "leased_until" in await token_columns(target)
    async with connect(target) as connection:
        for user, reason in (("rejected", "github_rejected"), ("admin", "admin")):
            await add_user(connection, user)
            token_id = await add_token(connection, user, "standard", unique("gh"))
            await connection.execute(
                "UPDATE user_github_app_tokens SET revocation_reason = $1, revoked_at = $2, "
                "leased_until = $2 WHERE id = $3",
                reason,
                connection.time(datetime.now(UTC)),
                token_id,
            )

    run_piccolo_ok(
        "migrations", "backwards", "ghvault", LEASES_MIGRATION, "--auto_agree", target=target
    )

    assert "leased_until" not in await token_columns(target)
    assert migration_status(target)[LEASES_MIGRATION] == "False"
    async with connect(target) as connection:
        reasons = await connection.fetch(
            "SELECT user_id, revocation_reason FROM user_github_app_tokens ORDER BY user_id"
        )
    assert reasons == [("admin", "admin"), ("rejected", "refresh_failed")]
    run_piccolo_ok("migrations", "forwards", "all", target=target)
    assert "leased_until" in await token_columns(target)


# ---------------------------------------------------------------- schema vs tables

_DIFFER = """
import asyncio, json
from piccolo.apps.migrations.commands.new import AutoMigrationManager
from server.storage.piccolo_app import APP_CONFIG

async def main():
    alters = await AutoMigrationManager(auto_input="n").get_alter_statements(app_config=APP_CONFIG)
    print(json.dumps([statement for alter in alters for statement in alter.statements]))

asyncio.run(main())
"""


def test_auto_migration_finds_nothing_to_add() -> None:
    """Make sure the migrations describe the tables exactly: `migrations new --auto` has no diff.

    The differ compares the migration files with the table classes and never
    opens a database, so it runs once, not per engine; the live comparison
    below covers both engines.
    """
    result = subprocess.run(
        [sys.executable, "-c", _DIFFER],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PICCOLO_CONF": "piccolo_conf"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    statements = json.loads(result.stdout.strip().splitlines()[-1])
    assert statements == []


async def test_migrated_tables_have_the_columns_and_nullability_of_the_table_classes(
    migrated_database: Target,
) -> None:
    """Make sure each migrated table has exactly the Piccolo columns, NOT NULL where they are."""
    target = migrated_database
    assert await table_names(target) - {"migration"} == APP_TABLES | COUNT_TABLES[target.kind]
    async with connect(target) as connection:
        for table in TABLES:
            name = table._meta.tablename
            if target.is_sqlite:
                rows = await connection.fetch(
                    'SELECT name, "notnull" = 1 FROM pragma_table_info($1)', name
                )
            else:
                rows = await connection.fetch(
                    "SELECT column_name, is_nullable = 'NO' FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = $1",
                    name,
                )
            in_database = {column: bool(not_null) for column, not_null in rows}
            expected = {
                column._meta.db_column_name: column._meta.primary_key or not column._meta.null
                for column in table._meta.columns
            }
            assert in_database == expected, name


# ---------------------------------------------------------------- constraints


async def add_user(connection: Connection, user_id: str) -> None:
    await connection.execute("INSERT INTO users (id) VALUES ($1)", user_id)


INSERT_TOKEN = (
    "INSERT INTO user_github_app_tokens (id, user_id, github_app_type, github_user_id, "
    "github_login) VALUES ($1, $2, $3, $4, 'octocat')"
)


async def add_token(
    connection: Connection, user_id: str, app_type: str, github_user_id: str
) -> str:
    token_id = str(uuid.uuid4())
    await connection.execute(INSERT_TOKEN, token_id, user_id, app_type, github_user_id)
    return token_id


async def assert_refused(connection: Connection, rule: str, sql: str, *args: Any) -> None:
    """The statement fails, and for the given rule rather than any other."""
    with pytest.raises(
        (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)
    ) as caught:
        await connection.execute(sql, *args)
    if connection.target.is_sqlite:
        assert SQLITE_MESSAGES[rule] in str(caught.value)
    else:
        assert isinstance(caught.value, asyncpg.IntegrityConstraintViolationError)
        assert caught.value.constraint_name == rule


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_a_user_has_at_most_one_token_per_app_type(migrated_database: Target) -> None:
    """Make sure a second token row for the same user and app type is refused."""
    async with connect(migrated_database) as connection:
        user = unique("alice")
        await add_user(connection, user)
        await add_token(connection, user, "standard", unique("gh"))
        await add_token(connection, user, "lite", unique("gh"))

        await assert_refused(
            connection,
            UNIQUE_USER_APP,
            INSERT_TOKEN,
            str(uuid.uuid4()),
            user,
            "standard",
            unique("gh"),
        )
        rows = await connection.fetch(
            "SELECT github_app_type FROM user_github_app_tokens WHERE user_id = $1", user
        )
        assert sorted(app_type for (app_type,) in rows) == ["lite", "standard"]


async def test_a_github_account_links_to_one_user_per_app_type(
    migrated_database: Target,
) -> None:
    """Make sure two users cannot hold a token of the same GitHub account and app type."""
    async with connect(migrated_database) as connection:
        alice, bob, github_user = unique("alice"), unique("bob"), unique("gh")
        await add_user(connection, alice)
        await add_user(connection, bob)
        await add_token(connection, alice, "standard", github_user)
        await add_token(connection, bob, "lite", github_user)

        await assert_refused(
            connection,
            UNIQUE_GITHUB_USER_APP,
            INSERT_TOKEN,
            str(uuid.uuid4()),
            bob,
            "standard",
            github_user,
        )


async def test_app_type_must_be_standard_or_lite(migrated_database: Target) -> None:
    """Make sure an unknown app type is refused on insert and on update."""
    async with connect(migrated_database) as connection:
        user = unique("alice")
        await add_user(connection, user)
        await assert_refused(
            connection,
            APP_TYPE_CHECK,
            INSERT_TOKEN,
            str(uuid.uuid4()),
            user,
            "enterprise",
            unique("gh"),
        )

        token_id = await add_token(connection, user, "lite", unique("gh"))
        await assert_refused(
            connection,
            APP_TYPE_CHECK,
            "UPDATE user_github_app_tokens SET github_app_type = 'enterprise' WHERE id = $1",
            token_id,
        )
        rows = await connection.fetch(
            "SELECT github_app_type FROM user_github_app_tokens WHERE user_id = $1", user
        )
        assert rows == [("lite",)]


async def test_deleting_a_user_deletes_its_tokens(migrated_database: Target) -> None:
    """Make sure a user's token rows go with the user, and nobody else's do."""
    async with connect(migrated_database) as connection:
        alice, bob = unique("alice"), unique("bob")
        for user in (alice, bob):
            await add_user(connection, user)
            await add_token(connection, user, "standard", unique("gh"))
            await add_token(connection, user, "lite", unique("gh"))

        await connection.execute("DELETE FROM users WHERE id = $1", alice)

        count = "SELECT COUNT(*) FROM user_github_app_tokens WHERE user_id = $1"
        assert await connection.fetch(count, alice) == [(0,)]
        assert await connection.fetch(count, bob) == [(2,)]


INSERT_CAPABILITY = (
    "INSERT INTO github_capabilities (id, secret_sha256, token_id, user_id, github_app_type, "
    "github_user_id, repositories, access, issued_by, expires_at) "
    "VALUES ($1, $2, $3, $4, 'standard', '1', '[]', 'read', 'svc', $5)"
)


async def test_capabilities_go_with_their_token_and_their_hash_is_unique(
    migrated_database: Target,
) -> None:
    """Make sure deleting a token row (disconnect, purge) deletes its capabilities, and two
    capabilities cannot share a hash."""
    async with connect(migrated_database) as connection:
        alice, bob = unique("alice"), unique("bob")
        tokens = {}
        for user in (alice, bob):
            await add_user(connection, user)
            tokens[user] = await add_token(connection, user, "standard", unique("gh"))
        expires = connection.time(datetime.now(UTC) + timedelta(minutes=15))
        for user in (alice, bob):
            await connection.execute(
                INSERT_CAPABILITY, str(uuid.uuid4()), unique(user), tokens[user], user, expires
            )
        taken = (await connection.fetch("SELECT secret_sha256 FROM github_capabilities"))[0][0]
        with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
            await connection.execute(
                INSERT_CAPABILITY, str(uuid.uuid4()), taken, tokens[bob], bob, expires
            )

        await connection.execute("DELETE FROM user_github_app_tokens WHERE id = $1", tokens[alice])

        rows = await connection.fetch("SELECT user_id FROM github_capabilities")
        assert [user for (user,) in rows if user in (alice, bob)] == [bob]


# ---------------------------------------------------------------- ghvault migrate


def run_ghvault_migrate(
    cwd: Path, database_url: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PICCOLO_CONF"}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [str(GHVAULT), "migrate", *flags],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def applied_migrations(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM migration ORDER BY name").fetchall()
    connection.close()
    return [name for (name,) in rows]


@pytest.mark.parametrize("location", ["absolute", "relative"])
def test_ghvault_migrate_creates_the_sqlite_file_and_reruns_as_a_no_op(
    tmp_path: Path, location: str
) -> None:
    """Make sure `ghvault migrate --create` makes the missing folder, migrates, says which
    database it created, and is safe to rerun (without the flag)."""
    path = tmp_path / "state" / "db" / "ghvault.sqlite"
    url_path = str(path) if location == "absolute" else "state/db/ghvault.sqlite"
    url = f"sqlite:///{url_path}"
    assert not path.parent.exists()
    shipped = len(migration_file_ids())

    first = run_ghvault_migrate(tmp_path, url, "--create")
    assert first.returncode == 0, first.stdout + first.stderr
    assert path.is_file()
    assert applied_migrations(path) == sorted(migration_file_ids())
    assert first.stdout == f"created sqlite:///{path}: {shipped} migrations applied\n"

    again = run_ghvault_migrate(tmp_path, url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert applied_migrations(path) == sorted(migration_file_ids())
    assert again.stdout == f"sqlite:///{path} is up to date ({shipped} migrations)\n"
    assert (first.stderr, again.stderr) == ("", "")
    # Nothing is written anywhere else, e.g. a default data/ghvault.sqlite.
    assert {item.parent for item in tmp_path.rglob("*") if item.is_file()} == {path.parent}


def test_ghvault_migrate_refuses_an_unsupported_database_url(tmp_path: Path) -> None:
    """Make sure an unknown DATABASE_URL scheme fails with one line that hides the value."""
    result = run_ghvault_migrate(tmp_path, "mysql://x")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "DATABASE_URL" in lines[0]
    assert "mysql://x" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


def test_ghvault_migrate_never_creates_a_sqlite_file_it_was_not_asked_for(tmp_path: Path) -> None:
    """Make sure a mistyped path is refused in one line naming the file, and left alone."""
    path = tmp_path / "dta" / "ghvault.sqlite"

    result = run_ghvault_migrate(tmp_path, "sqlite:///dta/ghvault.sqlite")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"ghvault: there is no database at {path}: check DATABASE_URL, "
        "or run `ghvault migrate --create` to make a new, empty one there"
    ]
    assert list(tmp_path.iterdir()) == []


def test_ghvault_migrate_sets_up_an_empty_postgres_database_only_when_asked(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Make sure a database without ghvault's tables is refused without --create (nothing
    written), set up with it, and named without its password either way."""
    url = postgres_server.create_database()
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}"
    # The test server trusts local connections: the password is there to be hidden.
    with_password = urlunsplit(parts._replace(netloc=f"{parts.username}:pw-Zq9@{host}"))
    label = f"postgres://{parts.username}@{host}{parts.path}"
    try:
        refused = run_ghvault_migrate(tmp_path, with_password)
        tables = asyncio.run(_table_names(url))
        created = run_ghvault_migrate(tmp_path, with_password, "--create")
    finally:
        postgres_server.drop_database(url)

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"ghvault: {label} holds no ghvault tables: check DATABASE_URL, "
        "or run `ghvault migrate --create` to set up a new, empty vault there"
    ]
    assert tables == []
    assert created.returncode == 0, created.stderr
    assert created.stdout == f"created {label}: {len(migration_file_ids())} migrations applied\n"
    assert "pw-Zq9" not in refused.stderr + created.stdout + created.stderr


async def _table_names(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return [row["tablename"] for row in rows]
