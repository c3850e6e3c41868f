"""Connect: startGithubConnect and completeGithubConnect against the fake GitHub."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from server.domain.connect import MAX_STATES_PER_USER, STATE_TTL
from server.domain.enums import Role
from tests.fake_github import LITE_APP, STANDARD_APP, FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    BOB,
    SERVICE,
    STORE,
    T0,
    VIEWER_TOKEN,
    Database,
    GraphQLClient,
    MovableClock,
    bearer,
    error_codes,
    store_input,
)

REDIRECT_URI = "https://app.example/cb"
OCTOCAT_ID = 583231

START = """
mutation Start($appType: GithubAppType!, $redirectUri: String) {
  startGithubConnect(appType: $appType, redirectUri: $redirectUri) {
    __typename
    ... on GithubConnectStart { authorizeUrl state expiresAt }
    ... on OperationError { code message field }
  }
}
"""

COMPLETE = """
mutation Complete($code: String!, $state: String!) {
  completeGithubConnect(code: $code, state: $state) {
    __typename
    ... on CompleteGithubConnectSuccess { token { state githubLogin githubUserId appType userId } }
    ... on OperationError { code message field }
  }
}
"""

EVENTS = """query($userId: ID, $action: AuditAction) {
  auditEvents(userId: $userId, action: $action, first: 100) {
    edges { node { action actorRole actorId subjectUserId appType detail } }
  }
}"""


async def start(
    gql: GraphQLClient,
    auth: str = ALICE,
    *,
    app_type: str = "STANDARD",
    redirect_uri: str | None = REDIRECT_URI,
) -> dict[str, Any]:
    variables = {"appType": app_type, "redirectUri": redirect_uri}
    return (await gql.data(START, variables, auth=auth))["startGithubConnect"]


async def complete(gql: GraphQLClient, code: str, state: str, auth: str = ALICE) -> dict[str, Any]:
    variables = {"code": code, "state": state}
    return (await gql.data(COMPLETE, variables, auth=auth))["completeGithubConnect"]


def query_of(authorize_url: str) -> dict[str, str]:
    """The query parameters of the authorize URL, each of which must appear once."""
    params = parse_qs(urlsplit(authorize_url).query, strict_parsing=True)
    assert all(len(values) == 1 for values in params.values()), params
    return {key: values[0] for key, values in params.items()}


def approve(
    fake_github: FakeGitHub,
    started: dict[str, Any],
    *,
    github_user_id: int = OCTOCAT_ID,
    login: str = "octocat",
    client_id: str = STANDARD_APP.client_id,
) -> str:
    """The code GitHub sends back once the user approves the authorize URL of `started`."""
    params = query_of(started["authorizeUrl"])
    return fake_github.issue_code(
        client_id=client_id,
        github_user_id=github_user_id,
        login=login,
        code_challenge=params["code_challenge"],
        redirect_uri=params.get("redirect_uri"),
    )


async def test_connect_stores_an_active_token_for_the_github_account(
    gql: GraphQLClient, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure the whole flow ends with an ACTIVE token, a viewer status and an audit event."""
    started = await start(gql)

    assert started["__typename"] == "GithubConnectStart"
    assert started["expiresAt"] == (T0 + timedelta(minutes=10)).isoformat()
    url = urlsplit(started["authorizeUrl"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == (
        f"{fake_github.base_url}/login/oauth/authorize"
    )
    params = query_of(started["authorizeUrl"])
    assert params["client_id"] == STANDARD_APP.client_id
    assert params["redirect_uri"] == REDIRECT_URI
    assert params["state"] == started["state"]
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url of a SHA-256 digest, unpadded

    code = approve(fake_github, started)
    result = await complete(gql, code, started["state"])

    assert result == {
        "__typename": "CompleteGithubConnectSuccess",
        "token": {
            "state": "ACTIVE",
            "githubLogin": "octocat",
            "githubUserId": str(OCTOCAT_ID),
            "appType": "STANDARD",
            "userId": "alice",
        },
    }
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert (viewer["state"], viewer["githubLogin"], viewer["needsReconnect"]) == (
        "ACTIVE",
        "octocat",
        False,
    )
    # The fake answers expires_in=28800, counted from the server's clock.
    assert viewer["accessTokenExpiresAt"] == (T0 + timedelta(hours=8)).isoformat()
    events = (await gql.data(EVENTS, {"userId": "alice", "action": "TOKEN_STORED"}, auth=ADMIN))[
        "auditEvents"
    ]["edges"]
    assert len(events) == 1
    event = events[0]["node"]
    assert (event["actorRole"], event["actorId"], event["appType"]) == ("USER", "alice", "STANDARD")
    detail = json.loads(event["detail"])
    assert detail["source"] == "connect"
    assert detail["has_refresh_token"] is True
    assert fake_github.calls["exchange"] == 1


async def test_connect_for_the_lite_app_uses_the_lite_client_id(
    gql: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure a LITE connect authorizes the lite app and stores only a LITE token."""
    started = await start(gql, app_type="LITE", redirect_uri=None)

    params = query_of(started["authorizeUrl"])
    assert params["client_id"] == LITE_APP.client_id
    assert "redirect_uri" not in params
    code = approve(fake_github, started, client_id=LITE_APP.client_id)
    result = await complete(gql, code, started["state"])

    assert result["__typename"] == "CompleteGithubConnectSuccess"
    assert result["token"]["appType"] == "LITE"
    statuses = (await gql.data("{ viewer { githubTokens { appType state } } }", auth=ALICE))[
        "viewer"
    ]["githubTokens"]
    assert {s["appType"]: s["state"] for s in statuses} == {
        "STANDARD": "NOT_CONNECTED",
        "LITE": "ACTIVE",
    }


async def test_a_state_this_server_never_issued_is_invalid(
    gql: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure an unknown state is INVALID_STATE and never reaches GitHub."""
    code = fake_github.issue_code(
        client_id=STANDARD_APP.client_id, github_user_id=OCTOCAT_ID, login="octocat"
    )

    result = await complete(gql, code, "not-a-state-from-this-server")

    assert (result["__typename"], result["code"], result["field"]) == (
        "OperationError",
        "INVALID_STATE",
        "state",
    )
    assert fake_github.calls["exchange"] == 0
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert viewer["state"] == "NOT_CONNECTED"


async def test_a_replayed_state_is_already_used(
    gql: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure a state works once: its replay is STATE_ALREADY_USED without an exchange."""
    started = await start(gql)
    first = await complete(gql, approve(fake_github, started), started["state"])
    assert first["__typename"] == "CompleteGithubConnectSuccess"

    replay = await complete(gql, approve(fake_github, started), started["state"])

    assert (replay["__typename"], replay["code"]) == ("OperationError", "STATE_ALREADY_USED")
    assert fake_github.calls["exchange"] == 1


async def test_a_state_older_than_ten_minutes_is_expired(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a late callback is STATE_EXPIRED and its code is never exchanged."""
    started = await start(gql)
    code = approve(fake_github, started)
    clock.advance(timedelta(minutes=10))

    result = await complete(gql, code, started["state"])

    assert (result["__typename"], result["code"]) == ("OperationError", "STATE_EXPIRED")
    assert fake_github.calls["exchange"] == 0
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert viewer["state"] == "NOT_CONNECTED"


async def test_a_state_just_inside_ten_minutes_still_completes(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure the ten minutes are a full ten minutes."""
    started = await start(gql)
    clock.advance(timedelta(minutes=10) - timedelta(seconds=1))

    result = await complete(gql, approve(fake_github, started), started["state"])

    assert result["__typename"] == "CompleteGithubConnectSuccess"


async def test_another_user_cannot_complete_someone_elses_connect(
    gql: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure bob gets ACCOUNT_MISMATCH on alice's state, which alice can still use."""
    started = await start(gql, ALICE)
    code = approve(fake_github, started)

    stolen = await complete(gql, code, started["state"], auth=BOB)

    assert (stolen["__typename"], stolen["code"]) == ("OperationError", "ACCOUNT_MISMATCH")
    assert fake_github.calls["exchange"] == 0
    bob = (await gql.data(VIEWER_TOKEN, auth=BOB))["viewer"]["githubToken"]
    assert bob["state"] == "NOT_CONNECTED"
    mine = await complete(gql, code, started["state"], auth=ALICE)
    assert mine["__typename"] == "CompleteGithubConnectSuccess"
    assert mine["token"]["userId"] == "alice"


async def test_two_concurrent_completes_of_one_state_exchange_once(
    gql: GraphQLClient, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a double-submitted callback stores one token and exchanges one code."""
    started = await start(gql)
    code = approve(fake_github, started)

    results = await asyncio.gather(
        complete(gql, code, started["state"]), complete(gql, code, started["state"])
    )

    outcomes = sorted(result.get("code") or result["__typename"] for result in results)
    assert outcomes == ["CompleteGithubConnectSuccess", "STATE_ALREADY_USED"]
    assert fake_github.calls["exchange"] == 1
    rows = await database.fetch(
        "SELECT credential_version FROM user_github_app_tokens WHERE user_id = 'alice'"
    )
    assert [row["credential_version"] for row in rows] == [1]


async def test_a_code_github_never_issued_is_refused_and_uses_up_the_state(
    gql: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure a wrong code is INVALID_INPUT on code, and the state cannot be retried."""
    started = await start(gql)

    wrong = await complete(gql, "0123456789abcdef0123", started["state"])

    assert (wrong["__typename"], wrong["code"], wrong["field"]) == (
        "OperationError",
        "INVALID_INPUT",
        "code",
    )
    retry = await complete(gql, approve(fake_github, started), started["state"])
    assert retry["code"] == "STATE_ALREADY_USED"
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert viewer["state"] == "NOT_CONNECTED"


async def test_a_code_issued_for_another_pkce_challenge_is_refused(
    gql: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure the stored PKCE verifier is what proves the code: another challenge fails."""
    started = await start(gql)
    other = await start(gql)
    code_for_other = approve(fake_github, other)

    result = await complete(gql, code_for_other, started["state"])

    assert (result["__typename"], result["code"], result["field"]) == (
        "OperationError",
        "INVALID_INPUT",
        "code",
    )
    assert fake_github.calls["exchange"] == 1
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert viewer["state"] == "NOT_CONNECTED"


async def test_github_failing_during_the_exchange_is_unavailable(
    gql: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure a GitHub 502 is GITHUB_UNAVAILABLE and stores nothing."""
    started = await start(gql)
    code = approve(fake_github, started)
    fake_github.fail_with_status = 502

    result = await complete(gql, code, started["state"])

    assert (result["__typename"], result["code"]) == ("OperationError", "GITHUB_UNAVAILABLE")
    assert fake_github.calls["exchange"] == 1
    fake_github.fail_with_status = None
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert viewer["state"] == "NOT_CONNECTED"


async def test_a_github_account_connected_to_another_user_is_refused(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure connecting bob's GitHub account as alice fails and leaves bob's token alone."""
    stored = await gql.data(
        STORE, store_input("bob", now=clock(), github_user_id=str(OCTOCAT_ID)), auth=SERVICE
    )
    assert stored["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
    started = await start(gql, ALICE)

    result = await complete(gql, approve(fake_github, started), started["state"])

    assert (result["__typename"], result["code"]) == (
        "OperationError",
        "ALREADY_CONNECTED_TO_ANOTHER_USER",
    )
    alice = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert alice["state"] == "NOT_CONNECTED"
    bob = (await gql.data(VIEWER_TOKEN, auth=BOB))["viewer"]["githubToken"]
    assert (bob["state"], bob["githubLogin"]) == ("ACTIVE", "octocat")


async def test_only_users_may_start_a_connect(gql: GraphQLClient, database: Database) -> None:
    """Make sure ADMIN and SERVICE principals are FORBIDDEN and leave no state behind."""
    for auth in (ADMIN, SERVICE):
        body = await gql.post(
            START, {"appType": "STANDARD", "redirectUri": REDIRECT_URI}, auth=auth
        )

        assert body["data"] is None
        assert error_codes(body) == ["FORBIDDEN"]
    assert await database.fetch("SELECT state_hash FROM oauth_states") == []


async def test_a_redirect_uri_that_is_not_http_is_refused(
    gql: GraphQLClient, database: Database
) -> None:
    """Make sure script and relative redirect URIs are INVALID_INPUT on redirectUri."""
    for redirect_uri in (
        "javascript:alert(1)",
        "/relative/callback",
        "https://app.example/cb#fragment",
    ):
        result = await start(gql, redirect_uri=redirect_uri)

        assert (result["__typename"], result["code"], result["field"]) == (
            "OperationError",
            "INVALID_INPUT",
            "redirectUri",
        ), redirect_uri
    assert await database.fetch("SELECT state_hash FROM oauth_states") == []


@pytest.mark.parametrize("redirect_uri", ["http://[::1/cb", "https://app.example:99999/cb"])
async def test_an_unparseable_redirect_uri_is_invalid_input(
    gql: GraphQLClient, redirect_uri: str
) -> None:
    """URLs that urlsplit refuses are INVALID_INPUT on redirectUri, not an unexpected error."""
    body = await gql.post(
        "mutation($r: String) { startGithubConnect(redirectUri: $r) {"
        " ... on OperationError { code field } } }",
        {"r": redirect_uri},
        auth=bearer("alice", Role.USER),
    )
    assert body["data"]["startGithubConnect"] == {"code": "INVALID_INPUT", "field": "redirectUri"}


async def _states(database: Database) -> list[dict[str, Any]]:
    return await database.fetch(
        "SELECT user_id, code_verifier FROM oauth_states ORDER BY created_at"
    )


async def test_a_user_holds_at_most_five_states_and_a_new_one_replaces_the_oldest(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a sixth start replaces the user's oldest state (which then no longer
    completes), keeps the five newest usable, and leaves other users' states alone."""
    bobs = await start(gql, BOB)
    started = []
    for _ in range(MAX_STATES_PER_USER + 1):
        clock.advance(timedelta(seconds=1))
        started.append(await start(gql))

    rows = await _states(database)
    assert [row["user_id"] for row in rows].count("alice") == MAX_STATES_PER_USER
    assert [row["user_id"] for row in rows].count("bob") == 1
    oldest = await complete(gql, approve(fake_github, started[0]), started[0]["state"])
    assert (oldest["__typename"], oldest["code"]) == ("OperationError", "INVALID_STATE")
    newest = await complete(gql, approve(fake_github, started[-1]), started[-1]["state"])
    assert newest["__typename"] == "CompleteGithubConnectSuccess"
    bob = await complete(
        gql, approve(fake_github, bobs, github_user_id=1001, login="bob-gh"), bobs["state"], BOB
    )
    assert bob["__typename"] == "CompleteGithubConnectSuccess"


async def test_a_flood_of_aliased_starts_keeps_at_most_five_states(
    gql: GraphQLClient, database: Database
) -> None:
    """The attack: 24 requests of 25 aliased startGithubConnect with a 2 KB redirectUri
    kept 600 rows, each with its PKCE verifier; now the user holds five at most."""
    aliases = " ".join(
        f"s{index}: startGithubConnect(redirectUri: $r) {{ __typename }}" for index in range(25)
    )
    document = f"mutation($r: String) {{ {aliases} }}"
    redirect_uri = "https://app.example/cb?pad=" + "x" * 2000
    for _ in range(24):
        data = await gql.data(document, {"r": redirect_uri}, auth=ALICE)
        assert set(result["__typename"] for result in data.values()) == {"GithubConnectStart"}

    assert len(await _states(database)) == MAX_STATES_PER_USER


async def test_expired_states_are_deleted_with_their_verifiers(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure an expired state (used or not) leaves the table at the next start of anyone,
    and a late callback still says STATE_EXPIRED while taking its state with it."""
    used = await start(gql)
    assert (await complete(gql, approve(fake_github, used), used["state"]))["__typename"] == (
        "CompleteGithubConnectSuccess"
    )
    await start(gql)
    late = await start(gql, BOB)
    clock.advance(STATE_TTL)

    result = await complete(gql, approve(fake_github, late), late["state"], BOB)

    assert (result["__typename"], result["code"]) == ("OperationError", "STATE_EXPIRED")
    assert await _states(database) == []

    await start(gql)
    clock.advance(STATE_TTL)
    await start(gql, BOB)
    assert [row["user_id"] for row in await _states(database)] == ["bob"]


@pytest.mark.parametrize(("length", "accepted"), [(2048, True), (2049, False)])
async def test_a_redirect_uri_is_at_most_2048_characters(
    gql: GraphQLClient, database: Database, length: int, accepted: bool
) -> None:
    """The length limit on redirectUri, exactly at its edge."""
    prefix = "https://app.example/cb?pad="
    result = await start(gql, redirect_uri=prefix + "x" * (length - len(prefix)))

    assert (result["__typename"] == "GithubConnectStart") is accepted
    assert len(await _states(database)) == int(accepted)


async def _store_seeded(
    gql: GraphQLClient, fake_github: FakeGitHub, clock: MovableClock, github_user_id: int
) -> str:
    """Alice's live token of the given GitHub account, stored; returns its access token."""
    access, refresh = fake_github.seed_token(STANDARD_APP.client_id, github_user_id, "first-gh")
    variables = store_input(
        "alice",
        now=clock(),
        github_user_id=str(github_user_id),
        github_login="first-gh",
        access=access,
        refresh=refresh,
    )
    assert (await gql.data(STORE, variables, auth=SERVICE))["storeGithubToken"]["__typename"] == (
        "StoreGithubTokenSuccess"
    )
    return access


async def test_reconnecting_as_another_github_account_revokes_the_previous_grant(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """The previous account's grant, whose tokens ghvault no longer holds, would stay live
    at GitHub: it is revoked there, and the audit log says so."""
    previous = await _store_seeded(gql, fake_github, clock, 1001)
    started = await start(gql)

    result = await complete(gql, approve(fake_github, started), started["state"])

    assert result["token"]["githubUserId"] == str(OCTOCAT_ID)
    assert fake_github.calls["revoke_grant"] == 1
    assert not fake_github.is_access_token_valid(previous)
    viewer = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert (viewer["state"], viewer["githubLogin"]) == ("ACTIVE", "octocat")
    events = (await gql.data(EVENTS, {"action": "TOKEN_DISCONNECTED"}, auth=ADMIN))["auditEvents"]
    assert [json.loads(edge["node"]["detail"]) for edge in events["edges"]] == [
        {
            "github": "revoked",
            "revoked_at_github": True,
            "reason": "reconnected_as_another_github_account",
        }
    ]


async def test_a_failed_revocation_of_the_previous_grant_still_connects(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Best effort: GitHub failing on the old grant does not undo the new connection."""
    previous = await _store_seeded(gql, fake_github, clock, 1001)
    started = await start(gql)
    fake_github.fail_endpoints = {"revoke_grant": 503}

    result = await complete(gql, approve(fake_github, started), started["state"])

    assert result["__typename"] == "CompleteGithubConnectSuccess"
    assert fake_github.calls["revoke_grant"] == 1
    assert fake_github.is_access_token_valid(previous)
    events = (await gql.data(EVENTS, {"action": "TOKEN_DISCONNECTED"}, auth=ADMIN))["auditEvents"]
    assert [json.loads(edge["node"]["detail"])["github"] for edge in events["edges"]] == [
        "unavailable"
    ]


async def test_reconnecting_as_the_same_github_account_revokes_nothing(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """The same account's new tokens belong to the same authorization: nothing to revoke."""
    previous = await _store_seeded(gql, fake_github, clock, OCTOCAT_ID)
    started = await start(gql)

    result = await complete(gql, approve(fake_github, started), started["state"])

    assert result["__typename"] == "CompleteGithubConnectSuccess"
    assert fake_github.calls["revoke_grant"] == 0
    assert fake_github.is_access_token_valid(previous)
