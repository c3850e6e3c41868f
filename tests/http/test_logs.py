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
from tests.helpers import ALICE, Database, MovableClock, bearer, random_token


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
    """One request gives one JSON line with its request id, principal, operation and duration."""
    async with served(create_app(settings, clock=clock, engine=database.engine)) as client:
        response = await client.post(
            "/graphql",
            json={"query": "query Who { viewer { id } }", "operationName": "Who"},
            headers={"Authorization": bearer("alice", Role.USER)},
        )

    request_id = response.headers["X-Request-Id"]
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert [line["logger"] for line in mine] == ["aiohttp.access"]
    (access,) = mine
    assert (access["method"], access["path"], access["status"]) == ("POST", "/graphql", 200)
    assert (access["operation"], access["outcome"]) == ("Who", "ok")
    assert (access["principal_id"], access["principal_role"]) == ("alice", "user")
    assert isinstance(access["duration_ms"], float)
    assert isinstance(access["graphql_ms"], float)
    assert {"timestamp", "level", "logger", "message"} <= set(access)


async def test_a_failed_operation_says_so_on_its_line(
    settings: Settings, clock: MovableClock, database: Database, log_output
) -> None:
    """Make sure the request's line counts the operation's errors."""
    async with served(create_app(settings, clock=clock, engine=database.engine)) as client:
        response = await client.post(
            "/graphql",
            json={"query": 'query Who { user(id: "bob") { id } }', "operationName": "Who"},
            headers={"Authorization": ALICE},
        )

    request_id = response.headers["X-Request-Id"]
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    access = next(
        line
        for line in lines
        if line.get("request_id") == request_id and line["logger"] == "aiohttp.access"
    )
    assert (access["operation"], access["outcome"]) == ("Who", "1 error(s)")
    assert access["principal_id"] == "alice"


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
