"""The token behind a capability: checked out once a minute, never reused once it changed."""

from __future__ import annotations

from datetime import timedelta

from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    issue_capability,
    store_input,
    store_live_token,
)

RATE_LIMIT = "/github/api/rate_limit"


async def _get(gql: GraphQLClient, fake: FakeGitHub, capability: str) -> str:
    """One proxied GET; the token GitHub saw."""
    response = await gql.http.get(RATE_LIMIT, headers={"Authorization": f"Bearer {capability}"})
    assert response.status == 200
    return fake.repos.seen[-1].headers["Authorization"].partition(" ")[2]


async def _checkouts(database: Database) -> int:
    rows = await database.fetch(
        "SELECT COUNT(*) AS n FROM audit_events WHERE action = 'token_checked_out'"
    )
    return int(rows[0]["n"])


async def test_a_capability_checks_the_token_out_once_a_minute(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a worker's requests do not each write a checkout, and its use is still noted."""
    access = await store_live_token(gql, fake_github, clock())
    capability = await issue_capability(gql)

    seen = [await _get(gql, fake_github, capability) for _ in range(3)]
    assert await _checkouts(database) == 1
    clock.advance(timedelta(seconds=60))
    seen.append(await _get(gql, fake_github, capability))

    assert seen == [access] * 4
    assert await _checkouts(database) == 2


async def test_a_new_token_reaches_the_very_next_request(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a token stored or refreshed meanwhile replaces the one the proxy holds."""
    old = await store_live_token(gql, fake_github, clock())
    capability = await issue_capability(gql)
    assert await _get(gql, fake_github, capability) == old

    new, refresh = fake_github.seed_token(STANDARD_APP.client_id, 583231, "octocat")
    variables = store_input("alice", now=clock(), access=new, refresh=refresh)
    await gql.data(STORE, variables, auth=SERVICE)

    assert await _get(gql, fake_github, capability) == new


async def test_a_token_near_expiry_is_not_reused_but_refreshed(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Within a checkout's refresh margin (5 minutes) the held token is never handed on."""
    old = await store_live_token(
        gql, fake_github, clock(), expires_in=timedelta(minutes=5, seconds=20)
    )
    capability = await issue_capability(gql)
    assert await _get(gql, fake_github, capability) == old

    clock.advance(timedelta(seconds=30))
    new = await _get(gql, fake_github, capability)

    assert fake_github.calls["refresh"] == 1
    assert new != old
    assert fake_github.is_access_token_valid(new)
