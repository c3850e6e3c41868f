"""Who may do what: UNAUTHENTICATED and FORBIDDEN as top-level errors."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from server.domain.enums import Role
from tests.helpers import (
    ADMIN,
    ALICE,
    BOB,
    JWT_SECRET,
    PURGE,
    REVOKE,
    SERVICE,
    STORE,
    VIEWER_TOKEN,
    Database,
    GraphQLClient,
    MovableClock,
    bearer,
    error_codes,
    store_input,
)

USER_QUERY = "query($id: ID!) { user(id: $id) { id email githubTokens { state } } }"
TOKENS_QUERY = "{ githubTokens { edges { node { userId } } } }"
AUDIT_QUERY = "{ auditEvents { edges { node { action } } } }"


def _operations(now: datetime) -> list[tuple[str, dict]]:
    return [
        ("{ viewer { id } }", {}),
        (USER_QUERY, {"id": "alice"}),
        (TOKENS_QUERY, {}),
        (AUDIT_QUERY, {}),
        (STORE, store_input("alice", now=now)),
        (REVOKE, {"input": {}}),
        (PURGE, {"userId": "alice"}),
    ]


async def test_anonymous_callers_are_unauthenticated_everywhere(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Without a bearer token every operation answers UNAUTHENTICATED and nothing else."""
    for query, variables in _operations(clock()):
        body = await gql.post(query, variables)
        assert error_codes(body) == ["UNAUTHENTICATED"], query
        assert "data" not in body


def _jwt(**claims: object) -> str:
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(bearer("alice", Role.USER, ttl=timedelta(seconds=-10)), id="expired"),
        pytest.param(
            "Bearer "
            + jwt.encode(
                {"sub": "alice", "role": "user", "exp": 4102444800},
                "another-secret-of-sufficient-length-0000",
                algorithm="HS256",
            ),
            id="wrong-signature",
        ),
        pytest.param("Bearer " + _jwt(sub="alice", role="user"), id="no-exp"),
        pytest.param("Bearer " + _jwt(sub="alice", role="root", exp=4102444800), id="bad-role"),
        pytest.param(
            "Bearer "
            + jwt.encode({"sub": "alice", "role": "admin", "exp": 4102444800}, "", "none"),
            id="alg-none",
        ),
        pytest.param("Basic YWxpY2U6cGFzcw==", id="not-bearer"),
        pytest.param("Bearer not-a-jwt", id="garbage"),
    ],
)
async def test_bad_credentials_are_unauthenticated(gql: GraphQLClient, authorization: str) -> None:
    """Expired, wrongly signed or malformed JWTs are refused like no JWT at all."""
    body = await gql.post("{ viewer { id } }", auth=authorization)
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert authorization.split(" ", 1)[1] not in str(body)


async def test_user_cannot_use_admin_operations(gql: GraphQLClient, clock: MovableClock) -> None:
    """A USER reading another user, listing tokens, reading audit or purging is FORBIDDEN."""
    await gql.data(STORE, store_input("bob", now=clock()), auth=SERVICE)
    for query, variables in [
        (USER_QUERY, {"id": "bob"}),
        (USER_QUERY, {"id": "alice"}),
        (TOKENS_QUERY, {}),
        (AUDIT_QUERY, {}),
        (PURGE, {"userId": "bob"}),
    ]:
        body = await gql.post(query, variables, auth=ALICE)
        assert error_codes(body) == ["FORBIDDEN"], query
        assert not any((body["data"] or {}).values())
    assert "bob" not in str(body["errors"])
    bobs = (await gql.data(USER_QUERY, {"id": "bob"}, auth=ADMIN))["user"]
    assert bobs["githubTokens"][0]["state"] == "ACTIVE"


