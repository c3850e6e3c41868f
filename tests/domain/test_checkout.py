"""checkoutGithubToken: the commit worker's token, refreshed exactly once per version."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.config import Settings
from server.http.app import create_app
from server.storage.tables import AuditEvent
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    GITHUB_TIMEOUT_SECONDS,
    REVOKE,
    SERVICE,
    STORE,
    VIEWER_TOKEN,
    Database,
    GraphQLClient,
    MovableClock,
    base_env,
    error_codes,
    github_env,
    refresh_token,
    store_input,
)

GITHUB_ID = "583231"

CHECKOUT = """
mutation Checkout($userId: ID!) {
  checkoutGithubToken(userId: $userId, appType: STANDARD) {
    __typename
    ... on CheckoutSuccess {
      accessToken accessTokenExpiresAt githubUserId githubLogin commitAuthor refreshed
    }
    ... on OperationError { code message }
  }
}
"""


async def store_live_token(
    gql: GraphQLClient,
    fake: FakeGitHub,
    now: datetime,
    *,
    expires_in: timedelta,
    refresh: str | None = None,
    user_id: str = "alice",
    github_id: str = GITHUB_ID,
) -> tuple[str, str]:
    """Tokens GitHub knows, stored with the given access-token lifetime."""
    access, live_refresh = fake.seed_token(STANDARD_APP.client_id, int(github_id), "octocat")
    variables = store_input(
        user_id, now=now, github_user_id=github_id, access=access, refresh=refresh or live_refresh
    )
    variables["input"]["accessTokenExpiresAt"] = (now + expires_in).isoformat()
    result = await gql.data(STORE, variables, auth=SERVICE)
    assert result["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
    return access, refresh or live_refresh


async def _checkout(gql: GraphQLClient, user_id: str = "alice") -> dict[str, Any]:
    return (await gql.data(CHECKOUT, {"userId": user_id}, auth=SERVICE))["checkoutGithubToken"]


async def client_waiting_for_github(
    aiohttp_client: Any,
    settings: Settings,
    clock: MovableClock,
    database: Database,
    seconds: float,
) -> GraphQLClient:
    """The app under test, its GitHub client waiting `seconds` for an answer."""
    patient = replace(settings, github_timeout_seconds=seconds)
    return GraphQLClient(
        await aiohttp_client(create_app(patient, clock=clock, engine=database.engine))
    )


async def token_row(database: Database) -> dict[str, Any]:
    rows = await database.fetch("SELECT * FROM user_github_app_tokens")
    assert len(rows) == 1
    return rows[0]


async def test_a_fresh_token_is_handed_out_without_refreshing(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a token with hours left comes back as stored, and its use is recorded."""
    access, _ = await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))

    result = await _checkout(gql)

    assert result == {
        "__typename": "CheckoutSuccess",
        "accessToken": access,
        "accessTokenExpiresAt": (clock() + timedelta(hours=8)).isoformat(),
        "githubUserId": GITHUB_ID,
        "githubLogin": "octocat",
        "commitAuthor": f"octocat <{GITHUB_ID}+octocat@users.noreply.github.com>",
        "refreshed": False,
    }
    assert fake_github.calls["refresh"] == 0
    assert (await token_row(database))["credential_version"] == 1
    status = (await gql.data("{ viewer { githubToken { lastUsedAt } } }", auth=ALICE))["viewer"]
    assert status["githubToken"]["lastUsedAt"] == clock().isoformat()


