"""storeGithubToken: identity rules and input validation that never echo secrets."""

from __future__ import annotations

import pytest

from server.domain.enums import Role
from tests.helpers import (
    ALICE,
    BOB,
    SECRET_PATTERN,
    SERVICE,
    STORE,
    VIEWER_TOKEN,
    Database,
    GraphQLClient,
    MovableClock,
    bearer,
    random_token,
    store_input,
)


async def all_text(database: Database) -> str:
    """Every text value of every row of every table, for leak checks."""
    tables = [
        "users",
        "user_github_app_tokens",
        "audit_events",
        "oauth_states",
        "github_webhook_deliveries",
    ]
    rows = []
    for table in tables:
        rows += await database.fetch(f"SELECT * FROM {table}")
    return "\n".join(str(value) for row in rows for value in row.values())


async def test_one_github_identity_cannot_serve_two_users(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """The same GitHub account for a second user is ALREADY_CONNECTED_TO_ANOTHER_USER."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)

    result = (await gql.data(STORE, store_input("bob", now=clock()), auth=SERVICE))[
        "storeGithubToken"
    ]

    assert result["__typename"] == "OperationError"
    assert result["code"] == "ALREADY_CONNECTED_TO_ANOTHER_USER"
    bobs = (await gql.data(VIEWER_TOKEN, auth=BOB))["viewer"]["githubToken"]
    assert bobs["state"] == "NOT_CONNECTED"
    alices = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert alices["state"] == "ACTIVE"


async def test_the_same_identity_may_connect_each_app_type(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Uniqueness is per app type: one GitHub account on STANDARD and LITE of one user."""
    for app_type in ("STANDARD", "LITE"):
        result = (
            await gql.data(
                STORE, store_input("alice", now=clock(), app_type=app_type), auth=SERVICE
            )
        )["storeGithubToken"]
        assert result["__typename"] == "StoreGithubTokenSuccess"


async def test_storing_again_replaces_the_tokens_and_clears_revocation(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """A second store for the same user and app updates the row and bumps its version."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    await gql.data("mutation { revokeToken(input: {}) { __typename } }", auth=ALICE)

    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)

    status = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert status["state"] == "ACTIVE"
    rows = await database.fetch("SELECT credential_version FROM user_github_app_tokens")
    # store (1), revoke (2), store (3)
    assert [row["credential_version"] for row in rows] == [3]


BAD_TOKENS = [
    pytest.param("accessToken", random_token("ghp_", 36), id="classic-pat-as-access"),
    pytest.param("accessToken", random_token("ghu_", 20), id="short-access"),
    pytest.param("accessToken", random_token("ghu_", 36) + "!x", id="bad-charset-access"),
    pytest.param("accessToken", "ghu_" + "a" * 256, id="too-long-access"),
    pytest.param("accessToken", "  " + random_token("ghu_", 36), id="padded-access"),
    pytest.param("refreshToken", random_token("ghu_", 76), id="access-as-refresh"),
    pytest.param("refreshToken", random_token("ghr_", 30), id="short-refresh"),
]


@pytest.mark.parametrize(("field", "value"), BAD_TOKENS)
async def test_malformed_tokens_are_refused_without_a_trace(
    gql: GraphQLClient,
    clock: MovableClock,
    database: Database,
    log_output,
    field: str,
    value: str,
) -> None:
    """INVALID_TOKEN_FORMAT, and no part of what was sent in the response, logs or database."""
    variables = store_input("alice", now=clock())
    variables["input"][field] = value

    body = await gql.post(STORE, variables, auth=SERVICE)

    result = body["data"]["storeGithubToken"]
    assert result["code"] == "INVALID_TOKEN_FORMAT"
    assert result["field"] == field
    secret = value.strip()[4:]
    windows = {secret[i : i + 8] for i in range(0, len(secret) - 7)}
    for place, text in [
        ("response", str(body)),
        ("log", log_output.getvalue()),
        ("database", await all_text(database)),
    ]:
        assert not [w for w in windows if w in text], f"part of the token reached the {place}"
    assert await database.fetch("SELECT id FROM user_github_app_tokens") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("githubUserId", "octocat"),
        ("githubLogin", "not a login"),
        ("userId", ""),
        ("accessTokenExpiresAt", "2026-11-28T10:00:00"),
    ],
)
async def test_invalid_input_names_the_field(
    gql: GraphQLClient, clock: MovableClock, field: str, value: str
) -> None:
    """Malformed ids, logins and offset-less times are INVALID_INPUT naming the field."""
    variables = store_input("alice", now=clock())
    variables["input"][field] = value

    result = (await gql.data(STORE, variables, auth=SERVICE))["storeGithubToken"]

    assert (result["code"], result["field"]) == ("INVALID_INPUT", field)


async def test_a_purged_user_is_not_brought_back_by_a_late_store(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """A store arriving after purgeUser is refused, so erased PII stays erased."""
    admin = bearer("root", Role.ADMIN)
    await gql.data(STORE, store_input("alice", now=clock(), email="a@example.com"), auth=SERVICE)
    await gql.data('mutation { purgeUser(userId: "alice") { __typename } }', auth=admin)

    result = (
        await gql.data(
            STORE, store_input("alice", now=clock(), email="a@example.com"), auth=SERVICE
        )
    )["storeGithubToken"]

    assert (result["code"], result["field"]) == ("INVALID_INPUT", "userId")
    user = (await gql.data('{ user(id: "alice") { email } }', auth=admin))["user"]
    assert user["email"] is None


async def test_stored_profile_is_readable_by_admins(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """email and displayName from storeGithubToken appear on user(id)."""
    variables = store_input("alice", now=clock(), email="a@example.com", displayName="Alice")
    await gql.data(STORE, variables, auth=SERVICE)

    user = (
        await gql.data(
            '{ user(id: "alice") { email displayName githubTokens { appType state } } }',
            auth=bearer("root", Role.ADMIN),
        )
    )["user"]

    assert (user["email"], user["displayName"]) == ("a@example.com", "Alice")
    assert user["githubTokens"][0] == {"appType": "STANDARD", "state": "ACTIVE"}


def test_secret_pattern_catches_tokens() -> None:
    """The leak scanner used across the suite recognises the token families."""
    assert SECRET_PATTERN.search(random_token("ghr_", 76))
    assert SECRET_PATTERN.search("x " + random_token("github_pat_", 40))
    assert not SECRET_PATTERN.search("ghu_[REDACTED]")


async def test_an_expiry_that_overflows_in_utc_is_invalid_input(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """9999-12-31T23:59:59-01:00 is a valid time that no database column can hold in UTC."""
    variables = store_input("alice", now=clock())
    variables["input"]["accessTokenExpiresAt"] = "9999-12-31T23:59:59-01:00"

    result = (await gql.data(STORE, variables, auth=SERVICE))["storeGithubToken"]

    assert (result["code"], result["field"]) == ("INVALID_INPUT", "accessTokenExpiresAt")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accessTokenExpiresAt", "0001-01-01T00:00:00+00:00"),
        ("refreshTokenExpiresAt", "9999-12-31T23:59:59.999999+00:00"),
    ],
)
async def test_an_expiry_the_driver_would_store_as_infinity_is_invalid_input(
    gql: GraphQLClient, clock: MovableClock, field: str, value: str
) -> None:
    """The first and last instants Python has would come back from PostgreSQL as
    -infinity and infinity, naive datetimes that no status can be derived from."""
    variables = store_input("alice", now=clock())
    variables["input"][field] = value

    result = (await gql.data(STORE, variables, auth=SERVICE))["storeGithubToken"]

    assert (result["code"], result["field"]) == ("INVALID_INPUT", field)


async def test_expiries_next_to_the_extremes_are_stored_and_read_back(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """One microsecond inside either extreme is an ordinary instant on both engines."""
    variables = store_input("alice", now=clock())
    variables["input"]["accessTokenExpiresAt"] = "0001-01-01T00:00:00.000001+00:00"
    variables["input"]["refreshTokenExpiresAt"] = "9999-12-31T23:59:59.999998+00:00"

    result = (await gql.data(STORE, variables, auth=SERVICE))["storeGithubToken"]

    assert result["__typename"] == "StoreGithubTokenSuccess", result
    assert result["token"]["state"] == "EXPIRED"


async def test_nul_characters_are_refused_before_reaching_the_database(
    gql: GraphQLClient,
) -> None:
    """A NUL in any argument is a clear 400, on both engines (PostgreSQL cannot compare it)."""
    response = await gql.http.post(
        "/graphql",
        json={"query": "query($id: ID!) { user(id: $id) { id } }", "variables": {"id": "a\x00b"}},
        headers={"Authorization": bearer("root", Role.ADMIN)},
    )

    assert response.status == 400
    assert "NUL" in await response.text()
