"""The database goes away and comes back while the service runs.

While it is away /readyz says 503 within a second, GraphQL callers get a
503 with Retry-After and UNAVAILABLE (nothing else of the failure), and
nothing is half-written; once it is back the
same app instance serves again, without a restart. PostgreSQL is reached
through a TCP proxy on loopback that the tests cut and restore (the shared
server is never touched); the SQLite file is moved away and back, or
replaced by another database file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from server.config import Settings
from server.graphql.errors import UNAVAILABLE_MESSAGE
from server.http.app import create_app
from server.http.graphql_responses import RETRY_AFTER_SECONDS
from server.http.request_context import REQUEST_ID_HEADER
from server.storage import engines
from tests.helpers import (
    ALICE,
    SERVICE,
    STORE,
    VIEWER_TOKEN,
    MovableClock,
    PostgresServer,
    base_env,
    migrate,
    store_input,
)
from tests.tcp_proxy import TcpProxy

PASSWORD = "s3cr3t-pw"
# READINESS_TIMEOUT_SECONDS plus room for the request itself.
READINESS_BOUND_SECONDS = 1.5
RECOVERY_SECONDS = 10.0
GITHUB_USER_IDS = {"alice": "1001", "bob": "1002", "carol": "1003"}


# ---------------------------------------------------------------- helpers


def rows_about(user_id: str) -> str:
    """SQL counting the rows a store for `user_id` writes: user, token, audit event."""
    return (
        f"SELECT (SELECT count(*) FROM users WHERE id = '{user_id}')"
        f" + (SELECT count(*) FROM user_github_app_tokens WHERE user_id = '{user_id}')"
        f" + (SELECT count(*) FROM audit_events WHERE subject_user_id = '{user_id}') AS n"
    )


async def readiness(client: TestClient) -> tuple[int, float]:
    """The /readyz status and how long the answer took."""
    started = time.perf_counter()
    response = await client.get("/readyz")
    return response.status, time.perf_counter() - started


async def wait_until_ready(client: TestClient) -> None:
    """Poll /readyz until it says 200; fail when it does not come back."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "/readyz did not recover"
        await asyncio.sleep(0.1)


async def graphql(
    client: TestClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    auth: str,
    status: int = 200,
) -> tuple[dict[str, Any], str, str]:
    """The decoded body, the raw text and the request id of one GraphQL POST."""
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": auth},
    )
    text = await response.text()
    assert response.status == status, text
    if status == 503:
        assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    return json.loads(text), text, response.headers[REQUEST_ID_HEADER]


def store_variables(user_id: str, clock: MovableClock) -> dict[str, Any]:
    """A store that succeeds whenever the database answers (one GitHub identity per user)."""
    return store_input(user_id, now=clock(), github_user_id=GITHUB_USER_IDS[user_id])


