"""/readyz says ready only on a database that holds exactly this release's migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.config import Settings
from server.http.app import create_app
from server.storage import engines
from server.storage.migration_state import shipped_migration_ids
from server.storage.sqlite_pool import PooledSQLiteEngine
from tests.helpers import Database, MovableClock, base_env

FUTURE_MIGRATION = "2099-01-01T00:00:00:000000"


async def client_on(aiohttp_client: Any, database: Database, clock: MovableClock) -> TestClient:
    settings = Settings.from_env(base_env(DATABASE_URL=database.url))
    return await aiohttp_client(create_app(settings, clock=clock, engine=database.engine))


async def readiness(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status, await response.json()


@pytest.fixture
async def latest_migration_undone(database: Database) -> AsyncIterator[str]:
    """The database as if the newest migration had not run (its bookkeeping row removed)."""
    latest = max(shipped_migration_ids())
    rows = await database.fetch(f"SELECT * FROM migration WHERE name = '{latest}'")
    assert len(rows) == 1
    await database.engine.run_ddl(f"DELETE FROM migration WHERE name = '{latest}'")
    try:
        yield latest
    finally:
        await database.engine.run_ddl(
            "INSERT INTO migration (name, app_name, ran_on) "
            f"VALUES ('{latest}', 'ghvault', '{rows[0]['ran_on']}')"
        )


@pytest.fixture
async def future_migration_applied(database: Database) -> AsyncIterator[None]:
    """The database as if a newer ghvault had migrated it."""
    await database.engine.run_ddl(
        "INSERT INTO migration (name, app_name, ran_on) "
        f"VALUES ('{FUTURE_MIGRATION}', 'ghvault', '2099-01-01 00:00:00')"
    )
    try:
        yield
    finally:
        await database.engine.run_ddl(f"DELETE FROM migration WHERE name = '{FUTURE_MIGRATION}'")


async def test_a_migrated_database_is_ready(
    aiohttp_client: Any, database: Database, clock: MovableClock
) -> None:
    """Make sure a fully migrated database answers ready."""
    client = await client_on(aiohttp_client, database, clock)
    assert await readiness(client) == (
        200,
        {"status": "ready", "database": True, "migrations": True},
    )


@pytest.mark.usefixtures("latest_migration_undone")
async def test_a_database_missing_a_migration_is_not_ready(
    aiohttp_client: Any, database: Database, clock: MovableClock, log_output: Any
) -> None:
    """Make sure readiness fails while a migration is pending, and the log says what to run."""
    client = await client_on(aiohttp_client, database, clock)
    status, body = await readiness(client)
    assert status == 503
    assert body == {"status": "unavailable", "database": True, "migrations": False}
    assert "ghvault migrate" in log_output.getvalue()


@pytest.mark.usefixtures("future_migration_applied")
async def test_a_database_with_an_unknown_migration_is_not_ready(
    aiohttp_client: Any, database: Database, clock: MovableClock, log_output: Any
) -> None:
    """Make sure a database migrated by a newer release is never reported ready."""
    client = await client_on(aiohttp_client, database, clock)
    status, body = await readiness(client)
    assert status == 503
    assert body["migrations"] is False
    assert FUTURE_MIGRATION in log_output.getvalue()


async def test_an_empty_sqlite_file_is_not_ready(
    aiohttp_client: Any, tmp_path: Path, clock: MovableClock
) -> None:
    """Make sure a database nobody migrated (no bookkeeping table at all) is not ready.

    Before, /readyz answered 200 here while every query failed with "no such table".
    """
    path = tmp_path / "empty.sqlite"
    async with engines.serving(PooledSQLiteEngine(path=str(path))) as engine:
        empty = Database("sqlite", engine, f"sqlite:///{path}", sqlite_path=path)
        client = await client_on(aiohttp_client, empty, clock)
        status, body = await readiness(client)
    assert status == 503
    assert body == {"status": "unavailable", "database": True, "migrations": False}
