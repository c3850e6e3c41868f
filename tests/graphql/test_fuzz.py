"""Schema-driven fuzzing of /graphql, with the app configured as in production.

hypothesis-graphql writes queries and mutations from the live schema, valid ones
and ones with a single schema violation. Each document goes over HTTP once as
ADMIN, once as USER and once as SERVICE, against a database seeded with stored
tokens, a pending GitHub connect and cursors, and with GitHub played by the
fake. Whatever the document, the answer must be a JSON GraphQL response below
500, with no INTERNAL error, no exception text, and no token that the caller
did not send itself, except the access token a SERVICE checks out. What the
fuzzer found is kept below as regression tests.

GHVAULT_FUZZ_EXAMPLES documents are tried per engine (60 by default, which
keeps the suite fast); `make fuzz` tries many more.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import graphql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from server.config import Settings
from server.domain.enums import Role
from server.graphql.schema import export_sdl
from server.http.app import create_app
from server.text import UNSTORABLE_TEXT, is_storable
from tests.fake_github import LITE_APP, STANDARD_APP, FakeGitHub
from tests.helpers import (
    SECRET_PATTERN,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    access_token,
    base_env,
    bearer,
    github_env,
    refresh_token,
    store_input,
)

EXAMPLES = int(os.environ.get("GHVAULT_FUZZ_EXAMPLES", "60"))
REQUEST_TIMEOUT_SECONDS = 30.0

ADMIN = bearer("fuzz-admin", Role.ADMIN, ttl=timedelta(hours=12))
USER = bearer("alice", Role.USER, ttl=timedelta(hours=12))
SERVICE = bearer("fuzz-service", Role.SERVICE, ttl=timedelta(hours=12))
PRINCIPALS = {"ADMIN": ADMIN, "USER": USER, "SERVICE": SERVICE}

# Tracebacks, source locations and exception classes, bare or with their module path.
EXCEPTION_TEXT = re.compile(
    r"Traceback|File \"[^\"]*\", line \d+"
    r"|\b(?:[a-z_][a-z0-9_]*\.)+[A-Z][A-Za-z0-9]*(?:Error|Exception)\b"
    r"|\b(?:Value|Type|Key|Attribute|Runtime|Assertion|Index|Overflow|Lookup|Name"
    r"|UnicodeEncode|UnicodeDecode|ZeroDivision|NotImplemented)Error\b"
)


@dataclass
class World:
    """What the database holds before fuzzing, and the values the fuzzer may send."""

    user_ids: list[str]
    strings: list[str]
    # Well-formed tokens the fuzzer sends; they may come back to a caller like any input.
    sent_access_tokens: set[str] = field(default_factory=set)
    sent_refresh_tokens: set[str] = field(default_factory=set)

    @property
    def sent_tokens(self) -> set[str]:
        return self.sent_access_tokens | self.sent_refresh_tokens


@dataclass
class Tally:
    documents: int = 0
    requests: int = 0
    resolved: dict[str, int] = field(default_factory=dict)


async def _production_client(
    aiohttp_client: Any, database: Database, clock: MovableClock, fake_github: FakeGitHub
) -> GraphQLClient:
    env = base_env(GHVAULT_ENV="production", DATABASE_URL=database.url, **github_env(fake_github))
    settings_ = Settings.from_env(env)
    assert settings_.is_production
    return GraphQLClient(
        await aiohttp_client(create_app(settings_, clock=clock, engine=database.engine))
    )


async def _seed(client: GraphQLClient, clock: MovableClock, fake: FakeGitHub) -> World:
    """Tokens in every state, a pending connect for alice, and cursors into both lists."""
    now = clock()
    live_standard = fake.seed_token(STANDARD_APP.client_id, 583231, "octocat")
    live_lite = fake.seed_token(LITE_APP.client_id, 583231, "octocat")
    live_bob = fake.seed_token(STANDARD_APP.client_id, 1001, "bob-gh")
    stores = [
        # Expired but refreshable: a checkout refreshes it at the fake GitHub.
        store_input(
            "alice",
            now=now,
            access=live_standard[0],
            refresh=live_standard[1],
            accessTokenExpiresAt=(now - timedelta(hours=1)).isoformat(),
        ),
        store_input("alice", now=now, app_type="LITE", access=live_lite[0], refresh=live_lite[1]),
        store_input(
            "bob",
            now=now,
            github_user_id="1001",
            github_login="bob-gh",
            access=live_bob[0],
            refresh=live_bob[1],
            email="bob@example.com",
            displayName="Bob",
        ),
        store_input(
            "carol",
            now=now,
            github_user_id="1002",
            github_login="carol-gh",
            accessTokenExpiresAt=(now - timedelta(days=200)).isoformat(),
            refreshTokenExpiresAt=(now - timedelta(days=1)).isoformat(),
        ),
        store_input(
            "dave", now=now, app_type="LITE", github_user_id="1003", github_login="dave-gh"
        ),
    ]
    for variables in stores:
        data = await client.data(STORE, variables, auth=SERVICE)
        assert data["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess", data
    revoked = await client.data(
        'mutation { revokeToken(input: {userId: "dave", appType: LITE}) { __typename } }',
        auth=ADMIN,
    )
    assert revoked["revokeToken"]["__typename"] == "RevokeTokenSuccess", revoked

    started = await client.data(
        "mutation { startGithubConnect(appType: STANDARD) {"
        " ... on GithubConnectStart { authorizeUrl state } } }",
        auth=USER,
    )
    start = started["startGithubConnect"]
    challenge = parse_qs(urlsplit(start["authorizeUrl"]).query)["code_challenge"][0]
    code = fake.issue_code(
        client_id=STANDARD_APP.client_id,
        github_user_id=583231,
        login="octocat",
        code_challenge=challenge,
    )

    cursors = await client.data(
        "{ githubTokens(first: 1) { pageInfo { endCursor } }"
        "  auditEvents(first: 1) { pageInfo { endCursor } } }",
        auth=ADMIN,
    )
    user_ids = ["alice", "bob", "carol", "dave", "fuzz-admin", "fuzz-service", "nobody"]
    sent_access = {access_token(), access_token()}
    sent_refresh = {refresh_token()}
    strings = [
        *user_ids,
        *sorted(sent_access | sent_refresh),
        "octocat",
        "583231",
        "bob-gh",
        "1001",
        "carol-gh",
        "https://app.example/callback",
        "",
        start["state"],
        code,
        cursors["githubTokens"]["pageInfo"]["endCursor"],
        cursors["auditEvents"]["pageInfo"]["endCursor"],
    ]
    return World(
        user_ids, strings, sent_access_tokens=sent_access, sent_refresh_tokens=sent_refresh
    )


# Values that have broken parsers, drivers and databases elsewhere.
AWKWARD_STRINGS = [
    "\x00",
    "a\x00b",
    "\ud800",
    "\u202e\ufeff",
    "ñ🤩",
    " ",
    "-1",
    "1e309",
    "null",
    "'; DROP TABLE users; --",
    "%00%ff",
    "x" * 255,
    "x" * 256,
    "x" * 20_000,
    "http://[::1/",
    "http://",
    "https://app.example/callback#fragment",
    "javascript:alert(1)",
    "//app.example/callback",
]
EDGE_TIMESTAMPS = [
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+23:59",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59.999999+00:00",
    "9999-12-31T23:59:59.999999-23:59",
    "9999-12-31T23:59:59.999999+23:59",
    "1970-01-01T00:00:00Z",
    "2026-11-28T10:00:00",
    "2026-02-30T00:00:00+00:00",
    "2026-11-28T10:00:00+24:00",
    "",
]
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@dataclass(frozen=True)
class Request:
    document: str
    variables: dict[str, Any] = field(default_factory=dict)


def _timestamps() -> st.SearchStrategy[str]:
    offsets = st.timedeltas(min_value=-timedelta(hours=23), max_value=timedelta(hours=23))
    timezones = st.none() | st.just(UTC) | offsets.map(timezone)
    return st.one_of(
        st.sampled_from(EDGE_TIMESTAMPS),
        st.datetimes(timezones=timezones).map(lambda moment: moment.isoformat()),
    )


def _custom_scalars(world: World) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """Known ids and values, awkward strings and arbitrary ones; timestamps of every shape."""
    text = st.text(max_size=300)
    strings = st.one_of(st.sampled_from(world.strings), st.sampled_from(AWKWARD_STRINGS), text).map(
        nodes.String
    )
    return {
        "ID": st.one_of(
            st.sampled_from(world.user_ids).map(nodes.String), strings, INT32.map(nodes.Int)
        ),
        "String": strings,
        "DateTime": st.one_of(
            _timestamps().map(nodes.String), text.map(nodes.String), st.integers().map(nodes.Int)
        ),
    }


def _json_values(world: World) -> st.SearchStrategy[Any]:
    """Anything a JSON variable can hold, weighted towards strings the API expects."""
    scalars = st.one_of(
        st.sampled_from(world.strings),
        st.sampled_from(AWKWARD_STRINGS),
        _timestamps(),
        st.text(max_size=100),
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
    )
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


def _store_requests(world: World) -> st.SearchStrategy[Request]:
    """storeGithubToken through variables: mostly valid input, one part of it fuzzed."""
    values = _json_values(world)
    valid = {
        "userId": st.sampled_from(world.user_ids),
        "appType": st.sampled_from(["STANDARD", "LITE"]),
        "githubUserId": st.sampled_from(["583231", "1001", "1002", "1003", "77"]),
        "githubLogin": st.sampled_from(["octocat", "bob-gh", "carol-gh", "dave-gh", "new-login"]),
        "accessToken": st.sampled_from(sorted(world.sent_access_tokens)),
    }
    optional = {
        "accessTokenExpiresAt": _timestamps() | values,
        "refreshToken": st.sampled_from(sorted(world.sent_refresh_tokens)) | values,
        "refreshTokenExpiresAt": _timestamps() | values,
        "email": values,
        "displayName": values,
        "githubEmail": values,
    }

    @st.composite
    def build(draw: st.DrawFn) -> Request:
        data = draw(st.fixed_dictionaries(valid, optional=optional))
        if draw(st.booleans()):
            # One required part replaced or dropped.
            name = draw(st.sampled_from(sorted(valid)))
            if draw(st.booleans()):
                data[name] = draw(values)
            else:
                del data[name]
        return Request(STORE, {"input": data})

    return build()


def _fields(
    selection_set: graphql.SelectionSetNode | None,
    fragments: dict[str, graphql.FragmentDefinitionNode],
) -> Iterator[graphql.FieldNode]:
    """The fields of a selection set, through inline fragments and fragment spreads."""
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, graphql.FieldNode):
            yield selection
        elif isinstance(selection, graphql.InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments)
        elif isinstance(selection, graphql.FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _fields(fragment.selection_set, fragments)


def _response_key(node: graphql.FieldNode) -> str:
    return (node.alias or node.name).value


# The fields that hand a SERVICE a credential on purpose: root field -> its field.
HANDED_OUT = {"checkoutGithubToken": "accessToken", "issueGithubCapability": "capability"}


def handed_out_keys(document: str) -> list[tuple[str, str]]:
    """Where in `data` a checked-out token or an issued capability lands: (root key, its key)."""
    try:
        ast = graphql.parse(document)
    except graphql.GraphQLError:
        return []
    fragments = {
        definition.name.value: definition
        for definition in ast.definitions
        if isinstance(definition, graphql.FragmentDefinitionNode)
    }
    keys = []
    for definition in ast.definitions:
        if not isinstance(definition, graphql.OperationDefinitionNode):
            continue
        for root in _fields(definition.selection_set, fragments):
            handed_out = HANDED_OUT.get(root.name.value)
            if handed_out is None:
                continue
            for leaf in _fields(root.selection_set, fragments):
                if leaf.name.value == handed_out:
                    keys.append((_response_key(root), _response_key(leaf)))
    return keys


def leaked_tokens(body: Any, document: str, role: str, world: World) -> list[str]:
    """Token-shaped strings in `body` that neither the fuzzer sent nor a SERVICE was handed
    (a checkout, a capability)."""
    scanned = json.loads(json.dumps(body))
    data = scanned.get("data") if isinstance(scanned, dict) else None
    if role == "SERVICE" and isinstance(data, dict):
        for root_key, token_key in handed_out_keys(document):
            result = data.get(root_key)
            if isinstance(result, dict):
                result.pop(token_key, None)
    found = SECRET_PATTERN.findall(json.dumps(scanned))
    return [token for token in found if token not in world.sent_tokens]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def carries_unstorable_text(request: Request) -> bool:
    """Whether the JSON body itself holds a NUL or a lone surrogate, which the server refuses
    with a plain 400."""
    texts = [request.document, *_strings(request.variables)]
    return not all(is_storable(text) for text in texts)


def check_response(status: int, text: str, request: Request, role: str, world: World) -> Any:
    """Every property a response must have, whatever was asked; returns the parsed body."""
    context = f"as {role}: {request}\n-> {status} {text[:2000]}"
    assert status < 500, context
    if status == 400 and carries_unstorable_text(request):
        # Refused before GraphQL runs, with the reason, naming where, as a request error.
        (error,) = json.loads(text)["errors"]
        assert error["message"].startswith(f"GraphQL requests must not contain {UNSTORABLE_TEXT} ")
        return {}
    body = json.loads(text)
    assert isinstance(body, dict), context
    assert "data" in body or "errors" in body, context
    for error in body.get("errors") or ():
        extensions = error.get("extensions") or {}
        assert extensions.get("code") != "INTERNAL", context
        assert not EXCEPTION_TEXT.search(error.get("message", "")), context
        assert not EXCEPTION_TEXT.search(json.dumps(extensions)), context
    assert leaked_tokens(body, request.document, role, world) == [], context
    return body


def _resolved(body: dict[str, Any]) -> bool:
    """Whether some root field produced a value (the request got past auth and validation)."""
    data = body.get("data")
    return isinstance(data, dict) and any(value is not None for value in data.values())


async def test_handed_out_keys_follow_aliases_and_fragments() -> None:
    """The exemptions from the token scan are found under aliases and fragments."""
    document = """
    mutation {
      out: checkoutGithubToken(userId: "alice") {
        ... on CheckoutSuccess { secret: accessToken githubLogin }
        ...Rest
      }
      revokeToken(input: {}) { __typename }
    }
    fragment Rest on CheckoutGithubTokenResult { ... on CheckoutSuccess { accessToken } }
    """
    assert handed_out_keys(document) == [("out", "secret"), ("out", "accessToken")]
    issued = (
        'mutation { c: issueGithubCapability(input: {userId: "a"}) '
        "{ ... on GithubCapabilityIssued { capability id } } }"
    )
    assert handed_out_keys(issued) == [("c", "capability")]
    assert handed_out_keys("{ viewer { id } }") == []
    assert handed_out_keys("{ not graphql") == []


async def test_leak_scan_exempts_only_a_service_checkout_and_the_callers_own_tokens() -> None:
    """A checked-out token passes for SERVICE only; any other stored token is a leak."""
    sent, stored = access_token(), access_token()
    world = World(user_ids=[], strings=[], sent_access_tokens={sent})
    document = (
        'mutation { checkoutGithubToken(userId: "a") { ... on CheckoutSuccess { accessToken } } }'
    )
    body = {"data": {"checkoutGithubToken": {"accessToken": stored}}}
    assert leaked_tokens(body, document, "SERVICE", world) == []
    assert leaked_tokens(body, document, "ADMIN", world) == [stored]
    echoed = {"data": {"user": {"email": sent, "displayName": stored}}}
    assert leaked_tokens(echoed, "{ user(id: 1) { email displayName } }", "SERVICE", world) == [
        stored
    ]
    jwt = ADMIN.split(" ")[1]
    assert leaked_tokens({"errors": [{"message": f"bad {jwt}"}]}, "{ x }", "SERVICE", world)


@pytest.mark.parametrize(
    "message",
    [
        "Traceback (most recent call last):",
        'File "/srv/server/app.py", line 12, in handler',
        "asyncpg.exceptions.DataError: invalid input",
        "ValueError: year 0 is out of range",
    ],
)
async def test_exception_text_is_recognised(message: str) -> None:
    """The unmasked-exception check recognises tracebacks and exception class names."""
    world = World(user_ids=[], strings=[])
    body = json.dumps({"data": None, "errors": [{"message": message}]})
    with pytest.raises(AssertionError):
        check_response(200, body, Request("{ viewer { id } }"), "USER", world)


# Requests the fuzzer found answering INTERNAL, as it found them.
NUL_IN_AN_ID = Request('{ user(id: "a\\u0000b") { id } }')
EXPIRY_BEYOND_DATETIME_RANGE = Request(
    STORE,
    {
        "input": {
            "userId": "erin",
            "githubUserId": "1004",
            "githubLogin": "erin-gh",
            "accessToken": "ghu_" + "e" * 36,
            "accessTokenExpiresAt": "9999-12-31T23:59:59-23:00",
        }
    },
)
UNPARSEABLE_REDIRECT_URI = Request(
    'mutation { startGithubConnect(redirectUri: "http://[::1/") {'
    " __typename ... on OperationError { code field } } }"
)


async def test_raw_nuls_are_told_apart_from_escaped_ones() -> None:
    """Only a NUL in the JSON body gets the plain 400; `\\u0000` in a literal is GraphQL's."""
    by_id = "query($id: ID!) { user(id: $id) { id } }"
    assert not carries_unstorable_text(NUL_IN_AN_ID)
    assert carries_unstorable_text(Request(by_id, {"id": "a\x00"}))
    assert carries_unstorable_text(Request(by_id, {"id": "\ud800"}))


