"""`ghvault backup`: a consistent copy of the SQLite database while writes go on, restorable."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.config import Settings
from server.http.app import create_app
from server.storage.migration_state import shipped_migration_ids
from tests.helpers import (
    PROJECT_ROOT,
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    PostgresServer,
    admin_statement,
    base_env,
    migrate,
    store_input,
    with_database,
)
from tests.test_cli import GHVAULT, clean_env, ghvault

CHECKOUT = """
mutation Checkout($userId: ID!) {
  checkoutGithubToken(userId: $userId, appType: STANDARD) {
    ... on CheckoutSuccess { accessToken }
    ... on OperationError { code message }
  }
}
"""


def user_id(number: int) -> str:
    return f"user-{number:04d}"


def rows(path: Path, sql: str) -> list[Any]:
    with closing(sqlite3.connect(path)) as connection:
        return [row[0] for row in connection.execute(sql)]


class Writer:
    """Stores one user's token after another (each one transaction), until told to stop."""

    def __init__(self, gql: GraphQLClient, clock: MovableClock) -> None:
        self.gql, self.clock = gql, clock
        self.stored: list[str] = []  # access tokens, in user order
        self.stop_after: int | None = None
        self.progress = asyncio.Event()

    async def run(self) -> None:
        while self.stop_after is None or len(self.stored) < self.stop_after:
            variables = store_input(
                user_id(len(self.stored)),
                now=self.clock(),
                github_user_id=str(10_000 + len(self.stored)),
            )
            data = await self.gql.data(STORE, variables, auth=SERVICE)
            assert data["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
            self.stored.append(variables["input"]["accessToken"])
            self.progress.set()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_backup_taken_during_writes_is_consistent_and_restorable(
    gql: GraphQLClient,
    clock: MovableClock,
    database: Database,
    tmp_path: Path,
    aiohttp_client: Any,
) -> None:
    """Make sure the copy holds whole transactions only, and serves again from DATABASE_URL."""
    writer = Writer(gql, clock)
    writing = asyncio.create_task(writer.run())
    while len(writer.stored) < 5:
        await writer.progress.wait()
        writer.progress.clear()

    target = tmp_path / "backups" / "ghvault-backup.sqlite"
    target.parent.mkdir()
    stored_before = len(writer.stored)
    env = clean_env(**base_env(DATABASE_URL=database.url))
    started = time.monotonic()
    backup = await asyncio.create_subprocess_exec(
        str(GHVAULT), "backup", str(target), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await backup.communicate()
    took = time.monotonic() - started
    stored_after = len(writer.stored)
    writer.stop_after = stored_after + 3
    await writing

    assert backup.returncode == 0, err.decode()
    assert f"to {target}" in out.decode()
    assert stored_after > stored_before, f"no write happened while the backup ran ({took:.2f} s)"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not [name for name in os.listdir(target.parent) if name != target.name]

    users = rows(target, "SELECT id FROM users ORDER BY id")
    copied = len(users)
    # Writes are sequential: the snapshot holds a prefix of them, cut between two.
    assert users == [user_id(number) for number in range(copied)]
    assert stored_before <= copied <= stored_after + 1
    assert copied < len(writer.stored)
    assert rows(target, "SELECT count(*) FROM user_github_app_tokens") == [copied]
    assert rows(target, "SELECT count(*) FROM audit_events WHERE action = 'token_stored'") == [
        copied
    ]
    assert rows(target, "PRAGMA integrity_check") == ["ok"]
    assert rows(target, "PRAGMA journal_mode") == ["delete"]

    restored = Settings.from_env(base_env(DATABASE_URL=f"sqlite:///{target}"))
    client = GraphQLClient(await aiohttp_client(create_app(restored, clock=clock)))
    assert (await client.http.get("/readyz")).status == 200
    last = copied - 1
    checkout = await client.data(CHECKOUT, {"userId": user_id(last)}, auth=SERVICE)
    assert checkout["checkoutGithubToken"] == {"accessToken": writer.stored[last]}
    missing = await client.data(CHECKOUT, {"userId": user_id(copied)}, auth=SERVICE)
    assert missing["checkoutGithubToken"]["code"] == "NOT_CONNECTED"


def test_backup_never_replaces_a_file(tmp_path: Path, sqlite_template: Path) -> None:
    """Make sure an existing file at PATH is kept, and the command says so in one line."""
    target = tmp_path / "existing.sqlite"
    target.write_text("keep me")
    env = clean_env(**base_env(DATABASE_URL=f"sqlite:///{sqlite_template}"))
    result = ghvault("backup", str(target), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ghvault: {target} exists: give the backup a new file name"
    ]
    assert target.read_text() == "keep me"


def test_backup_on_postgres_points_to_pg_dump(tmp_path: Path) -> None:
    """Make sure a PostgreSQL DATABASE_URL gets one line naming pg_dump, and no password."""
    env = clean_env(**base_env(DATABASE_URL="postgres://ghvault:hunter2@db.internal/ghvault"))
    result = ghvault("backup", str(tmp_path / "copy.sqlite"), cwd=tmp_path, env=env)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "pg_dump" in line
    assert "hunter2" not in result.stderr + result.stdout
    assert not (tmp_path / "copy.sqlite").exists()


# ---------------------------------------------------------------- PostgreSQL, as the README says


def readme_postgres_backup_commands() -> str:
    """The shell block of the README's PostgreSQL backup and restore, as an operator pastes it."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("**PostgreSQL**: `ghvault backup`") :]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def _rows(url: str, sql: str) -> list[Any]:
    async def fetch() -> list[Any]:
        connection = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="no pg_dump (postgresql-client)")
def test_the_readmes_postgres_backup_and_restore_work_when_pasted(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Make sure the README's commands, pasted into bash, back up (a file only its owner
    reads), restore into a new database without an error, and give the same rows back."""
    source = postgres_server.create_database("ghvault_backup_source")
    restored_name = f"ghvault_restored_{os.getpid()}"
    restored = with_database(postgres_server.admin_url, restored_name)
    try:
        migrate(source)
        admin_statement(source, "INSERT INTO users (id, created_at) VALUES ('alice', now())")
        commands = readme_postgres_backup_commands().replace("ghvault_restored", restored_name)
        pasted = subprocess.run(
            [shutil.which("bash") or "/bin/bash", "-euo", "pipefail", "-c", commands],
            cwd=tmp_path,
            env={**os.environ, "DATABASE_URL": source},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        users = _rows(restored, "SELECT id FROM users")
        migrations = _rows(restored, "SELECT count(*) FROM migration")
    finally:
        postgres_server.drop_database(restored)
        postgres_server.drop_database(source)

    assert pasted.returncode == 0, pasted.stderr
    assert pasted.stderr == ""
    assert stat.S_IMODE((tmp_path / "ghvault-backup.dump").stat().st_mode) == 0o600
    assert users == [("alice",)]
    assert migrations == [(len(shipped_migration_ids()),)]
