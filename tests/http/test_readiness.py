"""/readyz says ready only on a database that holds exactly this release's migrations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp.test_utils import TestClient

from server.config import Settings
from server.http.app import create_app
from server.storage import engines
from server.storage.migration_state import shipped_migration_ids
from server.storage.sqlite_pool import PooledSQLiteEngine
from tests.helpers import ALICE, Database, MovableClock, base_env
from tests.tcp_proxy import TcpProxy
from tests.ws_client import connect

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
    """Make sure a fully migrated database answers ready, saying how changes are heard
    (PostgreSQL's NOTIFY, or polling on SQLite)."""
    client = await client_on(aiohttp_client, database, clock)
    notifications = "poll" if database.is_sqlite else "listen"
    assert await readiness(client) == (
        200,
        {"status": "ready", "database": True, "migrations": True, "notifications": notifications},
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


async def test_a_lost_postgres_listen_connection_makes_the_server_not_ready(
    aiohttp_client: Any, postgres_url: str, clock: MovableClock
) -> None:
    """Make sure /readyz notices subscribers going deaf: while the LISTEN connection
    (DATABASE_LISTEN_URL, here through a proxy the test cuts) is lost and someone watches,
    it answers 503 "lost"; once the connection is back, 200 again."""
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    listen_url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    settings = Settings.from_env(
        base_env(DATABASE_URL=postgres_url, DATABASE_LISTEN_URL=listen_url)
    )
    client = await aiohttp_client(create_app(settings, clock=clock))
    subscription = "subscription { githubTokenChanged(appType: STANDARD) { state } }"
    try:
        async with connect(client) as socket:
            assert (await socket.init(ALICE))["type"] == "connection_ack"
            await socket.next_payload(await socket.subscribe(subscription))
            listening = await readiness(client)
            proxy.cut()
            lost = await readiness_once(client, lambda status: status == 503)
            proxy.restore()
            back = await readiness_once(client, lambda status: status == 200)
    finally:
        await proxy.close()

    assert listening == (200, {**READY, "notifications": "listen"})
    assert lost == (503, {**READY, "status": "unavailable", "notifications": "lost"})
    assert back == (200, {**READY, "notifications": "listen"})


READY = {"status": "ready", "database": True, "migrations": True}
RECOVERY_SECONDS = 40.0


async def readiness_once(
    client: TestClient, wanted: Callable[[int], bool]
) -> tuple[int, dict[str, Any]]:
    """Poll /readyz until its status is what `wanted` accepts (bounded)."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        status, body = await readiness(client)
        if wanted(status):
            return status, body
        assert time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.05)
