"""GHVAULT_ENV=production: no schema tour for strangers, bounded requests."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from strawberry.schema.schema import validate_document

from server.config import Settings
from server.graphql import schema as schema_module
from server.graphql.schema import create_schema
from server.http.app import create_app
from tests.helpers import ADMIN, Database, GraphQLClient, MovableClock, base_env

INTROSPECTION = "{ __schema { queryType { name } types { name } } }"


@pytest.fixture
def make_client(aiohttp_client: Any, database: Database, clock: MovableClock) -> Any:
    async def make(**env: str) -> GraphQLClient:
        settings = Settings.from_env(base_env(DATABASE_URL=database.url, **env))
        app = create_app(settings, clock=clock, engine=database.engine)
        return GraphQLClient(await aiohttp_client(app))

    return make


async def test_production_refuses_introspection(make_client: Any) -> None:
    """Make sure the schema cannot be listed in production, even by an admin."""
    client = await make_client(GHVAULT_ENV="production")
    body = await client.post(INTROSPECTION, auth=ADMIN)
    assert body["errors"]
    assert "introspection" in body["errors"][0]["message"].lower()


@pytest.mark.parametrize(
    "env",
    [{"GHVAULT_ENV": "development"}, {"GHVAULT_ENV": "production", "GRAPHIQL_ENABLED": "true"}],
    ids=["development", "production-with-graphiql"],
)
async def test_introspection_where_graphiql_is_on(make_client: Any, env: dict) -> None:
    client = await make_client(**env)
    data = await client.data(INTROSPECTION, auth=ADMIN)
    assert data["__schema"]["queryType"]["name"] == "Query"


async def test_get_graphql_is_not_allowed_without_graphiql(make_client: Any) -> None:
    production = await make_client(GHVAULT_ENV="production")
    development = await make_client()

    hidden = await production.http.get("/graphql", headers={"Accept": "text/html"})
    shown = await development.http.get("/graphql", headers={"Accept": "text/html"})

    assert hidden.status == 405
    assert hidden.headers["Allow"] == "POST"
    assert shown.status == 200
    assert "graphiql" in (await shown.text()).lower()


async def test_deep_queries_are_refused(make_client: Any) -> None:
    """A query 30 levels deep is refused with a message about depth."""
    client = await make_client(GHVAULT_ENV="production")
    query = "{ viewer " + "{ githubToken " * 29 + "{ state }" + " }" * 29 + " }"
    body = await client.post(query, auth=ADMIN)
    assert any("exceeds maximum operation depth" in e["message"] for e in body["errors"])


async def test_alias_floods_are_refused(make_client: Any) -> None:
    client = await make_client(GHVAULT_ENV="production")
    query = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(100)) + " }"
    body = await client.post(query, auth=ADMIN)
    assert "data" not in body
    assert any("alias" in e["message"].lower() for e in body["errors"])


async def test_token_floods_are_refused(make_client: Any) -> None:
    client = await make_client(GHVAULT_ENV="production", GRAPHQL_MAX_BODY_BYTES="1048576")
    query = "{ viewer { " + "id " * 3000 + "} }"
    body = await client.post(query, auth=ADMIN)
    assert "data" not in body
    assert any("tokens" in e["message"] for e in body["errors"])


async def test_a_megabyte_body_is_refused(make_client: Any) -> None:
    """Bodies over GRAPHQL_MAX_BODY_BYTES are refused before they are parsed."""
    client = await make_client(GHVAULT_ENV="production")
    padding = " " * (1024 * 1024)
    response = await client.http.post(
        "/graphql",
        data=io.BytesIO(('{"query": "{ viewer { id } }' + padding + '"}').encode()),
        headers={"Content-Type": "application/json", "Authorization": ADMIN},
    )
    assert response.status == 413
    assert "exceeded" in (await response.text()).lower()


@pytest.mark.parametrize(
    ("env", "suggests"),
    [({"GHVAULT_ENV": "production"}, False), ({}, True)],
    ids=["production", "development"],
)
async def test_typos_get_suggestions_only_in_development(
    make_client: Any, env: dict, suggests: bool
) -> None:
    client = await make_client(**env)
    body = await client.post("{ viewer { rol } }", auth=ADMIN)
    message = body["errors"][0]["message"]
    assert "Cannot query field 'rol'" in message
    assert ("Did you mean" in message) is suggests


async def test_batched_requests_are_refused(make_client: Any) -> None:
    client = await make_client(GHVAULT_ENV="production")
    response = await client.http.post(
        "/graphql",
        json=[{"query": "{ viewer { id } }"}, {"query": "{ viewer { id } }"}],
        headers={"Authorization": ADMIN},
    )
    assert response.status == 400


async def test_a_repeated_document_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Identical documents reuse their validation; the query limits must not defeat the cache."""
    validations = []

    def counting_validate(*args: Any) -> list:
        validations.append(args)
        return validate_document(*args)

    monkeypatch.setattr(schema_module, "validate_document", counting_validate)
    schema = create_schema(production=True, introspection=False)
    query = f"query Q{uuid.uuid4().hex} {{ __typename }}"

    for _ in range(3):
        result = await schema.execute(query)
        assert result.errors is None

    assert len(validations) == 1


async def test_scanner_probes_find_nothing_in_production(make_client: Any) -> None:
    """The probes of graphql-cop, sent with a valid token: each one must come back refused."""
    client = await make_client(GHVAULT_ENV="production")

    duplicated = await client.post("query { " + "__typename \n" * 500 + "}", auth=ADMIN)
    aliases = "".join(f"alias{i}:__typename \n" for i in range(101))
    aliased = await client.post("query { " + aliases + " }", auth=ADMIN)
    directives = await client.post(
        "query { __typename @aa@aa@aa@aa@aa@aa@aa@aa@aa@aa }", auth=ADMIN
    )
    circular = await client.post(
        "query { __schema { ...A } } fragment A on __Schema { __typename ...B } "
        "fragment B on __Schema { ...A }",
        auth=ADMIN,
    )
    unhandled = await client.post("qwerty cop { abc }", auth=ADMIN)
    traced = await client.post("query { __typename }", auth=ADMIN)
    url_encoded = await client.http.post(
        "/graphql", params={"query": "query {__typename}"}, headers={"Authorization": ADMIN}
    )
    mutation_via_get = await client.http.get(
        "/graphql", params={"query": "mutation { __typename }"}, headers={"Authorization": ADMIN}
    )

    assert "data" not in duplicated
    assert "data" not in aliased
    assert len(directives["errors"]) == 1
    assert circular.get("errors")
    assert "exception" not in str(unhandled).lower()
    assert traced == {"data": {"__typename": "Query"}}
    assert url_encoded.status == 415
    assert mutation_via_get.status == 405
