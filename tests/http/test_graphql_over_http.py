"""POST /graphql by the GraphQL-over-HTTP specification: media types, status codes, `data`."""

from __future__ import annotations

import io
import sqlite3
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.config import Settings
from server.domain import status as domain_status
from server.github import GitHubUnavailable
from server.http.app import create_app
from server.http.graphql_responses import (
    GRAPHQL_RESPONSE_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    RETRY_AFTER_SECONDS,
    negotiate,
)
from tests.helpers import (
    ADMIN,
    ALICE,
    BOB,
    REVOKE,
    SERVICE,
    STORE,
    GraphQLClient,
    base_env,
    store_input,
)

GRAPHQL = GRAPHQL_RESPONSE_MEDIA_TYPE
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> Client:
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url))
    client: Client = await aiohttp_client(create_app(settings))
    return client


async def _post(
    client: Client, body: object, *, accept: str | None = None, auth: str | None = ADMIN
) -> tuple[int, str, dict[str, Any]]:
    headers = {"Accept": accept} if accept is not None else {}
    if auth:
        headers["Authorization"] = auth
    response = await client.post("/graphql", json=body, headers=headers)
    return response.status, response.content_type, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON_MEDIA_TYPE),
        ("", JSON_MEDIA_TYPE),
        ("*/*", JSON_MEDIA_TYPE),
        ("application/*", JSON_MEDIA_TYPE),
        ("application/json", JSON_MEDIA_TYPE),
        (GRAPHQL, GRAPHQL),
        (APOLLO_ACCEPT, GRAPHQL),
        ("application/json, application/graphql-response+json", GRAPHQL),
        ("application/graphql-response+json;q=0.5, application/json", JSON_MEDIA_TYPE),
        ("application/graphql-response+json;q=0, */*;q=0.1", JSON_MEDIA_TYPE),
        ("application/json, multipart/mixed;deferSpec=20220824", JSON_MEDIA_TYPE),
        ("text/html", None),
        ("application/json;q=0", None),
        ("application/json;q=zero", None),
    ],
)
def test_the_response_media_type_follows_accept(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize("accept", [None, "*/*", JSON_MEDIA_TYPE, GRAPHQL, APOLLO_ACCEPT])
async def test_a_result_is_200_in_the_media_type_asked_for(
    client: Client, accept: str | None
) -> None:
    status, content_type, body = await _post(client, {"query": "{ __typename }"}, accept=accept)

    assert (status, body) == (200, {"data": {"__typename": "Query"}})
    assert content_type == negotiate(accept)


async def test_a_client_that_reads_neither_json_type_gets_406(client: Client) -> None:
    status, content_type, body = await _post(client, {"query": "{ __typename }"}, accept="text/xml")

    assert (status, content_type) == (406, JSON_MEDIA_TYPE)
    assert GRAPHQL in body["errors"][0]["message"]


REQUEST_ERRORS = [
    pytest.param({"query": "{"}, id="parse"),
    pytest.param({"query": "{ notAField }"}, id="validation"),
    pytest.param(
        {"query": "query CoerceFailure($id: ID!) { user(id: $id) { id } }", "variables": {}},
        id="missing-variable",
    ),
    pytest.param(
        {"query": "query Q($id: ID!) { user(id: $id) { id } }", "variables": {"id": None}},
        id="null-variable",
    ),
    pytest.param(
        {
            "query": "query Q($first: Int) { auditEvents(first: $first) { edges { cursor } } }",
            "variables": {"first": "many"},
        },
        id="bad-variable",
    ),
    pytest.param(
        {"query": "query A { __typename }", "operationName": "Missing"}, id="unknown-operation"
    ),
]


@pytest.mark.parametrize("request_body", REQUEST_ERRORS)
@pytest.mark.parametrize(
    ("accept", "status"), [(JSON_MEDIA_TYPE, 200), (GRAPHQL, 400)], ids=["json", "graphql"]
)
async def test_a_request_error_has_no_data_entry(
    client: Client, request_body: dict[str, Any], accept: str, status: int
) -> None:
    """Make sure a request refused before execution says so: no `data` at all (not even null),
    and, for application/graphql-response+json, a 400."""
    answered, content_type, body = await _post(client, request_body, accept=accept)

    assert (answered, content_type) == (status, accept)
    assert "data" not in body
    assert body["errors"]
    assert all("path" not in error for error in body["errors"])


async def test_an_unknown_operation_name_is_not_echoed(client: Client) -> None:
    _, _, body = await _post(client, {"query": "query A { __typename }", "operationName": "Zq9x"})

    assert "Zq9x" not in str(body)


@pytest.mark.parametrize("accept", [JSON_MEDIA_TYPE, GRAPHQL])
async def test_a_field_error_keeps_data_and_200(client: Client, accept: str) -> None:
    """Make sure an error raised while executing (FORBIDDEN on one field) is a result:
    200 with `data`, under both media types."""
    query = '{ viewer { id } user(id: "bob") { id } }'

    status, _, body = await _post(client, {"query": query}, accept=accept, auth=ALICE)

    assert status == 200
    assert body["data"] == {"viewer": {"id": "alice"}, "user": None}
    assert [error["extensions"]["code"] for error in body["errors"]] == ["FORBIDDEN"]


@pytest.mark.parametrize("accept", [JSON_MEDIA_TYPE, GRAPHQL])
async def test_an_anonymous_request_is_401_without_data(client: Client, accept: str) -> None:
    status, content_type, body = await _post(
        client, {"query": "{ __typename }"}, accept=accept, auth=None
    )

    assert (status, content_type) == (401, accept)
    assert body == {
        "errors": [
            {
                "message": "Authentication required: send a valid bearer token.",
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ]
    }


@pytest.mark.parametrize(
    "body",
    [
        {"query": "{ __typename }", "operationName": {"Zq9x": "Zq9y"}},
        {"query": "{ __typename }", "operationName": 0},
        {"query": "{ __typename }", "variables": "string"},
        {"query": ["array"]},
        {"notquery": "{ __typename }"},
    ],
    ids=["object-name", "number-name", "string-variables", "array-query", "no-query"],
)
@pytest.mark.parametrize("accept", [JSON_MEDIA_TYPE, GRAPHQL])
async def test_a_malformed_request_is_a_400_in_the_media_type_asked_for(
    client: Client, body: dict[str, Any], accept: str
) -> None:
    status, content_type, answer = await _post(client, body, accept=accept)

    assert (status, content_type) == (400, accept)
    assert "data" not in answer
    assert [set(error) for error in answer["errors"]] == [{"message"}]
    assert "Zq9" not in str(answer)


@pytest.mark.parametrize("accept", [JSON_MEDIA_TYPE, GRAPHQL])
async def test_a_subscription_over_post_is_a_400_naming_the_websocket_protocol(
    client: Client, log_output: io.StringIO, accept: str
) -> None:
    """Make sure a subscription POSTed (as GraphiQL or a misconfigured client does) is told
    where subscriptions are served, without an INTERNAL error or an ERROR line."""
    status, content_type, body = await _post(
        client, {"query": "subscription { githubTokenChanged { state } }"}, accept=accept
    )

    assert (status, content_type) == (400, accept)
    assert "data" not in body
    assert "graphql-transport-ws" in body["errors"][0]["message"]
    assert '"level": "ERROR"' not in log_output.getvalue()


@pytest.mark.parametrize(
    ("env", "accept"),
    [
        ({}, "application/json"),
        ({}, "*/*"),
        ({"GHVAULT_ENV": "production"}, "application/json"),
        ({"GHVAULT_ENV": "production"}, "text/html"),
    ],
    ids=["development-json", "development-any", "production-json", "production-html"],
)
async def test_graphql_over_get_is_not_allowed(
    aiohttp_client: Any, sqlite_url: str, env: dict[str, str], accept: str
) -> None:
    """Make sure a query sent as GET (served nowhere) is 405 with `Allow: POST`, and is not run."""
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url, **env))
    client = await aiohttp_client(create_app(settings))

    response = await client.get(
        "/graphql",
        params={"query": "{ __typename }"},
        headers={"Accept": accept, "Authorization": ADMIN},
    )

    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert "__typename" not in await response.text()


