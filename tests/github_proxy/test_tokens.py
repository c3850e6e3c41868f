"""The token behind a capability: checked out once a minute, never reused once it changed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from server.domain import checkout
from server.domain.checkout import CheckedOutToken
from server.domain.enums import AppType, CapabilityAccess
from server.github_proxy.capabilities import Capability
from server.github_proxy.tokens import REQUEST_ALLOWANCE, ProxyTokens
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    SERVICE,
    STORE,
    T0,
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


async def test_a_token_is_not_reused_once_its_window_is_too_short_for_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kept token's window must have REQUEST_ALLOWANCE left when a request starts with it."""
    checkouts: list[datetime] = []

    async def checkout_token(*args: Any, now: datetime, **kwargs: Any) -> CheckedOutToken:
        checkouts.append(now)
        return CheckedOutToken(
            access_token="ghu_" + "a" * 36,
            access_token_expires_at=T0 + timedelta(hours=1),
            github_user_id="583231",
            github_login="octocat",
            refreshed=False,
            usable_until=T0 + REQUEST_ALLOWANCE + timedelta(seconds=30),
            credential_version=1,
        )

    monkeypatch.setattr(checkout, "checkout_token", checkout_token)
    held = ProxyTokens()
    capability = Capability(
        id="c1",
        user_id="alice",
        app_type=AppType.STANDARD,
        github_user_id="583231",
        repositories=frozenset(),
        access=CapabilityAccess.READ,
        issued_by="commit-worker",
        expires_at=T0 + timedelta(hours=1),
        credential_version=1,
    )
    unused: Any = None

    for seconds in (0, 29, 30):
        await held.token_for(
            capability,
            now=T0 + timedelta(seconds=seconds),
            keyring=unused,
            github=unused,
            locks=unused,
        )

    assert checkouts == [T0, T0 + timedelta(seconds=30)]


async def test_a_token_github_refuses_is_reported_once_and_the_next_request_has_a_new_one(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a token that died unseen (GitHub expired it early) is checked at GitHub and
    refreshed before the worker hears GitHub's 401, and never sent again."""
    old = await store_live_token(gql, fake_github, clock())
    capability = await issue_capability(gql)
    assert await _get(gql, fake_github, capability) == old
    fake_github.expire_access_token(old)

    refused = await gql.http.get(RATE_LIMIT, headers={"Authorization": f"Bearer {capability}"})
    new = await _get(gql, fake_github, capability)

    assert refused.status == 401
    assert fake_github.calls["check_token"] == 1
    assert fake_github.calls["refresh"] == 1
    assert new != old
    assert fake_github.is_access_token_valid(new)
    reports = await database.fetch(
        "SELECT actor_id, detail FROM audit_events WHERE action = 'token_rejection_reported'"
    )
    assert [
        (report["actor_id"], json.loads(report["detail"])["outcome"]) for report in reports
    ] == [("commit-worker", "refreshed")]
