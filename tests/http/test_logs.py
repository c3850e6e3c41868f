"""Log lines: JSON, tied to their request and principal, never holding a secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.config import Settings
from server.domain.enums import Role
from server.http.app import create_app
from server.http.logs import RedactingAccessLogger
from tests.helpers import Database, MovableClock, bearer, random_token


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[TestClient]:
    """The app behind the access logger `ghvault serve` uses."""
    server = TestServer(app)
    await server.start_server(access_log_class=RedactingAccessLogger)
    client = TestClient(server)
    try:
        yield client
    finally:
        await client.close()


async def test_each_line_is_json_with_request_principal_operation_and_duration(
    settings: Settings, clock: MovableClock, database: Database, log_output
) -> None:
    """One request gives JSON lines that share its request id and name its principal."""
    async with served(create_app(settings, clock=clock, engine=database.engine)) as client:
        response = await client.post(
            "/graphql",
            json={"query": "query Who { viewer { id } }", "operationName": "Who"},
            headers={"Authorization": bearer("alice", Role.USER)},
        )

    request_id = response.headers["X-Request-Id"]
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == request_id]
    operation = next(line for line in mine if line["logger"] == "ghvault.graphql.operation")
    assert operation["operation"] == "Who"
    assert (operation["principal_id"], operation["principal_role"]) == ("alice", "user")
    assert isinstance(operation["duration_ms"], float)
    access = next(line for line in mine if line["logger"] == "aiohttp.access")
    assert (access["method"], access["path"], access["status"]) == ("POST", "/graphql", 200)
    for line in mine:
        assert {"timestamp", "level", "logger", "message"} <= set(line)


async def test_the_access_log_redacts_query_strings(
    settings: Settings, clock: MovableClock, database: Database, log_output
) -> None:
    """OAuth codes and tokens in a URL never reach the access log."""
    token = random_token("ghu_", 36)
    async with served(create_app(settings, clock=clock, engine=database.engine)) as client:
        await client.get(f"/healthz?access_token={token}&code=abc123def456&state=s")

    log = log_output.getvalue()
    assert "/healthz?access_token=[REDACTED]" in log
    assert token[4:] not in log
    assert "abc123def456" not in log