async def test_a_browser_still_gets_graphiql_on_get(client: Client) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html,*/*;q=0.8"})

    assert (response.status, response.content_type) == (200, "text/html")


TOKEN_IDS = "{ viewer { githubTokens { id appType state } } }"


async def test_a_token_status_keeps_its_id_through_every_state(
    gql: GraphQLClient, clock: Any
) -> None:
    """Make sure a client cache keyed by `id` (Apollo's default) sees the same object change
    state on connect and revoke, and that ids differ between users and app types."""

    async def ids(auth: str) -> dict[str, tuple[str, str]]:
        data = await gql.data(TOKEN_IDS, auth=auth)
        return {
            token["appType"]: (token["id"], token["state"])
            for token in data["viewer"]["githubTokens"]
        }

    await gql.data(STORE, store_input("bob", now=clock(), github_user_id="2"), auth=SERVICE)
    before = await ids(ALICE)
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    connected = await ids(ALICE)
    await gql.data(REVOKE, {"input": {"userId": "alice", "appType": "STANDARD"}}, auth=ADMIN)
    revoked = await ids(ALICE)
    listed = await gql.data("{ githubTokens { edges { node { id userId } } } }", auth=ADMIN)

    standard = before["STANDARD"][0]
    assert [states["STANDARD"] for states in (before, connected, revoked)] == [
        (standard, "NOT_CONNECTED"),
        (standard, "ACTIVE"),
        (standard, "REVOKED"),
    ]
    nodes = [edge["node"] for edge in listed["githubTokens"]["edges"]]
    assert {node["userId"]: node["id"] for node in nodes}["alice"] == standard
    bobs = {token_id for token_id, _ in (await ids(BOB)).values()}
    assert len({standard, before["LITE"][0], *bobs}) == 4


def _busy() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorname = "SQLITE_BUSY"
    return error


@pytest.mark.parametrize(
    "outage",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        _busy(),
        GitHubUnavailable("GitHub did not answer in time"),
    ],
    ids=["refused", "timeout", "starting-up", "read-only-standby", "sqlite-busy", "github"],
)
@pytest.mark.parametrize("accept", [JSON_MEDIA_TYPE, GRAPHQL])
async def test_an_outage_is_a_503_to_retry(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    log_output: io.StringIO,
    outage: Exception,
    accept: str,
) -> None:
    """Make sure a caller can tell "retry later" from a bug: 503, Retry-After, UNAVAILABLE,
    and the log gets one WARNING line instead of an ERROR with a traceback."""

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise outage

    monkeypatch.setattr(domain_status, "token_statuses", unavailable)
    response = await client.post(
        "/graphql",
        json={"query": "{ viewer { githubTokens { state } } }"},
        headers={"Authorization": ALICE, "Accept": accept},
    )
    body = await response.json(content_type=None)

    assert (response.status, response.content_type) == (503, accept)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAVAILABLE"]
    assert '"level": "ERROR"' not in log_output.getvalue()


@pytest.mark.parametrize(
    "bug",
    [
        ValueError("a bug"),
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        sqlite3.OperationalError("no such table: users"),
    ],
    ids=["value-error", "unique-violation", "missing-table"],
)
async def test_a_bug_is_not_taken_for_an_outage(
    client: Client, monkeypatch: pytest.MonkeyPatch, bug: Exception
) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise bug

    monkeypatch.setattr(domain_status, "token_statuses", failing)
    status, _, body = await _post(client, {"query": "{ viewer { githubTokens { state } } }"})

    assert status == 200
    assert [error["extensions"]["code"] for error in body["errors"]] == ["INTERNAL"]
