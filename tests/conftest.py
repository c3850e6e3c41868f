"""Fixtures: both engines, a movable clock, a fake GitHub, settings and a GraphQL client.

Storage tests take the `database` fixture, which runs each test once on
SQLite and once on PostgreSQL. PostgreSQL comes from TEST_DATABASE_URL; each
run creates its own database and drops it at the end, so reruns and
parallel runs do not collide. Without TEST_DATABASE_URL (or when it is
unreachable) the PostgreSQL half is skipped, loudly, unless
GHVAULT_REQUIRE_POSTGRES=1, which makes that a failure (CI sets it).
Helpers and shared data live in tests/helpers.py.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from server.config import Settings
from server.http.app import create_app
from server.http.logs import json_handler
from server.storage import engines
from server.storage.sqlite_pool import PooledSQLiteEngine
from server.storage.tables import TABLES
from tests.fake_github import DEFAULT_APPS, FakeGitHub, start_fake_github
from tests.helpers import (
    SECRET_PATTERN,
    Database,
    GraphQLClient,
    MovableClock,
    PostgresServer,
    admin_statement,
    base_env,
    github_env,
    migrate,
    require_postgres,
)

_postgres_skip_reason: str | None = None


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server of TEST_DATABASE_URL, or a skip (a failure under CI)."""
    global _postgres_skip_reason
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        reason = "TEST_DATABASE_URL is not set"
    else:
        try:
            admin_statement(url, "SELECT 1")
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


async def _truncate(engine: Engine[Any]) -> None:
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
        path.chmod(0o600)  # as ghvault creates it: a copy gets the umask's mode
        engine: Engine[Any] = PooledSQLiteEngine(path=str(path))
        database = Database("sqlite", engine, f"sqlite:///{path}", sqlite_path=path)
    else:
        url = request.getfixturevalue("postgres_url")
        engine = PostgresEngine(config={"dsn": url})
        database = Database("postgres", engine, url)
    async with engines.serving(engine):
        if not database.is_sqlite:
            await _truncate(engine)
        yield database


# ---------------------------------------------------------------- clock, GitHub, app


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def fake_github() -> AsyncIterator[FakeGitHub]:
    async with start_fake_github(apps=DEFAULT_APPS) as fake:
        yield fake


@pytest.fixture
def settings(database: Database, fake_github: FakeGitHub) -> Settings:
    return Settings.from_env(base_env(DATABASE_URL=database.url, **github_env(fake_github)))


@pytest.fixture
async def gql(
    aiohttp_client: Any, settings: Settings, clock: MovableClock, database: Database
) -> GraphQLClient:
    app = create_app(settings, clock=clock, engine=database.engine)
    return GraphQLClient(await aiohttp_client(app))


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
