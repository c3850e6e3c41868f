"""Fixtures: both engines, a movable clock, principals, and a GraphQL client.

Storage tests take the `database` fixture, which runs each test once on
SQLite and once on PostgreSQL. PostgreSQL comes from TEST_DATABASE_URL; each
run creates its own database and drops it at the end, so reruns and
parallel runs do not collide. Without TEST_DATABASE_URL (or when it is
unreachable) the PostgreSQL half is skipped, loudly, unless
GHVAULT_REQUIRE_POSTGRES=1, which makes that a failure (CI sets it).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from server.auth import mint_token
from server.config import Settings
from server.domain.enums import Role
from server.http.app import create_app
from server.http.logs import json_handler
from server.storage import db
from server.storage.db import PooledSQLiteEngine
from server.storage.tables import TABLES
from tests.fake_github import DEFAULT_APPS, LITE_APP, STANDARD_APP, FakeGitHub, start_fake_github

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PICCOLO = Path(sys.executable).parent / "piccolo"

JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
ACTIVE_KEY = base64.b64encode(b"A" * 32).decode()
RETIRED_KEY = base64.b64encode(b"R" * 32).decode()
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)

# Anything shaped like a GitHub token or a JWT; scanned for in logs and files.
SECRET_PATTERN = re.compile(
    r"(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}|eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}"
)

_postgres_skip_reason: str | None = None


def require_postgres() -> bool:
    return os.environ.get("GHVAULT_REQUIRE_POSTGRES", "") in ("1", "true", "yes")


# ---------------------------------------------------------------- environment


def base_env(**overrides: str) -> dict[str, str]:
    env = {
        "USER_GH_APP_TOKEN_ENCRYPTION_KEY": ACTIVE_KEY,
        "AUTH_JWT_SECRET": JWT_SECRET,
        "GHVAULT_ENV": "development",
    }
    env.update(overrides)
    return env


def run_piccolo(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """`piccolo ...` from the project root, as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": database_url, "PICCOLO_CONF": "piccolo_conf"}
    return subprocess.run(
        [str(PICCOLO), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def migrate(database_url: str) -> None:
    result = run_piccolo("migrations", "forwards", "all", database_url=database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout, result.stdout


# ---------------------------------------------------------------- PostgreSQL


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin(url: str, statement: str) -> None:
    """Run one statement on its own loop and thread (callers may be inside a loop)."""

    async def run() -> None:
        connection = await asyncpg.connect(url, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result()


@dataclass
class PostgresServer:
    """A throwaway database on the test server, created and dropped by this run."""

    admin_url: str

    def create_database(self, prefix: str = "ghvault_test") -> str:
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        _admin(self.admin_url, f'CREATE DATABASE "{name}"')
        return _with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        _admin(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server of TEST_DATABASE_URL, or a skip (a failure under CI)."""
    global _postgres_skip_reason
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        reason = "TEST_DATABASE_URL is not set"
    else:
        try:
            _admin(url, "SELECT 1")
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            reason = f"PostgreSQL at TEST_DATABASE_URL is unreachable ({type(exc).__name__})"
        else:
            return PostgresServer(admin_url=url)
    _postgres_skip_reason = reason
    if require_postgres():
        pytest.fail(f"{reason}, and GHVAULT_REQUIRE_POSTGRES is set")
    pytest.skip(f"PostgreSQL half skipped: {reason}")


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """One migrated database for the whole run; tests empty it before use."""
    url = postgres_server.create_database()
    try:
        migrate(url)
        yield url
    finally:
        postgres_server.drop_database(url)


# ---------------------------------------------------------------- SQLite


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "ghvault.sqlite"
    migrate(f"sqlite:///{path}")
    return path


# ---------------------------------------------------------------- the database fixture


@dataclass
class Database:
    kind: str  # "sqlite" | "postgres"
    engine: Engine
    url: str
    sqlite_path: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    async def fetch(self, sql: str) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.engine.run_ddl(sql) or ()]


async def _truncate(engine: Engine) -> None:
    names = ", ".join(table._meta.tablename for table in TABLES)
    await engine.run_ddl(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[Database]:
    """A migrated, empty database with the tables bound to it; one run per engine."""
    if request.param == "sqlite":
        path = tmp_path / "ghvault.sqlite"
        shutil.copyfile(sqlite_template, path)
        engine: Engine = PooledSQLiteEngine(path=str(path))
        database = Database("sqlite", engine, f"sqlite:///{path}", sqlite_path=path)
    else:
        url = request.getfixturevalue("postgres_url")
        engine = PostgresEngine(config={"dsn": url})
        database = Database("postgres", engine, url)
    db.bind_tables(engine)
    await db.start(engine)
    if not database.is_sqlite:
        await _truncate(engine)
    try:
        yield database
    finally:
        await db.stop(engine)


# ---------------------------------------------------------------- clock, principals, app


class MovableClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


WEBHOOK_SECRET = "standard-webhook-secret-for-tests"
WEBHOOK_SECRET_LITE = "lite-webhook-secret-for-tests"
GITHUB_TIMEOUT_SECONDS = 1.0


def github_env(fake: FakeGitHub) -> dict[str, str]:
    """Both apps pointed at the fake GitHub."""
    return {
        "GITHUB_APP_CLIENT_ID": STANDARD_APP.client_id,
        "GITHUB_APP_CLIENT_SECRET": STANDARD_APP.client_secret,
        "GITHUB_APP_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GITHUB_APP_CLIENT_ID_LITE": LITE_APP.client_id,
        "GITHUB_APP_CLIENT_SECRET_LITE": LITE_APP.client_secret,
        "GITHUB_APP_WEBHOOK_SECRET_LITE": WEBHOOK_SECRET_LITE,
        "GITHUB_OAUTH_BASE_URL": fake.base_url,
        "GITHUB_API_BASE_URL": fake.base_url,
        "GITHUB_TIMEOUT_SECONDS": str(GITHUB_TIMEOUT_SECONDS),
    }


@pytest.fixture
async def fake_github() -> AsyncIterator[FakeGitHub]:
    async with start_fake_github(apps=DEFAULT_APPS) as fake:
        yield fake


@pytest.fixture
def settings(database: Database, fake_github: FakeGitHub) -> Settings:
    return Settings.from_env(base_env(DATABASE_URL=database.url, **github_env(fake_github)))


def bearer(sub: str, role: Role, *, ttl: timedelta = timedelta(hours=1), **claims: Any) -> str:
    token = mint_token(
        JWT_SECRET.encode(),
        sub=sub,
        role=role,
        now=datetime.now(UTC),
        ttl=ttl,
        extra=claims or None,
    )
    return f"Bearer {token}"


class GraphQLClient:
    """POSTs GraphQL to the app under test, as a given principal."""

    def __init__(self, client: Any) -> None:
        self.http = client

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, *, auth: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": auth} if auth else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status == 200, await response.text()
        return await response.json()

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, *, auth: str | None = None
    ) -> dict[str, Any]:
        """The `data` of a response that must have no errors."""
        body = await self.post(query, variables, auth=auth)
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture
async def gql(
    aiohttp_client: Any, settings: Settings, clock: MovableClock, database: Database
) -> GraphQLClient:
    app = create_app(settings, clock=clock, engine=database.engine)
    return GraphQLClient(await aiohttp_client(app))


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]


# ---------------------------------------------------------------- logs


@pytest.fixture(autouse=True)
def log_output() -> Iterator[io.StringIO]:
    """Every test's logs, through the production handler; none may hold a secret."""
    stream = io.StringIO()
    handler = json_handler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    leaked = SECRET_PATTERN.findall(stream.getvalue())
    assert not leaked, f"{len(leaked)} secret-shaped strings reached the log"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _postgres_skip_reason:
        terminalreporter.write_sep(
            "!", f"PostgreSQL half SKIPPED: {_postgres_skip_reason}", yellow=True, bold=True
        )