async def store(client: TestClient, clock: MovableClock, user_id: str) -> None:
    body, _, _ = await graphql(client, STORE, store_variables(user_id, clock), auth=SERVICE)
    assert "errors" not in body, body
    assert body["data"]["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess", body


async def alice_token_state(client: TestClient) -> str:
    body, _, _ = await graphql(client, VIEWER_TOKEN, auth=ALICE)
    assert "errors" not in body, body
    return body["data"]["viewer"]["githubToken"]["state"]


def assert_unavailable(body: dict[str, Any], text: str, request_id: str) -> None:
    """Only "retry later" and the request id: no driver, path, DSN or password."""
    assert [error["message"] for error in body["errors"]] == [UNAVAILABLE_MESSAGE], text
    assert body["errors"][0]["extensions"] == {"code": "UNAVAILABLE", "requestId": request_id}
    for detail in ("Traceback", "asyncpg", "sqlite", "Error", PASSWORD):
        assert detail not in text


async def assert_callers_told_to_retry(
    client: TestClient, clock: MovableClock, user_id: str, log_output: StringIO
) -> None:
    """A query and a store for `user_id` both answer 503, UNAVAILABLE, Retry-After, and
    log one WARNING line each (no ERROR, no traceback)."""
    logged = len(log_output.getvalue())
    for query, variables, auth in [
        (VIEWER_TOKEN, {}, ALICE),
        (STORE, store_variables(user_id, clock), SERVICE),
    ]:
        assert_unavailable(*await graphql(client, query, variables, auth=auth, status=503))
    lines = [json.loads(line) for line in log_output.getvalue()[logged:].splitlines()]
    assert not [line for line in lines if line["level"] == "ERROR"], lines
    told = [line for line in lines if line["logger"] == "ghvault.graphql"]
    assert [(line["level"], "\n" in line["message"]) for line in told] == [("WARNING", False)] * 2


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A migrated database of its own, at the server's real address."""
    url = postgres_server.create_database("ghvault_faults")
    try:
        migrate(url)
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def proxied_dsn(url: str, proxy: TcpProxy) -> str:
    """`url` through the proxy, with a password (ignored by trust auth) that must never show."""
    parts = urlsplit(url)
    return f"postgres://{parts.username}:{PASSWORD}@127.0.0.1:{proxy.port}{parts.path}"


async def pg_client(aiohttp_client: Any, dsn: str, clock: MovableClock) -> TestClient:
    """A production app that owns its engine, on `dsn`."""
    settings = Settings.from_env(base_env(GHVAULT_ENV="production", DATABASE_URL=dsn))
    # Piccolo's PostgresEngine asks the server for its version while it is
    # constructed, blocking; the proxy runs on this loop, so build the app off it.
    app = await asyncio.to_thread(create_app, settings, clock=clock)
    return await aiohttp_client(app)


async def pg_rows_about(url: str, user_id: str) -> int:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        return await connection.fetchval(rows_about(user_id))
    finally:
        await connection.close()


async def test_postgres_outage_and_recovery(
    proxy: TcpProxy,
    pg_url: str,
    aiohttp_client: Any,
    clock: MovableClock,
    log_output: StringIO,
) -> None:
    """Cut the database away mid-run and bring it back.

    Readiness fails fast, callers are told to retry and see nothing else (no
    DSN, no password, no driver detail), nothing is written, and the same app serves
    again once the proxy forwards again.
    """
    dsn = proxied_dsn(pg_url, proxy)
    client = await pg_client(aiohttp_client, dsn, clock)
    await store(client, clock, "alice")
    assert await pg_rows_about(pg_url, "alice") > 0

    proxy.cut()
    status, elapsed = await readiness(client)
    assert status == 503
    assert elapsed < READINESS_BOUND_SECONDS
    await assert_callers_told_to_retry(client, clock, "bob", log_output)

    proxy.restore()
    await wait_until_ready(client)
    assert await alice_token_state(client) == "ACTIVE"
    assert await pg_rows_about(pg_url, "bob") == 0
    await store(client, clock, "bob")

    logs = log_output.getvalue()
    assert PASSWORD not in logs
    assert dsn not in logs
    assert f"127.0.0.1:{proxy.port}{urlsplit(pg_url).path}" not in logs


async def test_postgres_that_stops_answering(
    proxy: TcpProxy,
    pg_url: str,
    aiohttp_client: Any,
    clock: MovableClock,
    monkeypatch: pytest.MonkeyPatch,
    log_output: StringIO,
) -> None:
    """The database keeps its connections open but answers nothing (a dropped path).

    Readiness still says 503 within its bound; requests end with UNAVAILABLE
    once the connect and statement timeouts pass instead of waiting
    forever (shortened here from 5 s and 30 s); when the path is back the
    service recovers.
    """
    monkeypatch.setattr(engines, "POSTGRES_CONNECT_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(engines, "POSTGRES_COMMAND_TIMEOUT_SECONDS", 1.0)
    client = await pg_client(aiohttp_client, proxied_dsn(pg_url, proxy), clock)
    await store(client, clock, "alice")

    proxy.stall()
    status, elapsed = await readiness(client)
    assert status == 503
    assert elapsed < READINESS_BOUND_SECONDS
    await assert_callers_told_to_retry(client, clock, "bob", log_output)

    proxy.restore()
    await wait_until_ready(client)
    assert await alice_token_state(client) == "ACTIVE"
    assert await pg_rows_about(pg_url, "bob") == 0
    await store(client, clock, "bob")


async def test_postgres_cut_before_commit_leaves_nothing(
    proxy: TcpProxy,
    pg_url: str,
    aiohttp_client: Any,
    clock: MovableClock,
) -> None:
    """The connection dies after every write of a store but before its COMMIT.

    The caller is told to retry and none of the store's rows (user,
    token, audit event) exist afterwards: the store is all or nothing.
    """
    client = await pg_client(aiohttp_client, proxied_dsn(pg_url, proxy), clock)
    await wait_until_ready(client)

    proxy.cut_before = b"COMMIT"
    answer = await graphql(client, STORE, store_variables("carol", clock), auth=SERVICE, status=503)
    assert proxy.cut_before is None, "the store never reached its COMMIT"
    assert_unavailable(*answer)

    proxy.restore()
    await wait_until_ready(client)
    assert await pg_rows_about(pg_url, "carol") == 0
    await store(client, clock, "carol")
    assert await pg_rows_about(pg_url, "carol") > 0


# ---------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_file(tmp_path: Path, sqlite_template: Path) -> Path:
    path = tmp_path / "live" / "ghvault.sqlite"
    path.parent.mkdir()
    shutil.copyfile(sqlite_template, path)
    return path


def move_database(source: Path, target: Path) -> None:
    """Move a SQLite database with its -wal and -shm files, as an operator would."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        companion = source.with_name(source.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))


def sqlite_rows_about(path: Path, user_id: str) -> int:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(rows_about(user_id)).fetchone()[0]


async def sqlite_client(aiohttp_client: Any, path: Path, clock: MovableClock) -> TestClient:
    settings = Settings.from_env(
        base_env(GHVAULT_ENV="production", DATABASE_URL=f"sqlite:///{path}")
    )
    return await aiohttp_client(create_app(settings, clock=clock))


async def test_sqlite_file_away_and_back(
    sqlite_file: Path,
    tmp_path: Path,
    aiohttp_client: Any,
    clock: MovableClock,
    log_output: StringIO,
) -> None:
    """Move the database file away mid-run, then back.

    The pooled connections still have the moved file open; the service must
    notice the file is gone from its path rather than carry on writing to a
    file nobody can see.
    """
    client = await sqlite_client(aiohttp_client, sqlite_file, clock)
    await store(client, clock, "alice")

    elsewhere = tmp_path / "elsewhere" / sqlite_file.name
    move_database(sqlite_file, elsewhere)
    status, elapsed = await readiness(client)
    assert status == 503
    assert elapsed < READINESS_BOUND_SECONDS
    await assert_callers_told_to_retry(client, clock, "bob", log_output)

    move_database(elsewhere, sqlite_file)
    await wait_until_ready(client)
    assert await alice_token_state(client) == "ACTIVE"
    assert sqlite_rows_about(sqlite_file, "bob") == 0
    await store(client, clock, "bob")
    assert sqlite_rows_about(sqlite_file, "bob") > 0


async def test_sqlite_file_replaced(
    sqlite_file: Path,
    tmp_path: Path,
    sqlite_template: Path,
    aiohttp_client: Any,
    clock: MovableClock,
) -> None:
    """Put another database file at the path, as a restore from a backup does.

    The service serves the new file from then on: it reads the new file's
    content and writes go there, not to the file it had open before.
    """
    client = await sqlite_client(aiohttp_client, sqlite_file, clock)
    await store(client, clock, "alice")
    assert await alice_token_state(client) == "ACTIVE"

    previous = tmp_path / "previous" / sqlite_file.name
    move_database(sqlite_file, previous)
    restored = sqlite_file.with_name("restore-in-progress")
    shutil.copyfile(sqlite_template, restored)
    restored.rename(sqlite_file)

    await wait_until_ready(client)
    assert await alice_token_state(client) == "NOT_CONNECTED"
    await store(client, clock, "bob")
    assert sqlite_rows_about(sqlite_file, "bob") > 0
    assert sqlite_rows_about(previous, "bob") == 0
    assert sqlite_rows_about(previous, "alice") > 0
