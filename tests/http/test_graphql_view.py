"""POST /graphql: strangers are refused from the headers, malformed bodies are 4xx."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from server.domain.enums import Role
from server.graphql.schema import Schema
from server.http.graphql_view import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, GhvaultGraphQLView
from tests.helpers import ADMIN, GraphQLClient, bearer, error_codes

ANONYMOUS_BODY = {
    "errors": [
        {
            "message": "Authentication required: send a valid bearer token.",
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    ],
}


class Spy:
    """Counts how often the view reads a body and the schema runs a document."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parsed = 0
        self.executed = 0
        parse_http_body = GhvaultGraphQLView.parse_http_body
        execute = Schema.execute

        async def counting_parse(view: Any, *args: Any, **kwargs: Any) -> Any:
            self.parsed += 1
            return await parse_http_body(view, *args, **kwargs)

        async def counting_execute(schema: Any, *args: Any, **kwargs: Any) -> Any:
            self.executed += 1
            return await execute(schema, *args, **kwargs)

        monkeypatch.setattr(GhvaultGraphQLView, "parse_http_body", counting_parse)
        monkeypatch.setattr(Schema, "execute", counting_execute)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-jwt",
        bearer("alice", Role.USER, ttl=timedelta(seconds=-10)),
    ],
    ids=["no-header", "garbage", "expired"],
)
async def test_anonymous_post_is_refused_before_its_body_is_read(
    gql: GraphQLClient, spy: Spy, authorization: str | None
) -> None:
    """Make sure a request without a valid principal costs no parsing or validation."""
    headers = {"Authorization": authorization} if authorization else {}
    # Within every limit, and expensive to validate: what an attacker would send.
    query = "{ viewer { " + "id " * 500 + "} }"

    response = await gql.http.post("/graphql", json={"query": query}, headers=headers)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await response.json() == ANONYMOUS_BODY
    assert (spy.parsed, spy.executed) == (0, 0)


async def test_an_authenticated_post_is_parsed_and_run(gql: GraphQLClient, spy: Spy) -> None:
    """The counters above can move: the same request with a principal is parsed and run."""
    data = await gql.data("{ viewer { id } }", auth=ADMIN)
    assert data == {"viewer": {"id": "root"}}
    assert (spy.parsed, spy.executed) == (1, 1)


async def test_graphiql_loads_without_a_token(gql: GraphQLClient, spy: Spy) -> None:
    response = await gql.http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status == 200
    assert "graphiql" in (await response.text()).lower()
    assert spy.executed == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"query=%7B+viewer+%7B+id+%7D+%7D"),
        ("text/plain", b'{"query": "{ viewer { id } }"}'),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="q"\r\n'),
        ("application/jsonp", b'{"query": "{ viewer { id } }"}'),
    ],
    ids=["form", "text", "multipart", "json-lookalike"],
)
async def test_bodies_a_browser_sends_cross_site_are_refused(
    gql: GraphQLClient, spy: Spy, content_type: str, body: bytes
) -> None:
    """Make sure a form or text POST (no CORS preflight) cannot run an operation."""
    response = await gql.http.post(
        "/graphql", data=body, headers={"Content-Type": content_type, "Authorization": ADMIN}
    )
    assert response.status == 415
    assert "application/json" in await response.text()
    assert spy.parsed == 0


async def test_json_with_a_charset_is_accepted(gql: GraphQLClient) -> None:
    response = await gql.http.post(
        "/graphql",
        data=json.dumps({"query": "{ viewer { id } }"}).encode(),
        headers={"Content-Type": "application/json; charset=utf-8", "Authorization": ADMIN},
    )
    assert response.status == 200
    assert (await response.json())["data"] == {"viewer": {"id": "root"}}


def _nested(depth: int) -> str:
    """JSON text of objects nested `depth` deep (built as text: json.dumps would recurse)."""
    return '{"a": ' * depth + '"x"' + "}" * depth


def _with_variable(value: str) -> bytes:
    query = "query($v: String) { viewer { id } }"
    return ('{"query": "' + query + '", "variables": {"v": ' + value + "}}").encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"query": "{ viewer { id } }", "x": "\xff\xfe"}', "UTF-8"),
        (_with_variable(_nested(1000)), f"deeper than {MAX_JSON_DEPTH}"),
        (_with_variable(_nested(100)), f"deeper than {MAX_JSON_DEPTH}"),
        (_with_variable("9" * 5000), "JSON"),
        (
            _with_variable('"\\u0000"'),
            "NUL characters or unpaired UTF-16 surrogates (found at variables.v)",
        ),
        (_with_variable('["a", "\\ud800"]'), "(found at variables.v[1])"),
        (_with_variable('{"\\udc00": 1}'), "(found in a name in variables.v)"),
        (
            _with_variable('{"ghu_' + "a" * 36 + '": {"k": "\\udfff"}}'),
            "(found at variables.v.<name>.k)",
        ),
        (b"[" * 1000, "deeper than"),
        (b"[" * 5000, f"over {MAX_JSON_CONTAINERS} arrays and objects"),
        (_with_variable("[" + "[]," * 5000 + "[]]"), f"over {MAX_JSON_CONTAINERS} arrays"),
    ],
    ids=[
        "not-utf8",
        "nested-1000",
        "nested-100",
        "long-number",
        "nul",
        "surrogate-in-a-list",
        "surrogate-in-a-name",
        "path-without-caller-text",
        "open-brackets",
        "too-many-brackets",
        "too-many-lists",
    ],
)
async def test_malformed_bodies_are_client_errors(
    gql: GraphQLClient, body: bytes, expected: str
) -> None:
    """Make sure each malformed body is a 400 saying what was wrong, not a 500."""
    response = await gql.http.post(
        "/graphql",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": ADMIN},
    )
    assert response.status == 400
    assert expected in await response.text()


async def test_nesting_within_the_limit_reaches_graphql(gql: GraphQLClient) -> None:
    """Variables nested within the bound are GraphQL's to judge (here: an unused variable)."""
    response = await gql.http.post(
        "/graphql",
        data=_with_variable(_nested(MAX_JSON_DEPTH - 3)),
        headers={"Content-Type": "application/json", "Authorization": ADMIN},
    )
    assert response.status == 200
    body = await response.json()
    assert "data" not in body
    assert error_codes(body)
