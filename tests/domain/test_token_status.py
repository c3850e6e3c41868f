"""What the frontend sees as a token's state moves through its life."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.crypto import Keyring
from server.domain.enums import Role
from tests.helpers import (
    ALICE,
    REVOKE,
    SERVICE,
    STORE,
    VIEWER_TOKEN,
    GraphQLClient,
    MovableClock,
    bearer,
    store_input,
)


async def test_state_follows_the_token_through_its_life(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """NOT_CONNECTED -> ACTIVE -> EXPIRED -> REFRESH_EXPIRED as time passes."""

    async def status() -> dict:
        return (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]

    first = await status()
    assert first["state"] == "NOT_CONNECTED"
    assert first["needsReconnect"] is True

    stored = await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    assert stored["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"

    active = await status()
    assert active == {
        "state": "ACTIVE",
        "needsReconnect": False,
        "githubLogin": "octocat",
        "accessTokenExpiresAt": (clock() + timedelta(hours=8)).isoformat(),
        "revocationReason": None,
    }

    clock.advance(timedelta(hours=8, seconds=1))
    expired = await status()
    assert (expired["state"], expired["needsReconnect"]) == ("EXPIRED", False)

    clock.advance(timedelta(days=180))
    gone = await status()
    assert (gone["state"], gone["needsReconnect"]) == ("REFRESH_EXPIRED", True)


async def test_users_own_revoke_shows_as_revoked_by_the_user(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """A user's own revokeToken turns the token REVOKED with reason USER_REVOKED."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)

    result = await gql.data(REVOKE, {"input": {"appType": "STANDARD"}}, auth=ALICE)

    revoked = result["revokeToken"]
    assert revoked["__typename"] == "RevokeTokenSuccess"
    assert revoked["alreadyRevoked"] is False
    assert revoked["token"]["state"] == "REVOKED"
    status = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert (status["state"], status["revocationReason"], status["needsReconnect"]) == (
        "REVOKED",
        "USER_REVOKED",
        True,
    )


async def test_revoking_twice_is_idempotent(gql: GraphQLClient, clock: MovableClock) -> None:
    """The second revoke succeeds and reports that the token was already revoked."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)

    again = (await gql.data(REVOKE, {"input": {}}, auth=ALICE))["revokeToken"]

    assert again["alreadyRevoked"] is True
    assert again["token"]["state"] == "REVOKED"


async def test_a_token_without_expiry_stays_active(gql: GraphQLClient, clock: MovableClock) -> None:
    """GitHub Apps with expiring tokens off issue access tokens that never expire."""
    variables = store_input("alice", now=clock())
    for field in ("accessTokenExpiresAt", "refreshToken", "refreshTokenExpiresAt"):
        del variables["input"][field]
    await gql.data(STORE, variables, auth=SERVICE)

    clock.advance(timedelta(days=400))

    status = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert status["state"] == "ACTIVE"
    assert status["accessTokenExpiresAt"] is None


async def test_viewer_lists_one_status_per_app_type(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """githubTokens includes NOT_CONNECTED entries, one per app type."""
    await gql.data(STORE, store_input("alice", now=clock(), app_type="LITE"), auth=SERVICE)

    tokens = (await gql.data("{ viewer { githubTokens { appType state } } }", auth=ALICE))[
        "viewer"
    ]["githubTokens"]

    assert tokens == [
        {"appType": "STANDARD", "state": "NOT_CONNECTED"},
        {"appType": "LITE", "state": "ACTIVE"},
    ]


async def test_status_reads_never_decrypt(
    gql: GraphQLClient, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """viewer, user and githubTokens answer without touching a ciphertext's key."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("a status read decrypted a token")

    monkeypatch.setattr(Keyring, "decrypt", refuse)
    admin = bearer("root", Role.ADMIN)

    mine = await gql.data("{ viewer { githubTokens { state githubLogin } } }", auth=ALICE)
    theirs = await gql.data('{ user(id: "alice") { githubTokens { state } } }', auth=admin)
    listed = await gql.data("{ githubTokens { edges { node { state } } } }", auth=admin)

    assert mine["viewer"]["githubTokens"][0] == {"state": "ACTIVE", "githubLogin": "octocat"}
    assert theirs["user"]["githubTokens"][0]["state"] == "ACTIVE"
    assert listed["githubTokens"]["edges"][0]["node"]["state"] == "ACTIVE"
