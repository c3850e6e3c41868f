"""disconnectGithub and purgeUser: grants revoked at GitHub, local rows deleted regardless."""

from __future__ import annotations

import json
import time
from typing import Any

from server.domain.disconnect import MAX_DISCONNECT_ATTEMPTS
from tests.fake_github import LITE_APP, STANDARD_APP, FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    GITHUB_TIMEOUT_SECONDS,
    PURGE,
    REVOKE,
    SERVICE,
    STORE,
    VIEWER_TOKEN,
    Database,
    GraphQLClient,
    MovableClock,
    error_codes,
    store_input,
)

ALICE_GITHUB_ID = 7101
BOB_GITHUB_ID = 7102

DISCONNECT = """
mutation Disconnect($appType: GithubAppType!) {
  disconnectGithub(appType: $appType) {
    __typename
    ... on DisconnectGithubSuccess { revokedAtGithub token { state needsReconnect userId appType } }
    ... on OperationError { code message }
  }
}
"""

EVENTS = """query($userId: ID, $action: AuditAction) {
  auditEvents(userId: $userId, action: $action, first: 100) {
    edges { node { action actorRole actorId subjectUserId appType detail } }
  }
}"""

USER = """query($id: ID!) { user(id: $id) { id purgedAt githubTokens { appType state } } }"""


async def connect_seeded(
    gql: GraphQLClient,
    fake_github: FakeGitHub,
    clock: MovableClock,
    user_id: str,
    github_user_id: int,
    login: str,
    *,
    app_type: str = "STANDARD",
) -> tuple[str, str]:
    """Give the user a live grant at the fake GitHub and store its tokens; returns them."""
    client_id = STANDARD_APP.client_id if app_type == "STANDARD" else LITE_APP.client_id
    access, refresh = fake_github.seed_token(client_id, github_user_id, login)
    variables = store_input(
        user_id,
        now=clock(),
        app_type=app_type,
        github_user_id=str(github_user_id),
        github_login=login,
        access=access,
        refresh=refresh,
    )
    stored = (await gql.data(STORE, variables, auth=SERVICE))["storeGithubToken"]
    assert stored["__typename"] == "StoreGithubTokenSuccess", stored
    return access, refresh


async def disconnect(
    gql: GraphQLClient, auth: str = ALICE, app_type: str = "STANDARD"
) -> dict[str, Any]:
    return (await gql.data(DISCONNECT, {"appType": app_type}, auth=auth))["disconnectGithub"]


async def audit_details(gql: GraphQLClient, user_id: str, action: str) -> list[dict[str, Any]]:
    result = await gql.data(EVENTS, {"userId": user_id, "action": action}, auth=ADMIN)
    return [json.loads(edge["node"]["detail"]) for edge in result["auditEvents"]["edges"]]


async def token_rows(database: Database, user_id: str) -> list[str]:
    rows = await database.fetch(
        f"SELECT github_app_type FROM user_github_app_tokens WHERE user_id = '{user_id}'"
    )
    return sorted(row["github_app_type"] for row in rows)