async def test_a_token_near_expiry_is_refreshed_first(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Within 5 minutes of expiry the token is refreshed at GitHub and the new one stored."""
    old_access, old_refresh = await store_live_token(
        gql, fake_github, clock(), expires_in=timedelta(minutes=4)
    )

    result = await _checkout(gql)

    assert result["refreshed"] is True
    assert result["accessToken"] != old_access
    assert fake_github.is_access_token_valid(result["accessToken"])
    assert not fake_github.is_refresh_token_valid(old_refresh)
    assert result["accessTokenExpiresAt"] == (clock() + timedelta(hours=8)).isoformat()
    row = await token_row(database)
    assert row["credential_version"] == 2
    again = await _checkout(gql)
    assert (again["accessToken"], again["refreshed"]) == (result["accessToken"], False)
    assert fake_github.calls["refresh"] == 1


async def test_concurrent_checkouts_refresh_once(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """50 concurrent checkouts of an expiring token: one refresh, one new token for all."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(minutes=1))

    results = await asyncio.gather(*(_checkout(gql) for _ in range(50)))

    assert fake_github.calls["refresh"] == 1
    tokens = {result["accessToken"] for result in results}
    assert len(tokens) == 1
    assert fake_github.is_access_token_valid(tokens.pop())
    assert sum(result["refreshed"] for result in results) == 1
    assert (await token_row(database))["credential_version"] == 2


async def test_bad_refresh_token_revokes_the_row(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """GitHub's HTTP-200 bad_refresh_token: REFRESH_FAILED, and the token is REVOKED."""
    await store_live_token(
        gql, fake_github, clock(), expires_in=timedelta(minutes=1), refresh=refresh_token()
    )

    result = await _checkout(gql)

    assert result["code"] == "REFRESH_FAILED"
    assert fake_github.calls["refresh"] == 1
    status = (await gql.data(VIEWER_TOKEN, auth=ALICE))["viewer"]["githubToken"]
    assert (status["state"], status["revocationReason"]) == ("REVOKED", "REFRESH_FAILED")
    row = await token_row(database)
    assert row["access_token_encrypted"] is None
    assert row["refresh_token_encrypted"] is None
    events = (
        await gql.data(
            "{ auditEvents(action: TOKEN_REFRESH_FAILED) { edges { node { detail } } } }",
            auth=ADMIN,
        )
    )["auditEvents"]["edges"]
    assert '"reason": "bad_refresh_token"' in events[0]["node"]["detail"]


@pytest.mark.parametrize("fault", ["http_502", "timeout", "oversized_answer"])
async def test_github_trouble_leaves_the_row_exactly_as_it_was(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    database: Database,
    fault: str,
) -> None:
    """5xx, a timeout or an answer too large to be GitHub's during refresh:
    GITHUB_UNAVAILABLE, row byte-for-byte unchanged."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(minutes=1))
    before = await token_row(database)
    if fault == "http_502":
        fake_github.fail_with_status = 502
    elif fault == "oversized_answer":
        fake_github.oversized_answer_bytes = 2 * 1024 * 1024
    else:
        fake_github.hang_seconds = GITHUB_TIMEOUT_SECONDS + 1

    result = await _checkout(gql)

    assert result["code"] == "GITHUB_UNAVAILABLE"
    assert await token_row(database) == before
    fake_github.reset_switches()
    recovered = await _checkout(gql)
    assert recovered["refreshed"] is True


async def test_checkouts_waiting_on_a_failing_refresh_share_its_one_attempt(
    aiohttp_client: Any,
    settings: Settings,
    clock: MovableClock,
    fake_github: FakeGitHub,
    database: Database,
) -> None:
    """Four checkouts of a token due for refresh while GitHub times out: one attempt reaches
    GitHub and all four share its GITHUB_UNAVAILABLE, instead of each waiter trying again in
    turn (four timeouts, each holding SQLite's write lock). A checkout after that tries again."""
    timeout = 5.0
    gql = await client_waiting_for_github(aiohttp_client, settings, clock, database, timeout)
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(minutes=1))
    fake_github.hang_seconds = timeout * 4

    async def first_attempt_under_way() -> None:
        async with asyncio.timeout(timeout * 4):
            while fake_github.calls["refresh"] == 0:  # noqa: ASYNC110 -- the fake only counts
                await asyncio.sleep(0.01)

    leader = asyncio.ensure_future(_checkout(gql))
    await first_attempt_under_way()
    waiters = asyncio.gather(*(_checkout(gql) for _ in range(3)))
    results = [await leader, *await waiters]

    assert [result["code"] for result in results] == ["GITHUB_UNAVAILABLE"] * 4
    assert fake_github.calls["refresh"] == 1
    failures = await AuditEvent.count().where(AuditEvent.action == "token_refresh_failed")
    assert failures == 1
    fake_github.hang_seconds = 0
    assert (await _checkout(gql))["refreshed"] is True
    assert fake_github.calls["refresh"] == 2


async def test_an_expired_refresh_token_fails_without_calling_github(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Past the refresh token's expiry: REFRESH_FAILED and no request to GitHub."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))
    clock.advance(timedelta(days=181))

    result = await _checkout(gql)

    assert result["code"] == "REFRESH_FAILED"
    assert fake_github.calls["refresh"] == 0


async def test_revoked_and_missing_tokens_are_not_handed_out(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """TOKEN_REVOKED after a revoke, NOT_CONNECTED for a user without tokens."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)

    assert (await _checkout(gql))["code"] == "TOKEN_REVOKED"
    assert (await _checkout(gql, "nobody"))["code"] == "NOT_CONNECTED"


@pytest.mark.parametrize("caller", [ALICE, ADMIN], ids=["user", "admin"])
async def test_only_a_service_may_check_out(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, caller: str
) -> None:
    """Plaintext tokens go to SERVICE principals only."""
    access, _ = await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))
    body = await gql.post(CHECKOUT, {"userId": "alice"}, auth=caller)
    assert error_codes(body) == ["FORBIDDEN"]
    assert access not in str(body)


async def test_revocation_wins_over_a_refresh_in_flight(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """A revoke racing a refresh never leaves an unrevoked row holding fresh tokens."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(minutes=1))
    fake_github.hang_seconds = GITHUB_TIMEOUT_SECONDS / 3

    async def revoke_once_the_refresh_is_at_github() -> dict[str, Any]:
        # Waits for the event, not a fixed time: on a busy machine the checkout may take
        # longer than any fixed delay to reach GitHub.
        async with asyncio.timeout(GITHUB_TIMEOUT_SECONDS * 20):
            while fake_github.calls["refresh"] == 0:  # noqa: ASYNC110 -- the fake only counts
                await asyncio.sleep(0.01)
        return await gql.data(REVOKE, {"input": {}}, auth=ALICE)

    checkout, revoke = await asyncio.gather(_checkout(gql), revoke_once_the_refresh_is_at_github())

    assert fake_github.calls["refresh"] == 1, "the refresh was in flight when revoke came"
    assert revoke["revokeToken"]["token"]["state"] == "REVOKED"
    assert checkout["__typename"] == "CheckoutSuccess" or checkout["code"] == "TOKEN_REVOKED"
    row = await token_row(database)
    assert row["revoked_at"] is not None
    assert (row["access_token_encrypted"], row["refresh_token_encrypted"]) == (None, None)
    assert (await _checkout(gql))["code"] == "TOKEN_REVOKED"


async def test_a_tampered_ciphertext_is_reported_and_audited(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """A damaged value gives TOKEN_UNREADABLE and an audit event; other users unaffected."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))
    bob_access, bob_refresh = fake_github.seed_token(STANDARD_APP.client_id, 4242, "bob-gh")
    bob = store_input(
        "bob", now=clock(), github_user_id="4242", github_login="bob-gh", access=bob_access
    )
    bob["input"]["refreshToken"] = bob_refresh
    await gql.data(STORE, bob, auth=SERVICE)
    value = (
        await database.fetch(
            "SELECT access_token_encrypted FROM user_github_app_tokens WHERE user_id = 'alice'"
        )
    )[0]["access_token_encrypted"]
    flipped = value[:-3] + ("A" if value[-3] != "A" else "B") + value[-2:]
    await database.fetch(
        f"UPDATE user_github_app_tokens SET access_token_encrypted = '{flipped}'"
        " WHERE user_id = 'alice'"
    )

    result = await _checkout(gql)

    assert result["code"] == "TOKEN_UNREADABLE"
    assert (await _checkout(gql, "bob"))["accessToken"] == bob_access
    events = (
        await gql.data(
            "{ auditEvents(action: TOKEN_DECRYPTION_FAILED) { edges { node { subjectUserId } } } }",
            auth=ADMIN,
        )
    )["auditEvents"]["edges"]
    assert [edge["node"]["subjectUserId"] for edge in events] == ["alice"]


# ---------------------------------------------------------------- two server processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@asynccontextmanager
async def server_process(env: dict[str, str], port: int) -> AsyncIterator[str]:
    """A real `ghvault serve`, until the block ends."""
    ghvault = Path(sys.executable).parent / "ghvault"
    process = await asyncio.create_subprocess_exec(
        str(ghvault),
        "serve",
        env={**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                try:
                    async with session.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("ghvault serve did not become ready")
        yield url
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_two_server_processes_refresh_once(
    database: Database, fake_github: FakeGitHub
) -> None:
    """Checkouts split across two processes sharing the database: still one refresh."""
    env = base_env(DATABASE_URL=database.url, **github_env(fake_github))
    now = datetime.now(UTC)
    access, live_refresh = fake_github.seed_token(STANDARD_APP.client_id, int(GITHUB_ID), "octocat")
    variables = store_input("alice", now=now, access=access, refresh=live_refresh)
    variables["input"]["accessTokenExpiresAt"] = (now + timedelta(minutes=2)).isoformat()
    query = {"query": CHECKOUT, "variables": {"userId": "alice"}}
    headers = {"Authorization": SERVICE}

    async with (
        server_process(env, _free_port()) as first,
        server_process(env, _free_port()) as second,
        aiohttp.ClientSession(headers=headers) as session,
    ):

        async def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
            async with session.post(f"{url}/graphql", json=body) as response:
                return await response.json()

        stored = await post(first, {"query": STORE, "variables": variables})
        assert stored["data"]["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
        bodies = await asyncio.gather(*(post((first, second)[i % 2], query) for i in range(50)))

    results = [body["data"]["checkoutGithubToken"] for body in bodies]
    assert fake_github.calls["refresh"] == 1
    assert {result["__typename"] for result in results} == {"CheckoutSuccess"}
    tokens = {result["accessToken"] for result in results}
    assert len(tokens) == 1
    assert tokens != {access}
    assert fake_github.is_access_token_valid(tokens.pop())
    assert (await token_row(database))["credential_version"] == 2


async def test_github_down_fails_only_what_needs_github(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """With GitHub hanging: fresh checkouts and status reads work; refreshes fail in time."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))
    await store_live_token(
        gql, fake_github, clock(), expires_in=timedelta(minutes=1), user_id="bob", github_id="77"
    )
    fake_github.hang_seconds = GITHUB_TIMEOUT_SECONDS * 10
    loop = asyncio.get_running_loop()

    fresh = await _checkout(gql)
    status = await gql.data(VIEWER_TOKEN, auth=ALICE)
    started = loop.time()
    expiring = await _checkout(gql, "bob")
    waited = loop.time() - started

    assert fresh["__typename"] == "CheckoutSuccess"
    assert status["viewer"]["githubToken"]["state"] == "ACTIVE"
    assert expiring["code"] == "GITHUB_UNAVAILABLE"
    # Bounded by the configured GitHub timeout, not by how long GitHub hangs.
    assert waited < GITHUB_TIMEOUT_SECONDS * 5