async def _answer(client: GraphQLClient, request: Request, auth: str) -> dict[str, Any]:
    response = await client.http.post(
        "/graphql",
        json={"query": request.document, "variables": request.variables},
        headers={"Authorization": auth},
    )
    assert response.status == 200
    return await response.json()


async def test_a_nul_in_a_string_literal_is_refused_on_both_engines(
    aiohttp_client: Any, database: Database, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Found by the fuzzer: `\\u0000` inside a GraphQL string literal reached PostgreSQL,
    which cannot compare it (INTERNAL); it is now a validation error before anything runs."""
    client = await _production_client(aiohttp_client, database, clock, fake_github)
    body = await _answer(client, NUL_IN_AN_ID, ADMIN)
    assert "data" not in body
    assert [error["message"] for error in body["errors"]] == [
        f"String values must not contain {UNSTORABLE_TEXT} (found in 'id')."
    ]


async def test_expiry_beyond_datetime_range_is_an_input_error(
    aiohttp_client: Any, database: Database, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Found by the fuzzer: year 9999 at -23:00 is past datetime's range in UTC; the store
    answers with an OperationError on that field rather than an unexpected error."""
    client = await _production_client(aiohttp_client, database, clock, fake_github)
    body = await _answer(client, EXPIRY_BEYOND_DATETIME_RANGE, SERVICE)
    assert "errors" not in body, body
    result = body["data"]["storeGithubToken"]
    assert result["__typename"] == "OperationError"
    assert result["field"] == "accessTokenExpiresAt"


async def test_unparseable_redirect_uri_is_an_input_error(
    aiohttp_client: Any, database: Database, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Found by the fuzzer: a redirectUri that urlsplit rejects ("http://[::1/") gets the
    redirectUri OperationError rather than an unexpected error."""
    client = await _production_client(aiohttp_client, database, clock, fake_github)
    body = await _answer(client, UNPARSEABLE_REDIRECT_URI, USER)
    assert "errors" not in body, body
    assert body["data"]["startGithubConnect"] == {
        "__typename": "OperationError",
        "code": "INVALID_INPUT",
        "field": "redirectUri",
    }


async def test_fuzzed_operations_never_fail_unexpectedly_or_leak_a_token(
    aiohttp_client: Any,
    database: Database,
    clock: MovableClock,
    fake_github: FakeGitHub,
) -> None:
    """Generated queries and mutations, valid or not, as ADMIN, USER and SERVICE:
    no 5xx, no INTERNAL error, no exception text, no token that was not the caller's."""
    client = await _production_client(aiohttp_client, database, clock, fake_github)
    world = await _seed(client, clock, fake_github)
    loop = asyncio.get_running_loop()
    tally = Tally()
    schema = graphql.build_schema(export_sdl())
    scalars = _custom_scalars(world)
    assert schema.query_type is not None
    assert schema.mutation_type is not None
    roots = [*schema.query_type.fields, *schema.mutation_type.fields]
    # A forbidden root field nulls the whole answer, so single fields reach resolvers more often.
    requests = st.one_of(
        st.one_of(*(from_schema(schema, fields=[root], custom_scalars=scalars) for root in roots)),
        from_schema(schema, custom_scalars=scalars, mode=Mode.POSITIVE),
        from_schema(schema, custom_scalars=scalars, mode=Mode.NEGATIVE),
    ).map(Request) | _store_requests(world)

    async def send(request: Request, auth: str) -> tuple[int, str]:
        response = await client.http.post(
            "/graphql",
            json={"query": request.document, "variables": request.variables},
            headers={"Authorization": auth},
        )
        return response.status, await response.text()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests)
    def every_principal_gets_a_sound_answer(request: Request) -> None:
        tally.documents += 1
        for role, auth in PRINCIPALS.items():
            future = asyncio.run_coroutine_threadsafe(send(request, auth), loop)
            status, text = future.result(timeout=REQUEST_TIMEOUT_SECONDS)
            tally.requests += 1
            body = check_response(status, text, request, role, world)
            if _resolved(body):
                tally.resolved[role] = tally.resolved.get(role, 0) + 1

    # Hypothesis drives the examples from a worker thread; the requests run on this loop.
    await asyncio.to_thread(every_principal_gets_a_sound_answer)

    assert tally.documents >= min(EXAMPLES, 10)
    assert set(tally.resolved) == set(PRINCIPALS), f"a principal never reached a resolver: {tally}"