async def test_user_cannot_revoke_another_users_token(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Naming another user in revokeToken is FORBIDDEN and leaves the token active."""
    await gql.data(STORE, store_input("bob", now=clock()), auth=SERVICE)

    body = await gql.post(REVOKE, {"input": {"userId": "bob"}}, auth=ALICE)

    assert error_codes(body) == ["FORBIDDEN"]
    status = (await gql.data(VIEWER_TOKEN, auth=BOB))["viewer"]["githubToken"]
    assert status["state"] == "ACTIVE"


async def test_admin_revokes_any_users_token_with_reason_admin(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """An ADMIN naming a user revokes that user's token, recorded as ADMIN."""
    await gql.data(STORE, store_input("bob", now=clock()), auth=SERVICE)

    result = (await gql.data(REVOKE, {"input": {"userId": "bob"}}, auth=ADMIN))["revokeToken"]

    assert result["token"]["state"] == "REVOKED"
    assert result["token"]["revocationReason"] == "ADMIN"
    status = (await gql.data(VIEWER_TOKEN, auth=BOB))["viewer"]["githubToken"]
    assert (status["state"], status["revocationReason"]) == ("REVOKED", "ADMIN")


@pytest.mark.parametrize("caller", [ALICE, ADMIN], ids=["user", "admin"])
async def test_only_a_service_may_store_tokens(
    gql: GraphQLClient, clock: MovableClock, caller: str
) -> None:
    """storeGithubToken is FORBIDDEN to users and admins, and stores nothing."""
    body = await gql.post(STORE, store_input("alice", now=clock()), auth=caller)

    assert error_codes(body) == ["FORBIDDEN"]
    status = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert status["state"] == "NOT_CONNECTED"


async def test_a_service_cannot_revoke(gql: GraphQLClient, clock: MovableClock) -> None:
    """revokeToken is for the user and admins; the commit worker may not revoke."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    body = await gql.post(REVOKE, {"input": {"userId": "alice"}}, auth=SERVICE)
    assert error_codes(body) == ["FORBIDDEN"]


async def test_viewer_reports_the_principal(gql: GraphQLClient) -> None:
    """viewer answers with the JWT's subject and role for every role."""
    for authorization, expected in [
        (ALICE, {"id": "alice", "role": "USER"}),
        (ADMIN, {"id": "root", "role": "ADMIN"}),
        (SERVICE, {"id": "commit-worker", "role": "SERVICE"}),
    ]:
        assert (await gql.data("{ viewer { id role } }", auth=authorization))["viewer"] == expected


async def test_a_users_first_request_creates_the_user(gql: GraphQLClient) -> None:
    """The first authenticated USER request creates the user row, with the JWT's profile."""
    carol = bearer("carol", Role.USER, email="carol@example.com", name="Carol")
    assert (await gql.data(USER_QUERY, {"id": "carol"}, auth=ADMIN))["user"] is None

    await gql.data("{ viewer { id } }", auth=carol)

    user = (await gql.data(USER_QUERY, {"id": "carol"}, auth=ADMIN))["user"]
    assert user["id"] == "carol"
    assert user["email"] == "carol@example.com"


def test_bearer_helper_makes_tokens_that_expire() -> None:
    """The expired-token case above really is expired."""
    token = bearer("alice", Role.USER, ttl=timedelta(seconds=-10)).split(" ")[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] < datetime.now(UTC).timestamp()


@pytest.mark.parametrize(
    "sub",
    ["alice\x00", "alice\x1b[2J", "line\nbreak", "x" * 256, ""],
    ids=["nul", "control", "newline", "too-long", "empty"],
)
async def test_a_jwt_sub_is_checked_like_a_user_id_before_anything_is_written(
    gql: GraphQLClient, database: Database, sub: str
) -> None:
    """Make sure a signed JWT with an unusable sub is UNAUTHENTICATED and creates no user."""
    token = _jwt(sub=sub, role="user", exp=4102444800)

    response = await gql.http.post(
        "/graphql",
        json={"query": "{ viewer { id githubToken { state } } }"},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status == 401
    assert error_codes(await response.json()) == ["UNAUTHENTICATED"]
    assert await database.fetch("SELECT id FROM users") == []


async def test_a_token_shaped_sub_is_never_logged_in_clear(
    gql: GraphQLClient, log_output: io.StringIO
) -> None:
    """The principal id joins every log line of the request: it is redacted there too."""
    sub = "ghu_" + "S" * 40
    # A refused field is logged while the request runs, so its line carries the principal.
    body = await gql.post('{ user(id: "x") { id } }', auth=bearer(sub, Role.USER))
    assert error_codes(body) == ["FORBIDDEN"]

    log = log_output.getvalue()
    assert "principal_id" in log
    assert "S" * 20 not in log