async def test_disconnect_revokes_the_grant_at_github_and_deletes_the_row(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a disconnect kills the tokens at GitHub, forgets them here and says so."""
    access, refresh = await connect_seeded(
        gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh"
    )
    lite_access, _ = await connect_seeded(
        gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh", app_type="LITE"
    )
    bob_access, _ = await connect_seeded(gql, fake_github, clock, "bob", BOB_GITHUB_ID, "bob-gh")

    result = await disconnect(gql)

    assert result == {
        "__typename": "DisconnectGithubSuccess",
        "revokedAtGithub": True,
        "token": {
            "state": "NOT_CONNECTED",
            "needsReconnect": True,
            "userId": "alice",
            "appType": "STANDARD",
        },
    }
    assert fake_github.calls["revoke_grant"] == 1
    assert not fake_github.is_access_token_valid(access)
    assert not fake_github.is_refresh_token_valid(refresh)
    assert fake_github.is_access_token_valid(lite_access)
    assert fake_github.is_access_token_valid(bob_access)
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert viewer["state"] == "NOT_CONNECTED"
    assert await token_rows(database, "alice") == ["lite"]
    assert await token_rows(database, "bob") == ["standard"]
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == [
        {"github": "revoked", "revoked_at_github": True}
    ]


async def test_disconnect_deletes_the_row_when_github_fails(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a GitHub 503 still disconnects locally and reports revokedAtGithub false."""
    access, _ = await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    fake_github.fail_with_status = 503

    result = await disconnect(gql)

    assert result["__typename"] == "DisconnectGithubSuccess"
    assert result["revokedAtGithub"] is False
    assert result["token"]["state"] == "NOT_CONNECTED"
    assert fake_github.calls["revoke_grant"] == 1
    assert await token_rows(database, "alice") == []
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == [
        {"github": "unavailable", "revoked_at_github": False}
    ]
    # Nothing reached GitHub's token store, so the grant outlives the disconnect there.
    assert fake_github.is_access_token_valid(access)


async def test_disconnect_does_not_wait_on_a_hung_github(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a GitHub that never answers is given up on after the configured timeout."""
    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    fake_github.hang_seconds = GITHUB_TIMEOUT_SECONDS + 4

    started = time.monotonic()
    result = await disconnect(gql)
    waited = time.monotonic() - started

    assert waited < GITHUB_TIMEOUT_SECONDS + 2
    assert result["__typename"] == "DisconnectGithubSuccess"
    assert result["revokedAtGithub"] is False
    assert result["token"]["state"] == "NOT_CONNECTED"
    assert await token_rows(database, "alice") == []
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == [
        {"github": "unavailable", "revoked_at_github": False}
    ]


async def test_disconnect_succeeds_when_github_already_forgot_the_grant(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a grant the user already removed on GitHub does not block a disconnect."""
    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    fake_github.reset()

    result = await disconnect(gql)

    assert result["__typename"] == "DisconnectGithubSuccess"
    assert result["token"]["state"] == "NOT_CONNECTED"
    assert fake_github.calls["revoke_grant"] == 1
    assert await token_rows(database, "alice") == []
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == [
        {"github": "not_found", "revoked_at_github": False}
    ]


async def test_disconnecting_a_soft_revoked_token_deletes_it_without_calling_github(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a token revoked in ghvault (its ciphertext erased) can still be disconnected."""
    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    revoked = (await gql.data(REVOKE, {"input": {}}, auth=ALICE))["revokeToken"]
    assert revoked["token"]["state"] == "REVOKED"

    result = await disconnect(gql)

    assert (result["__typename"], result["revokedAtGithub"]) == ("DisconnectGithubSuccess", False)
    assert fake_github.calls["revoke_grant"] == 0
    assert await token_rows(database, "alice") == []
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == [
        {"github": "no_token", "revoked_at_github": False}
    ]


async def test_disconnecting_without_a_token_is_not_connected(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a user with nothing stored, or already disconnected, gets NOT_CONNECTED."""
    nothing = await disconnect(gql)
    assert (nothing["__typename"], nothing["code"]) == ("OperationError", "NOT_CONNECTED")

    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    assert (await disconnect(gql))["__typename"] == "DisconnectGithubSuccess"
    again = await disconnect(gql)

    assert (again["__typename"], again["code"]) == ("OperationError", "NOT_CONNECTED")
    assert fake_github.calls["revoke_grant"] == 1
    assert len(await audit_details(gql, "alice", "TOKEN_DISCONNECTED")) == 1


async def test_only_users_may_disconnect(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure ADMIN and SERVICE principals are FORBIDDEN and nothing is revoked."""
    access, _ = await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")

    for auth in (ADMIN, SERVICE):
        body = await gql.post(DISCONNECT, {"appType": "STANDARD"}, auth=auth)

        assert body["data"] is None
        assert error_codes(body) == ["FORBIDDEN"]
    assert fake_github.calls["revoke_grant"] == 0
    assert fake_github.is_access_token_valid(access)
    assert await token_rows(database, "alice") == ["standard"]


async def test_purge_revokes_every_grant_at_github_first(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure purgeUser kills the user's tokens at GitHub for both apps and audits it."""
    standard, _ = await connect_seeded(
        gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh"
    )
    lite, _ = await connect_seeded(
        gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh", app_type="LITE"
    )
    bob, _ = await connect_seeded(gql, fake_github, clock, "bob", BOB_GITHUB_ID, "bob-gh")

    result = (await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN))["purgeUser"]

    assert (result["__typename"], result["deletedTokens"]) == ("PurgeUserSuccess", 2)
    assert fake_github.calls["revoke_grant"] == 2
    assert not fake_github.is_access_token_valid(standard)
    assert not fake_github.is_access_token_valid(lite)
    assert fake_github.is_access_token_valid(bob)
    assert await token_rows(database, "alice") == []
    assert await token_rows(database, "bob") == ["standard"]
    details = await audit_details(gql, "alice", "USER_PURGED")
    assert details == [
        {
            "already_purged": False,
            "deleted_tokens": 2,
            "github": {"standard": "revoked", "lite": "revoked"},
        }
    ]


async def test_purge_erases_locally_when_github_fails(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a GitHub 503 does not stop the erasure, and the audit detail says so."""
    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    fake_github.fail_with_status = 503

    result = (await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN))["purgeUser"]

    assert (result["__typename"], result["deletedTokens"]) == ("PurgeUserSuccess", 1)
    assert fake_github.calls["revoke_grant"] == 1
    user = (await gql.data(USER, {"id": "alice"}, auth=ADMIN))["user"]
    assert user["purgedAt"] == clock().isoformat()
    assert [token["state"] for token in user["githubTokens"]] == ["NOT_CONNECTED"] * 2
    assert await token_rows(database, "alice") == []
    details = await audit_details(gql, "alice", "USER_PURGED")
    assert details == [
        {"already_purged": False, "deleted_tokens": 1, "github": {"standard": "unavailable"}}
    ]


async def test_a_token_stored_during_the_revocation_is_revoked_before_it_is_deleted(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """The attack: a token stored while GitHub is slow to revoke the grant used to be deleted
    with its own grant live at GitHub, and the answer said revokedAtGithub. Now the newer
    token's grant is revoked in turn, and only then is the row deleted."""
    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    stored_meanwhile: list[str] = []

    async def reconnect_meanwhile() -> None:
        if not stored_meanwhile:
            access, _ = await connect_seeded(
                gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh"
            )
            stored_meanwhile.append(access)

    fake_github.after_revoke = reconnect_meanwhile

    result = await disconnect(gql)

    assert (result["__typename"], result["revokedAtGithub"]) == ("DisconnectGithubSuccess", True)
    assert fake_github.calls["revoke_grant"] == 2
    assert not fake_github.is_access_token_valid(stored_meanwhile[0])
    assert await token_rows(database, "alice") == []
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == [
        {"github": "revoked", "revoked_at_github": True, "attempts": 2}
    ]


async def test_a_disconnect_never_reports_a_revocation_it_did_not_make(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """A token of another GitHub account stored during the revocation, and GitHub failing
    when its grant is revoked in turn: the row goes, as after any GitHub failure, and the
    answer says its grant was not revoked."""
    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    stored_meanwhile: list[str] = []

    async def store_another_account_meanwhile() -> None:
        access, _ = await connect_seeded(
            gql, fake_github, clock, "alice", BOB_GITHUB_ID, "alice-second-gh"
        )
        stored_meanwhile.append(access)
        fake_github.after_revoke = None
        fake_github.fail_with_status = 503

    fake_github.after_revoke = store_another_account_meanwhile

    result = await disconnect(gql)

    assert (result["__typename"], result["revokedAtGithub"]) == ("DisconnectGithubSuccess", False)
    assert fake_github.calls["revoke_grant"] == 2
    assert await token_rows(database, "alice") == []
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == [
        {"github": "unavailable", "revoked_at_github": False, "attempts": 2}
    ]
    assert fake_github.is_access_token_valid(stored_meanwhile[0])


async def test_tokens_stored_during_every_revocation_are_kept_and_the_user_asked_again(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Tokens keep arriving while each grant is revoked: after a few rounds nothing is
    deleted, the newest token stays (its grant never revoked), and the user is told to
    disconnect again."""
    await connect_seeded(gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh")
    newest: list[str] = []

    async def reconnect_meanwhile() -> None:
        access, _ = await connect_seeded(
            gql, fake_github, clock, "alice", ALICE_GITHUB_ID, "alice-gh"
        )
        newest.append(access)

    fake_github.after_revoke = reconnect_meanwhile

    result = await disconnect(gql)

    assert (result["__typename"], result["code"]) == ("OperationError", "GITHUB_UNAVAILABLE")
    assert fake_github.calls["revoke_grant"] == MAX_DISCONNECT_ATTEMPTS
    assert await token_rows(database, "alice") == ["standard"]
    assert fake_github.is_access_token_valid(newest[-1])
    assert await audit_details(gql, "alice", "TOKEN_DISCONNECTED") == []
    fake_github.after_revoke = None
    assert (await disconnect(gql))["revokedAtGithub"] is True
    assert not fake_github.is_access_token_valid(newest[-1])
