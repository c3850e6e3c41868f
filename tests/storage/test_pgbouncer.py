"""ghvault behind PgBouncer in transaction pooling mode (DATABASE_POOL_MODE=transaction).

Each transaction may land on another server connection: no statement may be
prepared for later, and LISTEN only works over a direct DATABASE_LISTEN_URL.
Without PgBouncer these tests are skipped, loudly, unless GHVAULT_REQUIRE_PGBOUNCER=1
(CI sets it, and .ci/run installs Debian's pgbouncer), which makes that a failure.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.config import Settings
from server.http.app import create_app
from tests.helpers import (
    ALICE,
    SERVICE,
    STORE,
    VIEWER_TOKEN,
    GraphQLClient,
    MovableClock,
    PostgresServer,
    base_env,
    migrate,
    store_input,
)
from tests.pgbouncer import PgBouncer, find_pgbouncer, running_pgbouncer
from tests.ws_client import connect

GHVAULT = Path(sys.executable).parent / "ghvault"
CLIENTS = 20
REQUESTS_PER_CLIENT = 10
POOLED = {"DATABASE_POOL_MODE": "transaction"}


@pytest.fixture(scope="module")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    executable = find_pgbouncer()
    if executable is None:
        reason = "no pgbouncer on PATH (apt-get install pgbouncer)"
        if os.environ.get("GHVAULT_REQUIRE_PGBOUNCER", "") in ("1", "true", "yes"):
            pytest.fail(f"{reason}, and GHVAULT_REQUIRE_PGBOUNCER is set")
        pytest.skip(f"PgBouncer tests skipped: {reason}")
    with running_pgbouncer(executable, postgres_server.admin_url) as bouncer:
        yield bouncer


@pytest.fixture
def direct_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A migrated database of its own, reached directly."""
    url = postgres_server.create_database("ghvault_pgbouncer")
    try:
        migrate(url)
        yield url
    finally:
        postgres_server.drop_database(url)


def ghvault_migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GHVAULT), "migrate", "--create"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_postgres_migrations_run_through_pgbouncer_again_and_again(
    pgbouncer: PgBouncer, postgres_server: PostgresServer
) -> None:
    """Make sure `ghvault migrate` through a transaction pooler sets up a database and
    rerunning it is a no-op (a prepared statement left on a server connection used to
    make the second run fail with DuplicatePreparedStatementError)."""
    url = postgres_server.create_database("ghvault_pgbouncer_migrate")
    env = {"DATABASE_URL": pgbouncer.url_for(url), **POOLED}
    try:
        runs = [ghvault_migrate(env) for _ in range(3)]
    finally:
        postgres_server.drop_database(url)

    assert [run.returncode for run in runs] == [0, 0, 0], [run.stderr for run in runs]
    assert runs[0].stdout.startswith("created ")
    assert all("is up to date" in run.stdout for run in runs[1:])
    assert all(run.stderr == "" for run in runs)


async def _pooled_client(
    aiohttp_client: Any, pgbouncer: PgBouncer, direct_url: str, clock: MovableClock, **env: str
) -> GraphQLClient:
    settings = Settings.from_env(
        base_env(DATABASE_URL=pgbouncer.url_for(direct_url), **POOLED, **env)
    )
    return GraphQLClient(await aiohttp_client(create_app(settings, clock=clock)))


async def test_postgres_requests_through_pgbouncer_all_succeed(
    aiohttp_client: Any, pgbouncer: PgBouncer, direct_url: str, clock: MovableClock
) -> None:
    """Make sure 20 clients storing and reading tokens at once through two server
    connections get no error at all (statements prepared on one server connection and
    run on another used to fail most requests as INTERNAL)."""
    gql = await _pooled_client(aiohttp_client, pgbouncer, direct_url, clock)

    async def client(number: int) -> list[dict[str, Any]]:
        user = f"user{number}"
        variables = store_input(user, now=clock(), github_user_id=str(1000 + number))
        answers = [await gql.post(STORE, variables, auth=SERVICE)]
        for _ in range(REQUESTS_PER_CLIENT - 1):
            answers.append(await gql.post(VIEWER_TOKEN, auth=ALICE))
        return answers

    answers = [
        answer for batch in await asyncio.gather(*map(client, range(CLIENTS))) for answer in batch
    ]

    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
    assert [answer for answer in answers if "errors" in answer] == []


async def _readiness(gql: GraphQLClient) -> dict[str, Any]:
    response = await gql.http.get("/readyz")
    body: dict[str, Any] = await response.json()
    return body


async def test_postgres_subscriptions_behind_pgbouncer_listen_on_the_direct_url(
    aiohttp_client: Any, pgbouncer: PgBouncer, direct_url: str, clock: MovableClock
) -> None:
    """Make sure a change made elsewhere (here: plain SQL on another connection) reaches a
    subscriber of a server whose DATABASE_URL is pooled, by NOTIFY on DATABASE_LISTEN_URL."""
    gql = await _pooled_client(
        aiohttp_client, pgbouncer, direct_url, clock, DATABASE_LISTEN_URL=direct_url
    )
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    subscription = "subscription { githubTokenChanged(appType: STANDARD) { state } }"

    async with connect(gql.http) as socket:
        assert (await socket.init(ALICE))["type"] == "connection_ack"
        operation = await socket.subscribe(subscription)
        first = await socket.next_payload(operation)
        connection = await asyncpg.connect(pgbouncer.url_for(direct_url), statement_cache_size=0)
        try:
            await connection.execute(
                "UPDATE user_github_app_tokens SET revoked_at = now() WHERE user_id = 'alice'"
            )
        finally:
            await connection.close()
        revoked = await socket.next_payload(operation)

    assert (await _readiness(gql))["notifications"] == "listen"
    assert first == {"data": {"githubTokenChanged": {"state": "ACTIVE"}}}
    assert revoked == {"data": {"githubTokenChanged": {"state": "REVOKED"}}}


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        (POOLED, "DATABASE_POOL_MODE=transaction without DATABASE_LISTEN_URL"),
        ({}, "did not reach a LISTEN connection"),
    ],
    ids=["no-listen-url", "pool-mode-not-set"],
)
async def test_postgres_behind_pgbouncer_without_a_listen_url_polls_and_says_so(
    aiohttp_client: Any,
    pgbouncer: PgBouncer,
    direct_url: str,
    log_output: io.StringIO,
    env: dict[str, str],
    warning: str,
) -> None:
    """Make sure a server that cannot LISTEN warns at start-up, polls instead (so its
    subscribers still hear changes), and /readyz says it polls."""
    settings = Settings.from_env(base_env(DATABASE_URL=pgbouncer.url_for(direct_url), **env))
    for line in settings.start_up_warnings:
        logging.getLogger("ghvault.server").warning(line)  # as `ghvault serve` does
    gql = GraphQLClient(await aiohttp_client(create_app(settings)))

    assert (await _readiness(gql))["notifications"] == "poll"
    assert warning in log_output.getvalue()
